//! Slowing down credential guessing: failed authentications per client IP (SPEC §4).
//!
//! Only the failure path is throttled. A request is checked first; if its credentials are right
//! it is served whatever its IP did before, so no neighbour, shared NAT or attacker can lock a
//! valid key out. A request whose credentials are wrong counts one failure for its IP; once the
//! IP is over `max_failures` within the window, such a request gets `429 too_many_failed_attempts`
//! with `Retry-After` instead of `401`. A throttled IP can therefore still tell a right guess
//! (served) from a wrong one (429): that is harmless, because keys are 190-bit random strings and
//! secrets longer still, so at ~2 guesses a second per IP (20 per 10 s by default) no number of
//! IPs gets anywhere near a hit. The throttle keeps guessing slow and the logs readable; the
//! key space is what makes guessing infeasible.
//!
//! Counters are exact, one per IP (IPv6 per /64, the smallest block a host is usually given, so
//! one machine cannot rotate through its addresses), in a fixed-capacity LRU map: memory stays
//! bounded however many IPs fail, and a full map drops the counter touched least recently (in
//! practice one whose window has long expired). The previous count-min sketch shared slots
//! between IPs, so failures spread over many IPs pushed clients that never failed over the
//! threshold. `pingora_limits::rate::Rate` is that same sketch, and caches with background
//! expiry (moka) bring threads and far more machinery than a map touched only on failures
//! needs; `lru` (already in the tree through Pingora) is a plain O(1) map with an eviction
//! order.

use std::hash::RandomState;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// More than this many failures within the window throttles the IP.
    pub max_failures: u32,
    pub window: Duration,
    /// How many IPs (IPv6: /64s) are tracked at once.
    pub tracked_ips: NonZeroUsize,
}

/// Who a failure counts against: an IPv4 address, or the /64 an IPv6 address lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6Net64(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6Net64((u128::from(v6) >> 64) as u64),
        }
    }
}

/// One IP's failures in its current window, which opens at its first failure.
#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start_ms: i64,
    count: u32,
}

/// What a failed authentication gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Within the budget: answer the failure as such (401/400).
    Counted,
    /// Over the budget: 429, retry once the window closes.
    Throttled { retry_after_secs: u64 },
}

struct Inner {
    settings: ThrottleSettings,
    // SipHash with a random key: the keys are attacker-chosen addresses. One lock is enough:
    // only failed authentications take it, for O(1) work, and a valid request never does.
    failures: LruCache<ClientKey, Failures, RandomState>,
}

pub struct AuthThrottle {
    inner: Mutex<Inner>,
}

impl AuthThrottle {
    pub fn new(settings: ThrottleSettings) -> AuthThrottle {
        AuthThrottle {
            inner: Mutex::new(Inner {
                settings,
                failures: LruCache::with_hasher(settings.tracked_ips, RandomState::new()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a stale counter: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies reloaded settings; counts survive (a smaller capacity drops the oldest).
    pub fn reconfigure(&self, settings: ThrottleSettings) {
        let mut inner = self.lock();
        if inner.settings.tracked_ips != settings.tracked_ips {
            inner.failures.resize(settings.tracked_ips);
        }
        inner.settings = settings;
    }

    /// Counts one failed authentication from `ip` and says whether it is over the budget.
    pub fn record_failure(&self, ip: IpAddr, now_ms: i64) -> FailureVerdict {
        let mut inner = self.lock();
        let max = inner.settings.max_failures;
        let window_ms = i64::try_from(inner.settings.window.as_millis()).unwrap_or(i64::MAX);
        let entry = inner
            .failures
            .get_or_insert_mut(ClientKey::of(ip), || Failures {
                window_start_ms: now_ms,
                count: 0,
            });
        // A window that closed (or a clock that stepped back) starts afresh.
        let elapsed = now_ms.saturating_sub(entry.window_start_ms);
        if !(0..window_ms).contains(&elapsed) {
            *entry = Failures {
                window_start_ms: now_ms,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count <= max {
            return FailureVerdict::Counted;
        }
        let left_ms = window_ms.saturating_sub(now_ms.saturating_sub(entry.window_start_ms));
        FailureVerdict::Throttled {
            retry_after_secs: u64::try_from(left_ms).unwrap_or(0).div_ceil(1000).max(1),
        }
    }

    /// How many IPs are tracked now (for tests and the capacity bound).
    pub fn tracked(&self) -> usize {
        self.lock().failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_failures: u32, window_secs: u64, capacity: usize) -> AuthThrottle {
        AuthThrottle::new(ThrottleSettings {
            max_failures,
            window: Duration::from_secs(window_secs),
            tracked_ips: NonZeroUsize::new(capacity).unwrap(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn throttles_after_budget_and_only_that_ip() {
        let t = throttle(3, 60, 100);
        let bad = ip("198.51.100.1");
        for _ in 0..3 {
            assert_eq!(t.record_failure(bad, 1_000), FailureVerdict::Counted);
        }
        assert_eq!(
            t.record_failure(bad, 11_000),
            FailureVerdict::Throttled {
                retry_after_secs: 50
            }
        );
        assert_eq!(
            t.record_failure(ip("198.51.100.2"), 11_000),
            FailureVerdict::Counted
        );
        // The window closes 60 s after the first failure: the IP starts afresh.
        assert_eq!(t.record_failure(bad, 61_000), FailureVerdict::Counted);
    }

    #[test]
    fn distinct_ips_never_share_a_counter() {
        // The old count-min sketch (4×1024 slots) put a fresh IP over the budget once ~10,000
        // failures were spread over other IPs; exact counters never do.
        let t = throttle(3, 600, 100_000);
        for i in 0..20_000u32 {
            let spray = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            for _ in 0..3 {
                assert_eq!(t.record_failure(spray, 0), FailureVerdict::Counted);
            }
        }
        for fresh in ["203.0.113.1", "2001:db8::1"] {
            for _ in 0..3 {
                assert_eq!(t.record_failure(ip(fresh), 0), FailureVerdict::Counted);
            }
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = throttle(2, 60, 100);
        t.record_failure(ip("2001:db8:1:2::1"), 0);
        t.record_failure(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 0);
        assert!(matches!(
            t.record_failure(ip("2001:db8:1:2:abcd::9"), 0),
            FailureVerdict::Throttled { .. }
        ));
        assert_eq!(
            t.record_failure(ip("2001:db8:1:3::1"), 0),
            FailureVerdict::Counted
        );
        t.record_failure(ip("192.0.2.7"), 0);
        t.record_failure(ip("::ffff:192.0.2.7"), 0);
        assert!(matches!(
            t.record_failure(ip("192.0.2.7"), 0),
            FailureVerdict::Throttled { .. }
        ));
        assert_eq!(ClientKey::of(ip("192.0.2.7")), ClientKey::V4(0xc000_0207));
    }

    #[test]
    fn memory_is_bounded_by_capacity_and_the_oldest_goes_first() {
        let t = throttle(1, 600, 1_000);
        let first = ip("198.51.100.1");
        t.record_failure(first, 0);
        assert!(matches!(
            t.record_failure(first, 0),
            FailureVerdict::Throttled { .. }
        ));
        for i in 0..5_000u32 {
            t.record_failure(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 1);
            assert!(t.tracked() <= 1_000);
        }
        assert_eq!(t.tracked(), 1_000);
        // The oldest counter was dropped to make room.
        assert_eq!(t.record_failure(first, 2), FailureVerdict::Counted);
    }

    #[test]
    fn reconfigure_changes_budget_and_capacity() {
        let t = throttle(100, 60, 100);
        let a = ip("198.51.100.1");
        t.record_failure(a, 0);
        t.reconfigure(ThrottleSettings {
            max_failures: 1,
            window: Duration::from_secs(60),
            tracked_ips: NonZeroUsize::new(1).unwrap(),
        });
        assert!(matches!(
            t.record_failure(a, 0),
            FailureVerdict::Throttled { .. }
        ));
        t.record_failure(ip("198.51.100.2"), 0);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn retry_after_is_what_is_left_of_the_window() {
        let t = throttle(1, 10, 10);
        let a = ip("198.51.100.1");
        t.record_failure(a, 5_000);
        assert_eq!(
            t.record_failure(a, 5_001),
            FailureVerdict::Throttled {
                retry_after_secs: 10
            }
        );
        assert_eq!(
            t.record_failure(a, 14_999),
            FailureVerdict::Throttled {
                retry_after_secs: 1
            }
        );
    }
}
