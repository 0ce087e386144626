//! Slows password guessing on the console login without letting anyone turn it against a user.
//!
//! Three counters of failed logins, all within `window`, all keyed by the client IP the gateway
//! proved (`auth::gateway::Origin`; IPv6 grouped by /64, since one host usually holds a whole
//! /64):
//!
//! - **(email, IP)** blocks: after `max_failures` failures, further attempts for that email from
//!   that IP get `429 too_many_login_attempts` until the oldest failure leaves the window. Nobody
//!   else is affected: the same account logs in from any other IP, and other accounts log in from
//!   the same IP. A successful login clears the pair.
//! - **email** (across all IPs) and **IP** (across all emails) only slow down: once either has
//!   `email_slowdown_after` / `ip_slowdown_after` failures, its attempts are spaced
//!   `slowdown_interval` apart, each waiting at most `max_slowdown` and then going ahead. They are
//!   never refused on these counts, so failures sprayed from many IPs cannot lock the owner out of
//!   their account, and a NAT neighbour guessing other accounts cannot lock out the users behind
//!   the same address. The cost of guessing stays bounded by the pair budget per IP and by the
//!   process's Argon2 bound (`auth::password::Hasher`).
//!
//! Atomic check and record: [`LoginThrottle::reserve`] counts the attempt as a failure before the
//! password is checked, under the same lock as the check, so N parallel wrong passwords cannot
//! all pass it; only `max_failures` of them reach Argon2. The returned [`Reservation`] turns into
//! a cleared pair on success, stays a failure on failure, and is given back if the attempt ends
//! without an answer (server error, capacity refusal, client gone).
//!
//! Bounded memory: three LRU maps of fixed capacity (`capacity` entries each; an entry is a few
//! dozen bytes plus at most `max_failures` timestamps) keyed by a keyed 64-bit hash of the email
//! and IP, so a 254-byte email costs what a short one does, and no request scans the maps. When
//! full, the least recently touched entry is forgotten, which is one whose window has expired
//! unless more than `capacity` distinct keys failed within one window; the Argon2 bound makes
//! that take far longer than a window. We use the `lru` crate (already in the tree through
//! Pingora) rather than hand-written eviction; each map sits behind its own mutex held for O(1)
//! work per request, which is negligible next to the Argon2 work every attempt costs.
//!
//! Kept in memory per backend process: each backend throttles what it sees, which bounds guessing
//! to (backends × `max_failures`) per (email, IP) and window.

use std::{
    collections::VecDeque,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lru::LruCache;

use crate::config::LoginThrottleConfig;

pub struct LoginThrottle {
    config: LoginThrottleConfig,
    /// Keyed per process, so nobody can pick emails whose hashes collide with a victim's.
    hasher: RandomState,
    pairs: Mutex<LruCache<u64, VecDeque<Instant>>>,
    emails: Mutex<LruCache<u64, Slowdown>>,
    ips: Mutex<LruCache<u64, Slowdown>>,
}

/// Failures of one email or one IP in the current window, and when its next slowed attempt may
/// go.
#[derive(Clone, Copy)]
struct Slowdown {
    window_start: Instant,
    failures: u32,
    next_slot: Instant,
}

/// What an attempt may do.
pub enum Admission {
    /// Go ahead after `wait` (zero unless the email or IP is being slowed down).
    Go {
        reservation: Reservation,
        wait: Duration,
    },
    /// The (email, IP) pair is out of attempts for this long.
    Refused { retry_after: Duration },
}

impl LoginThrottle {
    pub fn new(config: &LoginThrottleConfig) -> Arc<Self> {
        let capacity = NonZeroUsize::new(config.capacity.max(1)).expect("at least 1");
        Arc::new(Self {
            config: LoginThrottleConfig {
                max_failures: config.max_failures.max(1),
                ..config.clone()
            },
            hasher: RandomState::new(),
            pairs: Mutex::new(LruCache::new(capacity)),
            emails: Mutex::new(LruCache::new(capacity)),
            ips: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// Checks the attempt of `email` (normalised) from `ip` and, if it may go, counts it as a
    /// failure until the returned reservation says otherwise.
    pub fn reserve(self: &Arc<Self>, email: &str, ip: Option<IpAddr>, now: Instant) -> Admission {
        let net = ip.map(network);
        let pair = self.hasher.hash_one((email, net));
        let budget = self.config.max_failures as usize;
        {
            let mut pairs = self.pairs.lock().expect("throttle lock");
            let attempts =
                pairs.get_or_insert_mut(pair, || VecDeque::with_capacity(budget.min(64)));
            expire(attempts, now, self.config.window);
            if attempts.len() >= budget {
                let oldest = attempts[attempts.len() - budget];
                return Admission::Refused {
                    retry_after: (oldest + self.config.window).saturating_duration_since(now),
                };
            }
            attempts.push_back(now);
        }
        let email_key = self.hasher.hash_one(email);
        let ip_key = self.hasher.hash_one(net);
        let wait = self
            .slot(
                &self.emails,
                email_key,
                self.config.email_slowdown_after,
                now,
            )
            .max(self.slot(&self.ips, ip_key, self.config.ip_slowdown_after, now));
        Admission::Go {
            reservation: Reservation {
                throttle: self.clone(),
                pair,
                email: email_key,
                ip: ip_key,
                at: now,
                settled: false,
            },
            wait,
        }
    }

    /// How long an attempt counted under `key` waits: zero while `key` has fewer than
    /// `threshold` failures, else its turn, `slowdown_interval` after the previous one's.
    fn slot(
        &self,
        map: &Mutex<LruCache<u64, Slowdown>>,
        key: u64,
        threshold: u32,
        now: Instant,
    ) -> Duration {
        let mut map = map.lock().expect("throttle lock");
        let Some(entry) = map.get_mut(&key) else {
            return Duration::ZERO;
        };
        self.roll(entry, now);
        if entry.failures < threshold {
            return Duration::ZERO;
        }
        let wait = entry
            .next_slot
            .saturating_duration_since(now)
            .min(self.config.max_slowdown);
        entry.next_slot = now + wait + self.config.slowdown_interval;
        wait
    }

    fn record_slowdown_failure(
        &self,
        map: &Mutex<LruCache<u64, Slowdown>>,
        key: u64,
        now: Instant,
    ) {
        let mut map = map.lock().expect("throttle lock");
        let entry = map.get_or_insert_mut(key, || Slowdown {
            window_start: now,
            failures: 0,
            next_slot: now,
        });
        self.roll(entry, now);
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Starts a new window once the current one is over.
    fn roll(&self, entry: &mut Slowdown, now: Instant) {
        if now.saturating_duration_since(entry.window_start) >= self.config.window {
            entry.window_start = now;
            entry.failures = 0;
        }
    }

    /// Entries held now, per map (pairs, emails, IPs): for tests of the bound.
    pub fn entries(&self) -> (usize, usize, usize) {
        (
            self.pairs.lock().expect("throttle lock").len(),
            self.emails.lock().expect("throttle lock").len(),
            self.ips.lock().expect("throttle lock").len(),
        )
    }
}

/// The unit one client controls: an IPv4 address, or an IPv6 /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

fn expire(attempts: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while attempts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        attempts.pop_front();
    }
}

/// One attempt, counted as a failure of its (email, IP) pair until settled. Dropped unsettled
/// (the attempt ended without an answer on the password), it is given back.
pub struct Reservation {
    throttle: Arc<LoginThrottle>,
    pair: u64,
    email: u64,
    ip: u64,
    at: Instant,
    settled: bool,
}

impl Reservation {
    /// The password was right: the pair starts afresh.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle
            .pairs
            .lock()
            .expect("throttle lock")
            .pop(&self.pair);
    }

    /// The password was wrong: the attempt stays counted for the pair, and counts towards the
    /// email's and the IP's slowdown.
    pub fn failed(mut self) {
        self.settled = true;
        let throttle = &self.throttle;
        throttle.record_slowdown_failure(&throttle.emails, self.email, self.at);
        throttle.record_slowdown_failure(&throttle.ips, self.ip, self.at);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut pairs = self.throttle.pairs.lock().expect("throttle lock");
        if let Some(attempts) = pairs.peek_mut(&self.pair) {
            if let Some(i) = attempts.iter().rposition(|t| *t == self.at) {
                attempts.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_failures: u32) -> LoginThrottleConfig {
        LoginThrottleConfig {
            max_failures,
            window: Duration::from_secs(60),
            email_slowdown_after: 4,
            ip_slowdown_after: 6,
            slowdown_interval: Duration::from_secs(1),
            max_slowdown: Duration::from_secs(3),
            capacity: 1000,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn go(admission: Admission) -> (Reservation, Duration) {
        match admission {
            Admission::Go { reservation, wait } => (reservation, wait),
            Admission::Refused { retry_after } => panic!("refused for {retry_after:?}"),
        }
    }

    fn refused(admission: Admission) -> Duration {
        match admission {
            Admission::Go { .. } => panic!("admitted"),
            Admission::Refused { retry_after } => retry_after,
        }
    }

    #[test]
    fn a_pair_is_refused_after_its_budget_until_the_window_passes() {
        let throttle = LoginThrottle::new(&config(3));
        let t0 = Instant::now();
        for i in 0..3 {
            let (r, _) = go(throttle.reserve("a@x", ip("192.0.2.1"), t0 + Duration::from_secs(i)));
            r.failed();
        }
        let wait = refused(throttle.reserve("a@x", ip("192.0.2.1"), t0 + Duration::from_secs(10)));
        assert_eq!(wait, Duration::from_secs(50));
        // The window moves: one slot frees up when the first failure is 60 s old.
        go(throttle.reserve("a@x", ip("192.0.2.1"), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn pairs_are_independent() {
        let throttle = LoginThrottle::new(&config(2));
        let t0 = Instant::now();
        for _ in 0..2 {
            go(throttle.reserve("a@x", ip("192.0.2.1"), t0)).0.failed();
        }
        refused(throttle.reserve("a@x", ip("192.0.2.1"), t0));
        // The same account from another IP, and another account from the same IP.
        go(throttle.reserve("a@x", ip("192.0.2.2"), t0))
            .0
            .succeeded();
        go(throttle.reserve("b@x", ip("192.0.2.1"), t0))
            .0
            .succeeded();
        // A /64 is one client; the next /64 is another.
        for _ in 0..2 {
            go(throttle.reserve("a@x", ip("2001:db8:1:1::1"), t0))
                .0
                .failed();
        }
        refused(throttle.reserve("a@x", ip("2001:db8:1:1::ffff"), t0));
        go(throttle.reserve("a@x", ip("2001:db8:1:2::1"), t0));
        // IPv4-mapped IPv6 is the IPv4 address.
        refused(throttle.reserve("a@x", ip("::ffff:192.0.2.1"), t0));
    }

    #[test]
    fn reservations_are_taken_before_the_answer_and_given_back_unsettled() {
        let throttle = LoginThrottle::new(&config(3));
        let t0 = Instant::now();
        // Three in flight at once fill the budget; a fourth is refused before any answer.
        let held: Vec<_> = (0..3)
            .map(|_| go(throttle.reserve("a@x", ip("192.0.2.1"), t0)).0)
            .collect();
        refused(throttle.reserve("a@x", ip("192.0.2.1"), t0));
        // One ends without an answer (dropped): its slot comes back.
        let mut held = held.into_iter();
        drop(held.next());
        let (again, _) = go(throttle.reserve("a@x", ip("192.0.2.1"), t0));
        // A success clears the pair, in-flight reservations included.
        again.succeeded();
        for r in held {
            r.failed();
        }
        for _ in 0..3 {
            go(throttle.reserve("a@x", ip("192.0.2.1"), t0)).0.failed();
        }
        refused(throttle.reserve("a@x", ip("192.0.2.1"), t0));
    }

    #[test]
    fn email_and_ip_counts_slow_down_but_never_refuse() {
        let throttle = LoginThrottle::new(&config(5));
        let t0 = Instant::now();
        // Four failures for a@x from four IPs: the email is now slowed.
        for i in 0..4 {
            let (r, wait) = go(throttle.reserve("a@x", ip(&format!("192.0.2.{i}")), t0));
            assert_eq!(wait, Duration::ZERO);
            r.failed();
        }
        let waits: Vec<Duration> = (10..16)
            .map(|i| go(throttle.reserve("a@x", ip(&format!("192.0.2.{i}")), t0)).1)
            .collect();
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        // Spaced one second apart, capped at three seconds, never refused.
        assert_eq!(secs, vec![0, 1, 2, 3, 3, 3]);
        // Another email is not slowed by a@x's failures.
        assert_eq!(
            go(throttle.reserve("b@x", ip("198.51.100.1"), t0)).1,
            Duration::ZERO
        );
        // Six failures from one IP over many emails slow that IP, for every email.
        let t1 = t0 + Duration::from_secs(120);
        for i in 0..6 {
            go(throttle.reserve(&format!("u{i}@x"), ip("203.0.113.7"), t1))
                .0
                .failed();
        }
        assert_eq!(
            go(throttle.reserve("c@x", ip("203.0.113.7"), t1)).1,
            Duration::ZERO
        );
        assert_eq!(
            go(throttle.reserve("d@x", ip("203.0.113.7"), t1)).1,
            Duration::from_secs(1)
        );
        assert_eq!(
            go(throttle.reserve("d@x", ip("203.0.113.8"), t1)).1,
            Duration::ZERO
        );
    }

    #[test]
    fn memory_is_bounded_by_capacity_and_the_oldest_entries_go_first() {
        let throttle = LoginThrottle::new(&LoginThrottleConfig {
            capacity: 100,
            ..config(2)
        });
        let t0 = Instant::now();
        // A victim pair reaches its budget, then 10,000 made-up emails from many IPs fail.
        for _ in 0..2 {
            go(throttle.reserve("victim@x", ip("192.0.2.1"), t0))
                .0
                .failed();
        }
        let long_email = "x".repeat(250);
        for i in 0..10_000u32 {
            let email = format!("{long_email}{i}");
            let from = IpAddr::from(i.to_be_bytes());
            go(throttle.reserve(&email, Some(from), t0)).0.failed();
        }
        assert_eq!(throttle.entries(), (100, 100, 100));
        // The victim's pair was the least recently touched: forgotten.
        go(throttle.reserve("victim@x", ip("192.0.2.1"), t0));
        // The newest ones are still counted.
        let last = format!("{long_email}9999");
        go(throttle.reserve(&last, Some(IpAddr::from(9999u32.to_be_bytes())), t0))
            .0
            .failed();
        refused(throttle.reserve(&last, Some(IpAddr::from(9999u32.to_be_bytes())), t0));
    }
}
