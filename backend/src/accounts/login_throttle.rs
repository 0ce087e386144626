//! Slows password guessing on the console login: after `max_failures` failed logins within
//! `window` for one email, or from one client IP, further attempts are refused (429) until the
//! oldest failure leaves the window. Kept in memory per backend process: each backend throttles
//! what it sees, which bounds guessing to (backends × max_failures) per window.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::LoginThrottleConfig;

/// Above this many tracked keys, stale ones are dropped so memory stays bounded.
const PRUNE_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    pub fn new(config: &LoginThrottleConfig) -> Self {
        Self {
            max_failures: config.max_failures.max(1) as usize,
            window: config.window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long to wait if any of `keys` is over its budget, else `None`.
    pub fn check(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().expect("throttle lock");
        keys.iter()
            .filter_map(|key| {
                let list = failures.get_mut(*key)?;
                self.expire(list, now);
                (list.len() >= self.max_failures)
                    .then(|| (list[list.len() - self.max_failures] + self.window) - now)
            })
            .max()
    }

    pub fn record_failure(&self, keys: &[&str], now: Instant) {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() > PRUNE_ABOVE {
            failures.retain(|_, list| {
                self.expire(list, now);
                !list.is_empty()
            });
        }
        for key in keys {
            let list = failures.entry((*key).to_string()).or_default();
            self.expire(list, now);
            list.push_back(now);
            // Only the newest max_failures matter for the decision.
            while list.len() > self.max_failures {
                list.pop_front();
            }
        }
    }

    /// Forgets the failures of one key (an email, after its owner logged in).
    pub fn clear(&self, key: &str) {
        self.failures.lock().expect("throttle lock").remove(key);
    }

    fn expire(&self, list: &mut VecDeque<Instant>, now: Instant) {
        while list
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            list.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_failures_until_the_window_passes() {
        let throttle = LoginThrottle::new(&LoginThrottleConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(throttle.check(&["email:a", "ip:1"], t0), None);
            throttle.record_failure(&["email:a", "ip:1"], t0 + Duration::from_secs(i));
        }
        let wait = throttle
            .check(&["email:b", "ip:1"], t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(throttle.check(&["email:b", "ip:2"], t0).is_none());
        assert!(throttle
            .check(&["ip:1"], t0 + Duration::from_secs(61))
            .is_none());
        throttle.clear("email:a");
        assert!(throttle.check(&["email:a"], t0).is_none());
    }
}
