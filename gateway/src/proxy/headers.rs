//! Header names and values the gateway reads and writes: request ids, the identity headers and
//! proof forwarded to the backend (docs/internal-api.md; the proof itself is `backend_auth`), and the limit headers (SPEC §4).

use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::{ErrorType, OrErr, Result};

use crate::limits::{LimitState, DAY_SECS, WINDOW_SECS};

pub const REQUEST_ID: &str = "x-request-id";
pub const API_SECRET: &str = "x-api-secret";
pub const INTERNAL_PREFIX: &str = "x-wiz-";
pub const KEY_ID: &str = "x-wiz-key-id";
pub const ACCOUNT_ID: &str = "x-wiz-account-id";
pub const KEY_PREFIX: &str = "x-wiz-key-prefix";
pub const CLIENT_IP: &str = "x-wiz-client-ip";
pub const GATEWAY_PROOF: &str = "x-wiz-gateway-proof";
/// `http` or `https`: how the client reached the gateway (the backend marks cookies `Secure`).
pub const SCHEME: &str = "x-wiz-scheme";
/// Client-supplied forwarding headers; the gateway replaces them with the IP it resolved.
pub const FORWARDED_FOR: &str = "x-forwarded-for";
pub const REAL_IP: &str = "x-real-ip";
pub const FORWARDED: &str = "forwarded";

/// The client's request id if sane (1–64 of `[A-Za-z0-9._:-]`), else a new ULID. A header value,
/// so the response, the upstream request and the error body share one copy.
pub fn request_id(client_value: Option<&HeaderValue>) -> HeaderValue {
    match client_value {
        Some(v) if is_sane_request_id(v.as_bytes()) => v.clone(),
        _ => {
            let mut buf = [0u8; ulid::ULID_LEN];
            let id = ulid::Ulid::new().array_to_str(&mut buf);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        }
    }
}

pub fn is_sane_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The client IP as a header value, formatted once for the headers, the proof and the log.
pub fn client_ip(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write as _;
    // The longest text form of an address: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
    let mut buf = [0u8; 45];
    let mut rest = &mut buf[..];
    let _ = write!(rest, "{ip}");
    let len = 45 - rest.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
}

/// The limit headers for a `/v1` response, as (name, value) pairs. The values are written into
/// one buffer and share it: one allocation for the seven instead of a formatted string each.
pub fn limit_headers(s: &LimitState) -> Result<[(&'static str, HeaderValue); 7]> {
    let mut buf = BytesMut::with_capacity(192);
    let mut ends = [0usize; 7];
    let mut num = itoa::Buffer::new();
    let mut put = |buf: &mut BytesMut, parts: &[Part]| {
        for part in parts {
            match *part {
                Part::Text(t) => buf.put_slice(t.as_bytes()),
                Part::Num(n) => buf.put_slice(num.format(n).as_bytes()),
            }
        }
        buf.len()
    };
    use Part::{Num, Text};
    let (minute, day) = (u64::from(s.minute_limit), u64::from(s.day_limit));
    let (minute_left, day_left) = (u64::from(s.minute_remaining), u64::from(s.day_remaining));
    ends[0] = put(&mut buf, &[Num(minute)]);
    ends[1] = put(&mut buf, &[Num(minute_left)]);
    ends[2] = put(&mut buf, &[Num(s.minute_reset_secs)]);
    ends[3] = put(&mut buf, &[Num(day)]);
    ends[4] = put(&mut buf, &[Num(day_left)]);
    ends[5] = put(
        &mut buf,
        &[
            Text("\"minute\";q="),
            Num(minute),
            Text(";w="),
            Num(WINDOW_SECS),
            Text(", \"day\";q="),
            Num(day),
            Text(";w="),
            Num(DAY_SECS),
        ],
    );
    ends[6] = put(
        &mut buf,
        &[
            Text("\"minute\";r="),
            Num(minute_left),
            Text(";t="),
            Num(s.minute_reset_secs),
            Text(", \"day\";r="),
            Num(day_left),
            Text(";t="),
            Num(s.day_reset_secs),
        ],
    );
    let all = buf.freeze();
    let value = |i: usize| {
        let start = if i == 0 { 0 } else { ends[i - 1] };
        HeaderValue::from_maybe_shared(all.slice(start..ends[i]))
            .or_err(ErrorType::InvalidHTTPHeader, "limit header value")
    };
    Ok([
        ("x-ratelimit-limit", value(0)?),
        ("x-ratelimit-remaining", value(1)?),
        ("x-ratelimit-reset", value(2)?),
        ("x-dailylimit-limit", value(3)?),
        ("x-dailylimit-remaining", value(4)?),
        ("ratelimit-policy", value(5)?),
        ("ratelimit", value(6)?),
    ])
}

enum Part {
    Text(&'static str),
    Num(u64),
}

/// Adds the limit headers (SPEC §4) to a `/v1` response, the gateway's own or the backend's.
pub fn insert_limit_headers(response: &mut ResponseHeader, s: &LimitState) -> Result<()> {
    for (name, value) in limit_headers(s)? {
        response.insert_header(name, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let value = |v: &[u8]| HeaderValue::from_bytes(v).unwrap();
        assert_eq!(request_id(Some(&value(b"abc-123:x.y_z"))), "abc-123:x.y_z");
        assert_eq!(request_id(Some(&value(&[b'a'; 64]))).len(), 64);
        for bad in [&b""[..], &[b'a'; 65], b"has space", b"semi;colon", b"\xff"] {
            let id = request_id(Some(&value(bad)));
            assert_eq!(id.len(), 26, "ULID expected for {bad:?}");
        }
        assert_eq!(request_id(None).len(), 26);
    }

    #[test]
    fn client_ip_text() {
        for ip in [
            "203.0.113.7",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            assert_eq!(client_ip(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn limit_header_values() {
        let s = LimitState {
            minute_limit: 60,
            minute_remaining: 12,
            minute_reset_secs: 34,
            day_limit: 1000,
            day_remaining: 900,
            day_reset_secs: 3600,
        };
        let h = limit_headers(&s).unwrap();
        let values: Vec<&str> = h[..5].iter().map(|(_, v)| v.to_str().unwrap()).collect();
        assert_eq!(values, ["60", "12", "34", "1000", "900"]);
        assert_eq!(h[5].1, "\"minute\";q=60;w=60, \"day\";q=1000;w=86400");
        assert_eq!(h[6].1, "\"minute\";r=12;t=34, \"day\";r=900;t=3600");
    }
}
