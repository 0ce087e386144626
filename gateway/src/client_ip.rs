//! Deciding the client IP (SPEC §4): the TCP peer, unless the peer is a trusted proxy; only then
//! is `X-Forwarded-For` read, right to left, and the first hop that is not a trusted proxy wins.
//! Hops left of that one were written by the client and cannot be believed.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Compiled `trusted_proxies` CIDRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Box<[IpNet]>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies {
            nets: nets.into_boxed_slice(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// `forwarded_for` holds the raw `X-Forwarded-For` header values in the order received.
pub fn resolve<'a, I>(peer: IpAddr, forwarded_for: I, trusted: &TrustedProxies) -> IpAddr
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut candidate = peer;
    for value in forwarded_for.into_iter().rev() {
        for hop in value.rsplit(|b| *b == b',') {
            match parse_hop(hop) {
                Some(ip) if trusted.contains(ip) => candidate = ip,
                Some(ip) => return ip,
                // Garbage in the chain: whatever lies left of it is unverifiable, so stop at the
                // last hop a trusted proxy vouched for.
                None => return candidate,
            }
        }
    }
    candidate
}

fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // Some proxies append the port: `1.2.3.4:5678` or `[2001:db8::1]:5678`.
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies::new(cidrs.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolve_with(peer: &str, xff: &[&str], t: &TrustedProxies) -> IpAddr {
        resolve(ip(peer), xff.iter().map(|v| v.as_bytes()), t)
    }

    #[test]
    fn untrusted_peer_ignores_header() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            resolve_with("203.0.113.5", &["1.1.1.1"], &t),
            ip("203.0.113.5")
        );
        assert_eq!(
            resolve_with("203.0.113.5", &["1.1.1.1"], &TrustedProxies::default()),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_wins_over_spoofed_left_hops() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client claims to be 6.6.6.6; the trusted load balancer appended its real address.
        assert_eq!(
            resolve_with("10.0.0.2", &["6.6.6.6, 198.51.100.7, 10.0.0.9"], &t),
            ip("198.51.100.7")
        );
        // Same chain split over several headers.
        assert_eq!(
            resolve_with("127.0.0.1", &["6.6.6.6", "198.51.100.7", "10.0.0.9"], &t),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn all_trusted_returns_leftmost_and_no_header_returns_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            resolve_with("10.0.0.2", &["10.1.1.1, 10.2.2.2"], &t),
            ip("10.1.1.1")
        );
        assert_eq!(resolve_with("10.0.0.2", &[], &t), ip("10.0.0.2"));
    }

    #[test]
    fn garbage_and_ports_and_v6() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(
            resolve_with("10.0.0.2", &["evil, 10.0.0.3"], &t),
            ip("10.0.0.3")
        );
        assert_eq!(
            resolve_with("10.0.0.2", &["198.51.100.7:4444"], &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve_with("10.0.0.2", &["[2001:db9::1]:80"], &t),
            ip("2001:db9::1")
        );
        assert_eq!(
            resolve_with("2001:db8::1", &["2001:db9::2"], &t),
            ip("2001:db9::2")
        );
        // A v4 peer seen as v4-mapped v6 is still recognised as trusted.
        assert_eq!(
            resolve_with("::ffff:10.0.0.2", &["198.51.100.8"], &t),
            ip("198.51.100.8")
        );
        assert_eq!(
            resolve_with("::ffff:203.0.113.1", &[], &t),
            ip("203.0.113.1")
        );
    }
}
