//! The SSRF guard. A webhook URL is the customer's input, and the backend sits inside the
//! operator's network: without a guard, a URL could make us POST to a metadata service, a database
//! admin port or anything else only reachable from inside.
//!
//! What is refused: every row of the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (`SPECIAL`, one table, longest match names the refusal), plus multicast and, for IPv6,
//! everything outside 2000::/3, the only block IANA allocates for global unicast.
//!
//! Addresses that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`,
//! NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) are refused
//! as whole prefixes rather than judged by the IPv4 address inside: a real receiver has a native
//! public address and never needs one of these spellings; where the IPv4 address sits inside a
//! NAT64 local-use prefix depends on the translator's configuration (RFC 6052 allows /32 to /96),
//! so decoding it cannot be trusted; and the translator or relay that would carry the request is
//! itself on the operator's side. (A backend on an IPv6-only host behind DNS64 therefore cannot
//! reach IPv4-only receivers; give it IPv4 connectivity.)
//!
//! The check happens at every delivery attempt (test deliveries included), on the addresses the
//! connection will actually use: the guard is the HTTP client's DNS resolver, so a name is
//! resolved once, the forbidden addresses are dropped, and the connection goes to one of the
//! checked addresses. There is no second lookup a DNS-rebinding attacker could answer
//! differently. IP literals never reach a resolver, so `check_url` covers them before the request
//! starts, and at endpoint creation and update.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// One refused range and what it is, for the error message.
#[derive(Debug)]
pub struct SpecialRange {
    pub net: IpNet,
    pub name: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str) -> SpecialRange {
    SpecialRange {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)),
        name,
    }
}

const fn v6(segments: [u16; 8], len: u8, name: &'static str) -> SpecialRange {
    let [a, b, c, d, e, f, g, h] = segments;
    SpecialRange {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            len,
        )),
        name,
    }
}

/// The IANA Special-Purpose Address Registries (IPv4: iana-ipv4-special-registry, IPv6:
/// iana-ipv6-special-registry, both as of 2025), every row, globally reachable ones included
/// (anycast relays and AS112 sinks are no webhook receivers), plus multicast and the IPv6 space
/// outside global unicast.
pub const SPECIAL: &[SpecialRange] = &[
    v4(0, 0, 0, 0, 8, "\"this network\" (RFC 791)"),
    v4(0, 0, 0, 0, 32, "\"this host on this network\" (RFC 1122)"),
    v4(10, 0, 0, 0, 8, "private use (RFC 1918)"),
    v4(
        100,
        64,
        0,
        0,
        10,
        "shared address space, carrier-grade NAT (RFC 6598)",
    ),
    v4(127, 0, 0, 0, 8, "loopback (RFC 1122)"),
    v4(
        169,
        254,
        0,
        0,
        16,
        "link-local, cloud metadata services included (RFC 3927)",
    ),
    v4(172, 16, 0, 0, 12, "private use (RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (RFC 6890)"),
    v4(
        192,
        0,
        0,
        0,
        29,
        "IPv4 service continuity prefix (RFC 7335)",
    ),
    v4(192, 0, 0, 8, 32, "IPv4 dummy address (RFC 7600)"),
    v4(192, 0, 0, 9, 32, "Port Control Protocol anycast (RFC 7723)"),
    v4(192, 0, 0, 10, 32, "TURN anycast (RFC 8155)"),
    v4(192, 0, 0, 170, 32, "NAT64/DNS64 discovery (RFC 8880)"),
    v4(192, 0, 0, 171, 32, "NAT64/DNS64 discovery (RFC 8880)"),
    v4(192, 0, 2, 0, 24, "documentation, TEST-NET-1 (RFC 5737)"),
    v4(192, 31, 196, 0, 24, "AS112-v4 (RFC 7535)"),
    v4(192, 52, 193, 0, 24, "AMT (RFC 7450)"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "6to4 relay anycast, deprecated (RFC 7526)",
    ),
    v4(192, 168, 0, 0, 16, "private use (RFC 1918)"),
    v4(
        192,
        175,
        48,
        0,
        24,
        "direct delegation AS112 service (RFC 7534)",
    ),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)"),
    v4(198, 51, 100, 0, 24, "documentation, TEST-NET-2 (RFC 5737)"),
    v4(203, 0, 113, 0, 24, "documentation, TEST-NET-3 (RFC 5737)"),
    v4(224, 0, 0, 0, 4, "multicast (RFC 5771)"),
    v4(240, 0, 0, 0, 4, "reserved (RFC 1112)"),
    v4(255, 255, 255, 255, 32, "limited broadcast (RFC 919)"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback (RFC 4291)"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified (RFC 4291)"),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped (RFC 4291)"),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        96,
        "IPv4-compatible, deprecated (RFC 4291)",
    ),
    v6(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "IPv4-IPv6 translation, NAT64 (RFC 6052)",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "IPv4-IPv6 translation, NAT64 local use (RFC 8215)",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (RFC 6666)"),
    v6(
        [0x100, 0, 0, 1, 0, 0, 0, 0],
        64,
        "dummy IPv6 prefix (RFC 9780)",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments (RFC 2928)",
    ),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo (RFC 4380)"),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 1],
        128,
        "Port Control Protocol anycast (RFC 7723)",
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 2],
        128,
        "TURN anycast (RFC 8155)",
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 3],
        128,
        "DNS-SD service registration anycast (RFC 9665)",
    ),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking (RFC 5180)"),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT (RFC 7450)"),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6 (RFC 7535)"),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "ORCHID, deprecated (RFC 4843)",
    ),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2 (RFC 7343)"),
    v6(
        [0x2001, 0x30, 0, 0, 0, 0, 0, 0],
        28,
        "drone remote ID entity tags (RFC 9374)",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation (RFC 3849)",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 (RFC 3056)"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "direct delegation AS112 service (RFC 7534)",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation (RFC 9637)",
    ),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "segment routing SIDs (RFC 9602)",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local (RFC 4193)"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local (RFC 4291)"),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site-local, deprecated (RFC 3879)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast (RFC 4291)"),
    // The complement of 2000::/3, the only block allocated for global unicast.
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        3,
        "not global unicast (IANA IPv6 address space)",
    ),
    v6(
        [0x4000, 0, 0, 0, 0, 0, 0, 0],
        2,
        "not global unicast (IANA IPv6 address space)",
    ),
    v6(
        [0x8000, 0, 0, 0, 0, 0, 0, 0],
        1,
        "not global unicast (IANA IPv6 address space)",
    ),
];

/// The most specific special-purpose range `ip` is in, if any.
pub fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    SPECIAL
        .iter()
        .filter(|range| range.net.contains(&ip))
        .max_by_key(|range| range.net.prefix_len())
}

/// Addresses a webhook must never reach unless private targets are allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    special_range(ip).is_some()
}

/// Why a target was refused. Travels inside reqwest's error chain when the resolver refuses, so
/// the worker can tell "blocked" from an ordinary connection error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub host: String,
    /// The refused address and its range, e.g. `169.254.169.254 (169.254.0.0/16, link-local)`;
    /// for a name, the first of its addresses.
    pub why: String,
}

impl Blocked {
    fn new(host: &str, ip: IpAddr) -> Self {
        let why = match special_range(ip) {
            Some(range) => format!("{ip} is in {} ({})", range.net, range.name),
            None => ip.to_string(),
        };
        Blocked {
            host: host.to_string(),
            why,
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not allowed: {}; webhooks may not reach special-purpose addresses (private, \
             loopback, link-local, translation, documentation, reserved) unless \
             webhooks.allow_private_targets is set",
            self.host, self.why
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

/// Refuses a URL whose host is a forbidden IP literal (names are checked by `GuardedResolver`).
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), Blocked> {
    if allow_private {
        return Ok(());
    }
    // The URL parser has already normalised IPv4 spellings (`127.1`, `2130706433`, `0x7f.0.0.1`)
    // to dotted quads and IPv6 to its compressed form; a name stays a name.
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(Blocked {
            host: String::new(),
            why: "the URL has no host".to_string(),
        });
    }
    // host_str() brackets IPv6 literals; a name does not parse as an address.
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) if is_forbidden(ip) => Err(Blocked::new(host, ip)),
        _ => Ok(()),
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
            let found: Vec<SocketAddr> =
                tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map_err(|_| format!("resolving {host} timed out"))??
                    .collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| allow_private || !is_forbidden(addr.ip()))
                .collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(first)) => {
                    Err(Box::new(Blocked::new(&host, first.ip()))
                        as Box<dyn StdError + Send + Sync>)
                }
                (true, None) => Err(format!("{host} has no addresses").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden(text.parse().unwrap())
    }

    /// The address `offset` from the start of `net` (saturating at its last address).
    fn nth(net: IpNet, offset: u128) -> IpAddr {
        match net {
            IpNet::V4(n) => {
                let start = u32::from(n.network()) as u128;
                let end = u32::from(n.broadcast()) as u128;
                IpAddr::V4(Ipv4Addr::from(start.saturating_add(offset).min(end) as u32))
            }
            IpNet::V6(n) => {
                let start = u128::from(n.network());
                let end = u128::from(n.broadcast());
                IpAddr::V6(Ipv6Addr::from(start.saturating_add(offset).min(end)))
            }
        }
    }

    /// Every row of the table: its first, last and a middle address are refused, and a URL with
    /// that address as its literal host is refused at creation with the range named.
    #[test]
    fn every_special_purpose_row_is_refused() {
        for range in SPECIAL {
            let size = match range.net {
                IpNet::V4(n) => 1u128 << (32 - n.prefix_len()),
                IpNet::V6(n) => 1u128
                    .checked_shl(128 - n.prefix_len() as u32)
                    .unwrap_or(u128::MAX),
            };
            for ip in [
                nth(range.net, 0),
                nth(range.net, size / 2),
                nth(range.net, u128::MAX),
            ] {
                assert!(range.net.contains(&ip), "{ip} outside {}", range.net);
                let found =
                    special_range(ip).unwrap_or_else(|| panic!("{ip} ({}) allowed", range.name));
                assert!(found.net.prefix_len() >= range.net.prefix_len());
                let host = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                let url = reqwest::Url::parse(&format!("http://{host}:8080/hook")).unwrap();
                let blocked = check_url(&url, false).expect_err(&host);
                assert!(
                    blocked.why.contains(&found.net.to_string()),
                    "{}",
                    blocked.why
                );
                assert!(check_url(&url, true).is_ok());
            }
        }
    }

    #[test]
    fn the_attack_forms_of_issue_9_are_refused() {
        for (ip, range) in [
            ("64:ff9b:1::a9fe:a9fe", "64:ff9b:1::/48"),
            ("64:ff9b::a9fe:a9fe", "64:ff9b::/96"),
            ("64:ff9b::808:808", "64:ff9b::/96"),
            ("2002:a9fe:a9fe::1", "2002::/16"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::/32"),
            ("::ffff:127.0.0.1", "::ffff:0.0.0.0/96"),
            ("::ffff:8.8.8.8", "::ffff:0.0.0.0/96"),
            ("::127.0.0.1", "::/96"),
            ("::8.8.8.8", "::/96"),
            ("198.18.0.1", "198.18.0.0/15"),
            ("198.19.255.255", "198.18.0.0/15"),
            ("2001:2::1", "2001:2::/48"),
            ("240.0.0.1", "240.0.0.0/4"),
            ("2001:db8::1", "2001:db8::/32"),
            ("2001:20::1", "2001:20::/28"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("fd00:ec2::254", "fc00::/7"),
            ("100::1", "100::/64"),
        ] {
            let found = special_range(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip}"));
            assert_eq!(found.net.to_string(), range, "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.0",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "2001:200::1",
            "2001:4860:4860::8888",
            "2003::1",
            "2001:db9::1",
            "3ffe::1",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn literal_urls_are_checked_unless_allowed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        for refused in [
            "http://127.0.0.1:9/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://0/",
        ] {
            let err = check_url(&url(refused), false).expect_err(refused);
            assert!(err.to_string().contains("allow_private_targets"), "{err}");
        }
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
        let blocked = find_blocked(err.as_ref()).expect("a Blocked error");
        assert_eq!(blocked.host, "localhost");
        assert!(blocked.why.contains("loopback"), "{}", blocked.why);

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
