//! The in-process limit store: exact counters, one small mutex per key.
//!
//! The minute limit is an exact rolling window at 1-second resolution: 60 one-second buckets, so
//! "at most N accepted in any 60 seconds" holds to the second. The mutex makes check-then-count
//! atomic per key, so concurrent requests for one key can never over-admit, while different keys
//! never contend (they sit in different `DashMap` shards and different mutexes).

use std::sync::Mutex;

use async_trait::async_trait;
use dashmap::DashMap;

use crate::keys::IdHashBuilder;

use super::{
    secs_until_utc_midnight, utc_day, Decision, LimitState, LimitStore, Quota, StoreError,
    WINDOW_SECS,
};

const BUCKETS: usize = WINDOW_SECS as usize;

#[derive(Debug)]
struct Counters {
    /// Accepted requests per second; bucket `s % 60` holds second `s` for the last 60 seconds.
    buckets: [u32; BUCKETS],
    /// The latest second the buckets have been advanced to.
    last_sec: u64,
    window_total: u32,
    day: u32,
    day_count: u32,
}

impl Counters {
    fn new(now_sec: u64, day: u32) -> Counters {
        Counters {
            buckets: [0; BUCKETS],
            last_sec: now_sec,
            window_total: 0,
            day,
            day_count: 0,
        }
    }

    /// Drops the seconds that left the window and rolls the day over at UTC midnight.
    fn advance(&mut self, now_sec: u64, today: u32) {
        // A clock that stepped backwards keeps counting into the latest second seen, which errs
        // on the side of refusing rather than over-admitting.
        if now_sec > self.last_sec {
            let gap = now_sec - self.last_sec;
            if gap >= WINDOW_SECS {
                self.buckets = [0; BUCKETS];
                self.window_total = 0;
            } else {
                for s in self.last_sec + 1..=now_sec {
                    let b = &mut self.buckets[(s % WINDOW_SECS) as usize];
                    self.window_total -= *b;
                    *b = 0;
                }
            }
            self.last_sec = now_sec;
        }
        if today > self.day {
            self.day = today;
            self.day_count = 0;
        }
    }

    /// Seconds until enough of the oldest requests leave the window for `excess` more to fit.
    fn secs_until_freed(&self, excess: u32) -> u64 {
        if excess == 0 {
            return 0;
        }
        // Walk the ring from the oldest second in the window; the index wraps by hand because
        // this runs on every request and a modulo per step adds up over 60 buckets.
        let span = WINDOW_SECS.min(self.last_sec + 1);
        let oldest = self.last_sec + 1 - span;
        let mut idx = (oldest % WINDOW_SECS) as usize;
        let mut freed = 0u32;
        for age in 0..span {
            freed += self.buckets[idx];
            if freed >= excess {
                return oldest + age + WINDOW_SECS - self.last_sec;
            }
            idx += 1;
            if idx == BUCKETS {
                idx = 0;
            }
        }
        WINDOW_SECS
    }

    fn state(&self, quota: Quota, now_ms: i64) -> LimitState {
        let reset = if self.window_total == 0 {
            0
        } else {
            self.secs_until_freed(1)
        };
        LimitState {
            minute_limit: quota.per_minute,
            minute_remaining: quota.per_minute.saturating_sub(self.window_total),
            minute_reset_secs: reset,
            day_limit: quota.per_day,
            day_remaining: quota.per_day.saturating_sub(self.day_count),
            day_reset_secs: secs_until_utc_midnight(now_ms),
        }
    }

    fn check_and_count(&mut self, quota: Quota, now_ms: i64) -> Decision {
        if self.window_total >= quota.per_minute {
            let excess = self.window_total + 1 - quota.per_minute;
            let retry_after_secs = self.secs_until_freed(excess).max(1);
            return Decision::RateLimited {
                state: self.state(quota, now_ms),
                retry_after_secs,
            };
        }
        if self.day_count >= quota.per_day {
            return Decision::DailyLimitExceeded {
                state: self.state(quota, now_ms),
                retry_after_secs: secs_until_utc_midnight(now_ms),
            };
        }
        self.buckets[(self.last_sec % WINDOW_SECS) as usize] += 1;
        self.window_total += 1;
        self.day_count += 1;
        Decision::Allowed(self.state(quota, now_ms))
    }
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: DashMap<Box<str>, Mutex<Counters>, IdHashBuilder>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Runs `f` on the key's counters, advanced to `now_ms`, under the key's lock.
    fn with_counters<R>(&self, key_id: &str, now_ms: i64, f: impl FnOnce(&mut Counters) -> R) -> R {
        let now_sec = now_ms.max(0) as u64 / 1000;
        let today = utc_day(now_ms);
        let run = |m: &Mutex<Counters>| {
            // A panic while holding the lock cannot leave the counters half-updated in a way
            // that matters more than refusing to serve, so a poisoned lock is simply reused.
            let mut c = m.lock().unwrap_or_else(|p| p.into_inner());
            c.advance(now_sec, today);
            f(&mut c)
        };
        if let Some(entry) = self.entries.get(key_id) {
            return run(entry.value());
        }
        let entry = self
            .entries
            .entry(key_id.into())
            .or_insert_with(|| Mutex::new(Counters::new(now_sec, today)))
            .downgrade();
        run(entry.value())
    }

    /// The synchronous core of `check_and_count`, for callers that are not async.
    pub fn check_and_count_now(&self, key_id: &str, quota: Quota, now_ms: i64) -> Decision {
        self.with_counters(key_id, now_ms, |c| c.check_and_count(quota, now_ms))
    }

    /// Takes back one request counted at `counted_at_ms`, if its second is still in the window
    /// and its day is still today (never below zero).
    pub fn refund_now(&self, key_id: &str, counted_at_ms: i64) {
        let Some(entry) = self.entries.get(key_id) else {
            return;
        };
        let mut c = entry.lock().unwrap_or_else(|p| p.into_inner());
        let sec = counted_at_ms.max(0) as u64 / 1000;
        if sec + WINDOW_SECS > c.last_sec && sec <= c.last_sec {
            let b = &mut c.buckets[(sec % WINDOW_SECS) as usize];
            if *b > 0 {
                *b -= 1;
                c.window_total -= 1;
            }
        }
        if c.day == utc_day(counted_at_ms) {
            c.day_count = c.day_count.saturating_sub(1);
        }
    }

    /// Forgets every counter (a fresh start of local counting).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Forgets keys with nothing in their window and no usage today, to bound memory.
    pub fn sweep_idle(&self, now_ms: i64) {
        let now_sec = now_ms.max(0) as u64 / 1000;
        let today = utc_day(now_ms);
        self.entries.retain(|_, m| {
            let c = m.get_mut().unwrap_or_else(|p| p.into_inner());
            c.advance(now_sec, today);
            c.window_total > 0 || c.day_count > 0
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[async_trait]
impl LimitStore for MemoryStore {
    fn check_and_count_sync(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.check_and_count_now(key_id, quota, now_ms)))
    }

    async fn check_and_count(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        Ok(self.check_and_count_now(key_id, quota, now_ms))
    }

    async fn peek(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Result<LimitState, StoreError> {
        if !self.entries.contains_key(key_id) {
            return Ok(Counters::new(0, 0).state(quota, now_ms));
        }
        Ok(self.with_counters(key_id, now_ms, |c| c.state(quota, now_ms)))
    }

    async fn seed_daily(
        &self,
        key_id: &str,
        day: u32,
        count: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // Only today's usage matters, and idle keys do not need an entry.
        if count == 0 || day != utc_day(now_ms) {
            return Ok(());
        }
        self.with_counters(key_id, now_ms, |c| {
            if c.day == day {
                c.day_count = c.day_count.max(count);
            }
        });
        Ok(())
    }

    async fn refund(&self, key_id: &str, counted_at_ms: i64) -> Result<(), StoreError> {
        self.refund_now(key_id, counted_at_ms);
        Ok(())
    }

    fn sweep(&self, now_ms: i64) {
        self.sweep_idle(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{decide, DAY_SECS};
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    /// The memory store never awaits, so its futures finish on the first poll.
    fn now<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("memory store future was pending"),
        }
    }

    const Q: Quota = Quota {
        per_minute: 5,
        per_day: 1000,
    };
    // 2026-11-24T00:00:00Z plus some hours, so minute boundaries are easy to read.
    const T0: i64 = 1_795_478_400_000 + 3_600_000;

    fn allowed(store: &MemoryStore, quota: Quota, t_ms: i64) -> bool {
        now(decide(store, "key_1", quota, t_ms))
            .unwrap()
            .is_allowed()
    }

    #[test]
    fn a_refund_takes_back_one_request_of_the_window_and_the_day() {
        let s = MemoryStore::new();
        let q = Quota {
            per_minute: 2,
            per_day: 3,
        };
        assert!(allowed(&s, q, T0));
        assert!(allowed(&s, q, T0 + 1_000));
        assert!(!allowed(&s, q, T0 + 2_000));
        s.refund_now("key_1", T0 + 1_000);
        assert!(
            allowed(&s, q, T0 + 2_000),
            "the refunded request frees its slot"
        );
        // A second out of the window: only the day gives one back.
        s.refund_now("key_1", T0 - 120_000);
        assert!(
            !allowed(&s, q, T0 + 3_000),
            "the minute window is still full"
        );
        assert!(allowed(&s, q, T0 + 70_000));
        assert!(allowed(&s, q, T0 + 70_000));
        assert!(!allowed(&s, q, T0 + 71_000), "3 a day");
        // Never below zero.
        for _ in 0..10 {
            s.refund_now("key_1", T0 + 70_000);
        }
        assert_eq!(
            now(s.peek("key_1", q, T0 + 71_000)).unwrap().day_remaining,
            3
        );
    }

    #[test]
    fn rolling_window_across_a_minute_boundary() {
        let s = MemoryStore::new();
        // 3 requests at :50, 2 at :59 — the window is full.
        for _ in 0..3 {
            assert!(allowed(&s, Q, T0 + 50_000));
        }
        for _ in 0..2 {
            assert!(allowed(&s, Q, T0 + 59_000));
        }
        assert!(!allowed(&s, Q, T0 + 59_500));
        // Crossing the minute boundary does not reset a rolling window.
        match now(decide(&s, "key_1", Q, T0 + 61_000)).unwrap() {
            Decision::RateLimited {
                retry_after_secs,
                state,
            } => {
                // The requests at :50 leave the window at 1:50, i.e. 49 s after 1:01.
                assert_eq!(retry_after_secs, 49);
                assert_eq!(state.minute_remaining, 0);
            }
            d => panic!("expected rate limited, got {d:?}"),
        }
        assert!(!allowed(&s, Q, T0 + 109_999));
        // At 1:50 the three from :50 have left: exactly three more fit.
        for _ in 0..3 {
            assert!(allowed(&s, Q, T0 + 110_000));
        }
        assert!(!allowed(&s, Q, T0 + 110_000));
        // At 1:59 the two from :59 leave too.
        assert!(allowed(&s, Q, T0 + 119_000));
        assert!(allowed(&s, Q, T0 + 119_000));
        assert!(!allowed(&s, Q, T0 + 119_000));
    }

    #[test]
    fn steady_client_under_the_limit_is_never_refused() {
        let s = MemoryStore::new();
        let q = Quota {
            per_minute: 60,
            per_day: 100_000,
        };
        for i in 0..3600 {
            assert!(allowed(&s, q, T0 + i * 1000), "refused at second {i}");
        }
    }

    #[test]
    fn refused_requests_do_not_count() {
        let s = MemoryStore::new();
        let q = Quota {
            per_minute: 2,
            per_day: 3,
        };
        assert!(allowed(&s, q, T0));
        assert!(allowed(&s, q, T0));
        for _ in 0..100 {
            assert!(!allowed(&s, q, T0 + 1000));
        }
        // After the window the two slots come back; the 100 refusals did not eat the day.
        assert!(allowed(&s, q, T0 + 60_000));
        match now(decide(&s, "key_1", q, T0 + 60_000)).unwrap() {
            Decision::DailyLimitExceeded { state, .. } => assert_eq!(state.day_remaining, 0),
            d => panic!("expected daily limit, got {d:?}"),
        }
    }

    #[test]
    fn daily_counter_resets_at_utc_midnight() {
        let s = MemoryStore::new();
        let q = Quota {
            per_minute: 1000,
            per_day: 2,
        };
        let midnight = T0 - 3_600_000 + DAY_SECS as i64 * 1000;
        assert!(allowed(&s, q, midnight - 5_000));
        assert!(allowed(&s, q, midnight - 4_000));
        match now(decide(&s, "key_1", q, midnight - 1_000)).unwrap() {
            Decision::DailyLimitExceeded {
                retry_after_secs, ..
            } => assert_eq!(retry_after_secs, 1),
            d => panic!("expected daily limit, got {d:?}"),
        }
        assert!(allowed(&s, q, midnight));
        assert!(allowed(&s, q, midnight + 1));
        assert!(!allowed(&s, q, midnight + 2));
    }

    #[test]
    fn seeding_takes_the_max_and_ignores_other_days() {
        let s = MemoryStore::new();
        let q = Quota {
            per_minute: 1000,
            per_day: 10,
        };
        let today = utc_day(T0);
        assert!(allowed(&s, q, T0));
        assert!(allowed(&s, q, T0));
        now(s.seed_daily("key_1", today, 1, T0)).unwrap();
        assert_eq!(now(s.peek("key_1", q, T0)).unwrap().day_remaining, 8);
        now(s.seed_daily("key_1", today, 7, T0)).unwrap();
        assert_eq!(now(s.peek("key_1", q, T0)).unwrap().day_remaining, 3);
        now(s.seed_daily("key_1", today - 1, 10, T0)).unwrap();
        assert_eq!(now(s.peek("key_1", q, T0)).unwrap().day_remaining, 3);
        now(s.seed_daily("key_2", today, 10, T0)).unwrap();
        assert!(!now(decide(&s, "key_2", q, T0)).unwrap().is_allowed());
    }

    #[test]
    fn headers_state_is_consistent() {
        let s = MemoryStore::new();
        let q = Quota {
            per_minute: 60,
            per_day: 1000,
        };
        let fresh = now(s.peek("key_1", q, T0)).unwrap();
        assert_eq!(fresh.minute_remaining, 60);
        assert_eq!(fresh.minute_reset_secs, 0);
        let d = now(decide(&s, "key_1", q, T0 + 10_000)).unwrap();
        assert_eq!(d.state().minute_remaining, 59);
        assert_eq!(d.state().minute_reset_secs, 60);
        assert_eq!(d.state().day_remaining, 999);
        let later = now(s.peek("key_1", q, T0 + 40_000)).unwrap();
        assert_eq!(later.minute_reset_secs, 30);
        s.sweep_idle(T0 + 200_000);
        assert_eq!(s.len(), 1, "today's usage keeps the entry");
        s.sweep_idle(T0 + DAY_SECS as i64 * 1000);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn concurrent_requests_never_over_admit() {
        let s = Arc::new(MemoryStore::new());
        let q = Quota {
            per_minute: 1000,
            per_day: 1500,
        };
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut admitted = 0u32;
                    for i in 0..2000 {
                        // All within one window.
                        if allowed(&s, q, T0 + (i % 50) * 1000) {
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let total: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
