//! Slowing down credential guessing: failed authentications per client IP.
//!
//! This is an estimate, not a quota, so `pingora_limits::rate::Rate` (a count-min sketch over two
//! alternating windows) fits: memory stays fixed however many IPs try, and an occasional
//! over-estimate only slows an attacker-looking client a little sooner.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_limits::rate::Rate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// More than this many failures within the window blocks the IP.
    pub max_failures: u32,
    pub window: Duration,
}

struct Inner {
    settings: ThrottleSettings,
    failures: Arc<Rate>,
}

pub struct AuthThrottle {
    inner: ArcSwap<Inner>,
}

impl AuthThrottle {
    pub fn new(settings: ThrottleSettings) -> AuthThrottle {
        AuthThrottle {
            inner: ArcSwap::from_pointee(Inner {
                settings,
                failures: Arc::new(Rate::new(settings.window)),
            }),
        }
    }

    /// Applies reloaded settings; counts survive unless the window length changed.
    pub fn reconfigure(&self, settings: ThrottleSettings) {
        let current = self.inner.load();
        if current.settings == settings {
            return;
        }
        let failures = if current.settings.window == settings.window {
            current.failures.clone()
        } else {
            Arc::new(Rate::new(settings.window))
        };
        self.inner.store(Arc::new(Inner { settings, failures }));
    }

    /// Whether this IP already failed too often and must be refused before its credentials are
    /// even looked at. Estimated over a sliding window: the previous window's failures weighted by
    /// how much of it still overlaps, plus the current window's.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let inner = self.inner.load();
        let max = f64::from(inner.settings.max_failures);
        let estimate = inner.failures.rate_with(&ip, |c| {
            c.prev_samples as f64 * (1.0 - c.current_interval_fraction) + c.curr_samples as f64
        });
        estimate > max
    }

    pub fn record_failure(&self, ip: IpAddr) {
        self.inner.load().failures.observe(&ip, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_budget_and_only_that_ip() {
        let t = AuthThrottle::new(ThrottleSettings {
            max_failures: 3,
            window: Duration::from_secs(60),
        });
        let bad: IpAddr = "198.51.100.1".parse().unwrap();
        let good: IpAddr = "198.51.100.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!t.is_blocked(bad));
            t.record_failure(bad);
        }
        assert!(!t.is_blocked(bad), "exactly the budget is still allowed");
        t.record_failure(bad);
        assert!(t.is_blocked(bad));
        assert!(!t.is_blocked(good));
    }

    #[test]
    fn reconfigure_changes_budget() {
        let t = AuthThrottle::new(ThrottleSettings {
            max_failures: 100,
            window: Duration::from_secs(60),
        });
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        t.reconfigure(ThrottleSettings {
            max_failures: 1,
            window: Duration::from_secs(60),
        });
        t.record_failure(ip);
        t.record_failure(ip);
        assert!(t.is_blocked(ip));
    }
}
