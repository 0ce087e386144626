//! The SSRF guard. A webhook URL is the customer's input, and the backend sits inside the
//! operator's network: without a guard, a URL could make us POST to a metadata service, a database
//! admin port or anything else only reachable from inside.
//!
//! The check happens at delivery time, on the addresses the connection will actually use: the
//! guard is the HTTP client's DNS resolver, so a name is resolved once, the forbidden addresses are
//! dropped, and the connection goes to one of the checked addresses. There is no second lookup a
//! DNS-rebinding attacker could answer differently. IP literals never reach a resolver, so
//! `check_url` covers them before the request starts.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a target was refused. Travels inside reqwest's error chain when the resolver refuses, so
/// the worker can tell "blocked" from an ordinary connection error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub host: String,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves only to private, loopback, link-local or otherwise internal addresses \
             (allow them with webhooks.allow_private_targets)",
            self.host
        )
    }
}

impl StdError for Blocked {}

/// Finds a `Blocked` anywhere in an error's source chain.
pub fn find_blocked<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Blocked> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(blocked) = e.downcast_ref::<Blocked>() {
            return Some(blocked);
        }
        current = e.source();
    }
    None
}

/// Addresses a webhook must never reach unless private targets are allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()                              // 10/8, 172.16/12, 192.168/16
        || ip.is_loopback()                      // 127/8
        || ip.is_link_local()                    // 169.254/16, metadata 169.254.169.254 included
        || ip.is_multicast()                     // 224/4
        || ip.is_broadcast()
        || a == 0                                // 0/8 "this network", 0.0.0.0 included
        || (a == 100 && (64..128).contains(&b))  // 100.64/10 carrier-grade NAT
        || (a == 192 && b == 0 && c == 0)        // 192.0.0/24 IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))    // 198.18/15 benchmarking
        || a >= 240 // 240/4 reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    // Addresses that embed an IPv4 address are judged by it: ::ffff:127.0.0.1 is loopback.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address through a translator.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = segments;
        return is_forbidden_v4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00   // fc00::/7 unique local (AWS fd00:ec2::254 too)
        || (segments[0] & 0xffc0) == 0xfe80   // fe80::/10 link-local
        || (segments[0] & 0xffc0) == 0xfec0   // fec0::/10 site-local (deprecated, still routable inside)
        || segments[..6] == [0, 0, 0, 0, 0, 0] // ::/96 IPv4-compatible (deprecated)
}

/// Refuses a URL whose host is a forbidden IP literal (names are checked by `GuardedResolver`).
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), Blocked> {
    if allow_private {
        return Ok(());
    }
    // host_str() brackets IPv6 literals; a name does not parse as an address.
    let host = url.host_str().unwrap_or_default();
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    let forbidden = host.is_empty() || literal.is_ok_and(is_forbidden);
    if forbidden {
        Err(Blocked {
            host: host.to_string(),
        })
    } else {
        Ok(())
    }
}

/// The webhook client's resolver: system DNS, then the guard. Bounded by `timeout` because a
/// resolver that never answers would otherwise hold a delivery slot.
pub struct GuardedResolver {
    pub allow_private: bool,
    pub timeout: Duration,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let timeout = self.timeout;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 0)))
                .await
                .map_err(|_| format!("resolving {host} timed out"))??;
            let addrs: Vec<SocketAddr> = found
                .filter(|addr| allow_private || !is_forbidden(addr.ip()))
                .collect();
            if addrs.is_empty() {
                // Either nothing resolved (lookup_host errs for that) or everything was internal.
                return Err(Box::new(Blocked { host }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden(text.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(forbidden(ip), "{ip} must be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn literal_urls_are_checked_unless_allowed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&url("http://127.0.0.1:9/x"), false).is_err());
        assert!(check_url(&url("http://[::1]/x"), false).is_err());
        assert!(check_url(&url("http://169.254.169.254/latest"), false).is_err());
        assert!(check_url(&url("http://127.0.0.1:9/x"), true).is_ok());
        assert!(check_url(&url("https://8.8.8.8/x"), false).is_ok());
        // Names pass here; the resolver judges what they resolve to.
        assert!(check_url(&url("http://localhost/x"), false).is_ok());
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_internal_addresses() {
        let guarded = GuardedResolver {
            allow_private: false,
            timeout: Duration::from_secs(5),
        };
        let err = match guarded.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(find_blocked(err.as_ref()).is_some(), "{err}");

        let open = GuardedResolver {
            allow_private: true,
            timeout: Duration::from_secs(5),
        };
        let addrs: Vec<_> = match open.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
