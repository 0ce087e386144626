//! `on_store_error: local`: while the shared store is unreachable, each of the N gateways admits
//! at most its share of what was left of a key's day, on counters of its own, and remembers what
//! it admitted so that the store can be told when it is back (SPEC §10).
//!
//! The bound: gateway i last saw the key's shared day count c_i (on its last request for the key,
//! or from the backend's usage at its last full key sync) and admits at most
//! floor((L − c_i) / N). If C is the true count when the store became unreachable (c_i ≤ C), the
//! gateways admit at most Σ floor((L − c_i) / N) ≤ (L − C) + Σ (C − c_i) / N: the overshoot is at
//! most the average, over the gateways, of the requests admitted elsewhere since each last saw
//! the key — zero when they all saw the latest count, and never more than L·(N − 1)/N.
//! The per-minute window gets per_minute / N per gateway (at least 1), counted from the outage's
//! start, so the minute that spans the start can see up to twice the limit.

use std::collections::HashMap;
use std::sync::Mutex;

use dashmap::DashMap;

use super::{utc_day, Decision, LimitState, MemoryStore, Quota};
use crate::keys::IdHashBuilder;

/// What one gateway may admit of a key's remaining day while the store is unreachable.
pub fn day_share(per_day: u32, seen: u32, gateways: u32) -> u32 {
    per_day.saturating_sub(seen) / gateways.max(1)
}

/// Its part of the per-minute limit: at least one request, so a key with a tiny limit is not shut
/// out entirely.
pub fn minute_share(per_minute: u32, gateways: u32) -> u32 {
    (per_minute / gateways.max(1)).max(1)
}

#[derive(Debug, Default)]
pub struct LocalShares {
    /// Requests admitted locally during the current outage, against each key's share.
    counters: MemoryStore,
    /// Each key's local quota, fixed at its first local decision of the outage.
    quotas: DashMap<Box<str>, Quota, IdHashBuilder>,
    /// The shared day count (day, count) this gateway last saw per key.
    seen: DashMap<Box<str>, (u32, u32), IdHashBuilder>,
    /// Admitted locally and not yet added to the store: (day, count) per key.
    pending: Mutex<HashMap<Box<str>, (u32, u32), IdHashBuilder>>,
}

impl LocalShares {
    pub fn new() -> LocalShares {
        LocalShares::default()
    }

    /// Remembers the shared count a decision of the store reported.
    pub fn observe(&self, key_id: &str, state: &LimitState, now_ms: i64) {
        let count = state.day_limit.saturating_sub(state.day_remaining);
        self.observe_count(key_id, utc_day(now_ms), count);
    }

    /// Raises the remembered count for `day` (a newer day replaces an older one).
    pub fn observe_count(&self, key_id: &str, day: u32, count: u32) {
        match self.seen.get_mut(key_id) {
            Some(mut seen) => {
                let (d, c) = *seen;
                if day > d || (day == d && count > c) {
                    *seen = (day, count);
                }
            }
            None => {
                self.seen.insert(key_id.into(), (day, count));
            }
        }
    }

    fn seen_today(&self, key_id: &str, now_ms: i64) -> u32 {
        let today = utc_day(now_ms);
        self.seen
            .get(key_id)
            .filter(|s| s.0 == today)
            .map_or(0, |s| s.1)
    }

    /// The local decision for one request. `gateways`: the live gateways this one knows of.
    pub fn decide(&self, key_id: &str, quota: Quota, gateways: u32, now_ms: i64) -> Decision {
        let local = *self.quotas.entry(key_id.into()).or_insert_with(|| Quota {
            per_minute: minute_share(quota.per_minute, gateways),
            per_day: day_share(quota.per_day, self.seen_today(key_id, now_ms), gateways),
        });
        let mut decision = self.counters.check_and_count_now(key_id, local, now_ms);
        // The headers speak of the key's real limits; what remains is this gateway's share.
        let state = match &mut decision {
            Decision::Allowed(s)
            | Decision::RateLimited { state: s, .. }
            | Decision::DailyLimitExceeded { state: s, .. } => s,
        };
        state.minute_limit = quota.per_minute;
        state.day_limit = quota.per_day;
        if decision.is_allowed() {
            let today = utc_day(now_ms);
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let entry = pending.entry(key_id.into()).or_insert((today, 0));
            if entry.0 != today {
                *entry = (today, 0);
            }
            entry.1 += 1;
        }
        decision
    }

    /// Takes back a locally admitted request (answered 502/503/504 by the gateway).
    pub fn refund(&self, key_id: &str, counted_at_ms: i64) {
        self.counters.refund_now(key_id, counted_at_ms);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = pending.get_mut(key_id) {
            if entry.0 == utc_day(counted_at_ms) {
                entry.1 = entry.1.saturating_sub(1);
            }
        }
    }

    /// Ends an outage: returns what was admitted locally and not taken yet, (key, day, count),
    /// and starts the next outage (if any) from fresh counters and fresh shares.
    pub fn end_outage(&self) -> Vec<(String, u32, u32)> {
        self.counters.clear();
        self.quotas.clear();
        self.take_pending()
    }

    /// What was admitted locally so far, (key, day, count); the shares stay as they are.
    pub fn take_pending(&self) -> Vec<(String, u32, u32)> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        pending
            .into_iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (d, n))| (k.into(), d, n))
            .collect()
    }

    /// Puts back local admissions that could not be handed over to the store.
    pub fn hand_back(&self, admitted: Vec<(String, u32, u32)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (key_id, day, count) in admitted {
            let entry = pending.entry(key_id.into()).or_insert((day, 0));
            if entry.0 == day {
                entry.1 += count;
            }
        }
    }

    /// Forgets the remembered counts of earlier days, to bound memory.
    pub fn sweep(&self, now_ms: i64) {
        let today = utc_day(now_ms);
        self.seen.retain(|_, (day, _)| *day >= today);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-24T01:00:00Z.
    const T0: i64 = 1_795_478_400_000 + 3_600_000;

    #[test]
    fn shares_divide_what_is_left_and_round_down() {
        assert_eq!(day_share(100, 40, 3), 20);
        assert_eq!(day_share(100, 41, 3), 19);
        assert_eq!(day_share(100, 100, 3), 0);
        assert_eq!(day_share(100, 250, 3), 0);
        assert_eq!(day_share(100, 0, 0), 100, "an unknown N counts as one");
        assert_eq!(minute_share(60, 3), 20);
        assert_eq!(minute_share(2, 3), 1);
    }

    #[test]
    fn three_gateways_with_a_fresh_view_never_exceed_the_cap() {
        let q = Quota {
            per_minute: 1000,
            per_day: 100,
        };
        let gateways: Vec<LocalShares> = (0..3).map(|_| LocalShares::new()).collect();
        // All three saw the count at 40 just before the store went away.
        for g in &gateways {
            g.observe_count("key_1", utc_day(T0), 40);
        }
        let admitted: usize = gateways
            .iter()
            .map(|g| {
                (0..100)
                    .filter(|i| g.decide("key_1", q, 3, T0 + i * 10).is_allowed())
                    .count()
            })
            .sum();
        assert_eq!(admitted, 60, "exactly what was left, split three ways");
    }

    #[test]
    fn a_stale_view_overshoots_by_at_most_its_staleness_over_n() {
        let q = Quota {
            per_minute: 1000,
            per_day: 100,
        };
        let gateways: Vec<LocalShares> = (0..3).map(|_| LocalShares::new()).collect();
        // True count 40; one gateway last saw 10 (30 requests stale), the others 40.
        gateways[0].observe_count("key_1", utc_day(T0), 10);
        gateways[1].observe_count("key_1", utc_day(T0), 40);
        gateways[2].observe_count("key_1", utc_day(T0), 40);
        let admitted: u32 = gateways
            .iter()
            .map(|g| {
                (0..100)
                    .filter(|i| g.decide("key_1", q, 3, T0 + i * 10).is_allowed())
                    .count() as u32
            })
            .sum();
        let overshoot = (40 + admitted).saturating_sub(100);
        assert_eq!(admitted, 30 + 20 + 20);
        assert!(overshoot <= 30 / 3, "overshoot {overshoot}");
    }

    #[test]
    fn local_admits_are_handed_over_once_and_refunds_take_back() {
        let q = Quota {
            per_minute: 1000,
            per_day: 10,
        };
        let g = LocalShares::new();
        g.observe_count("key_1", utc_day(T0), 4);
        let admitted = (0..10)
            .filter(|i| g.decide("key_1", q, 2, T0 + i).is_allowed())
            .count();
        assert_eq!(admitted, 3, "(10 - 4) / 2");
        g.refund("key_1", T0);
        assert!(
            g.decide("key_1", q, 2, T0 + 20).is_allowed(),
            "the refund freed one"
        );
        g.refund("key_1", T0 + 20);
        assert_eq!(g.end_outage(), vec![("key_1".to_owned(), utc_day(T0), 2)]);
        assert!(g.end_outage().is_empty());
        // A new outage starts from a new share.
        g.observe_count("key_1", utc_day(T0), 8);
        let again = (0..10)
            .filter(|i| g.decide("key_1", q, 2, T0 + 100 + i).is_allowed())
            .count();
        assert_eq!(again, 1);
    }
}
