//! Reading the API key and secret off a request (SPEC §3).
//!
//! Two styles are accepted: `Authorization: Bearer <key>` + `X-Api-Secret: <secret>`, or
//! `Authorization: Basic base64(<key>:<secret>)`. Parsed credentials live in fixed-size arrays so
//! the hot path never allocates, and their `Debug` never prints them.

use base64::Engine;

pub const KEY_PREFIX: &[u8] = b"pk_live_";
pub const SECRET_PREFIX: &[u8] = b"sk_live_";
pub const KEY_LEN: usize = 8 + 32;
pub const SECRET_LEN: usize = 8 + 40;
/// Length of the plain-text key prefix kept for identification in lists and logs.
pub const DISPLAY_PREFIX_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    Missing,
    Malformed,
}

/// A well-formed key + secret pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    key: [u8; KEY_LEN],
    secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_prefix", &self.key_prefix())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Checks both formats; `None` if either is not well-formed.
    pub fn new(key: &[u8], secret: &[u8]) -> Option<Self> {
        if !is_well_formed(key, KEY_PREFIX, KEY_LEN)
            || !is_well_formed(secret, SECRET_PREFIX, SECRET_LEN)
        {
            return None;
        }
        let mut k = [0u8; KEY_LEN];
        let mut s = [0u8; SECRET_LEN];
        k.copy_from_slice(key);
        s.copy_from_slice(secret);
        Some(Credentials { key: k, secret: s })
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The first 12 characters of the key (`pk_live_abcd`): the only part that may be logged.
    pub fn key_prefix(&self) -> &str {
        // The key was checked to be ASCII base62 on construction.
        std::str::from_utf8(&self.key[..DISPLAY_PREFIX_LEN]).unwrap_or("pk_live_????")
    }
}

fn is_well_formed(value: &[u8], prefix: &[u8], len: usize) -> bool {
    value.len() == len
        && value.starts_with(prefix)
        && value[prefix.len()..].iter().all(u8::is_ascii_alphanumeric)
}

/// Parses the credentials from the raw `Authorization` and `X-Api-Secret` header values.
pub fn parse(
    authorization: Option<&[u8]>,
    api_secret: Option<&[u8]>,
) -> Result<Credentials, CredentialError> {
    let Some(authorization) = authorization.map(trim) else {
        return Err(CredentialError::Missing);
    };
    if authorization.is_empty() {
        return Err(CredentialError::Missing);
    }
    let (scheme, rest) = match authorization.iter().position(|b| *b == b' ') {
        Some(i) => (&authorization[..i], trim(&authorization[i + 1..])),
        None => (authorization, &b""[..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        let key = rest;
        if key.is_empty() {
            return Err(CredentialError::Missing);
        }
        let secret = match api_secret.map(trim) {
            Some(s) if !s.is_empty() => s,
            _ => {
                // A key with no secret: say which part is missing only if the key itself is fine.
                return Err(if is_well_formed(key, KEY_PREFIX, KEY_LEN) {
                    CredentialError::Missing
                } else {
                    CredentialError::Malformed
                });
            }
        };
        Credentials::new(key, secret).ok_or(CredentialError::Malformed)
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        if rest.is_empty() {
            return Err(CredentialError::Missing);
        }
        // key:secret is 89 bytes, i.e. 120 base64 characters; anything much longer is not ours
        // and is refused before decoding to bound the work.
        if rest.len() > 160 {
            return Err(CredentialError::Malformed);
        }
        let mut decoded = [0u8; 128];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(rest, &mut decoded)
            .map_err(|_| CredentialError::Malformed)?;
        let decoded = &decoded[..n];
        let colon = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or(CredentialError::Malformed)?;
        Credentials::new(&decoded[..colon], &decoded[colon + 1..]).ok_or(CredentialError::Malformed)
    } else {
        Err(CredentialError::Malformed)
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const KEY: &str = "pk_live_0123456789abcdefghijABCDEFGHIJ01";
    pub const SECRET: &str = "sk_live_0123456789abcdefghijABCDEFGHIJ0123456789";

    fn basic(user: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user)
        )
        .into_bytes()
    }

    #[test]
    fn constants_match_the_format() {
        assert_eq!(KEY.len(), KEY_LEN);
        assert_eq!(SECRET.len(), SECRET_LEN);
    }

    #[test]
    fn bearer_with_secret_header() {
        let auth = format!("Bearer {KEY}");
        let c = parse(Some(auth.as_bytes()), Some(SECRET.as_bytes())).unwrap();
        assert_eq!(c.key(), KEY.as_bytes());
        assert_eq!(c.secret(), SECRET.as_bytes());
        assert_eq!(c.key_prefix(), "pk_live_0123");
        let lower = format!("bearer   {KEY} ");
        assert!(parse(Some(lower.as_bytes()), Some(SECRET.as_bytes())).is_ok());
    }

    #[test]
    fn basic_auth() {
        let c = parse(Some(&basic(&format!("{KEY}:{SECRET}"))), None).unwrap();
        assert_eq!(c.key(), KEY.as_bytes());
        assert_eq!(c.secret(), SECRET.as_bytes());
    }

    #[test]
    fn missing_cases() {
        assert_eq!(parse(None, None), Err(CredentialError::Missing));
        assert_eq!(
            parse(None, Some(SECRET.as_bytes())),
            Err(CredentialError::Missing)
        );
        assert_eq!(parse(Some(b""), None), Err(CredentialError::Missing));
        assert_eq!(parse(Some(b"Bearer "), None), Err(CredentialError::Missing));
        let auth = format!("Bearer {KEY}");
        assert_eq!(
            parse(Some(auth.as_bytes()), None),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            parse(Some(auth.as_bytes()), Some(b" ")),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn malformed_cases() {
        let m = Err(CredentialError::Malformed);
        let secret = Some(SECRET.as_bytes());
        // Wrong prefix, wrong length, non-base62 characters.
        assert_eq!(
            parse(
                Some(b"Bearer sk_live_0123456789abcdefghijABCDEFGHIJ01"),
                secret
            ),
            m
        );
        assert_eq!(parse(Some(b"Bearer pk_live_short"), secret), m);
        assert_eq!(
            parse(
                Some(b"Bearer pk_live_0123456789abcdefghijABCDEFGHIJ0!"),
                secret
            ),
            m
        );
        assert_eq!(
            parse(
                Some(b"Bearer pk_test_0123456789abcdefghijABCDEFGHIJ01"),
                secret
            ),
            m
        );
        let auth = format!("Bearer {KEY}");
        assert_eq!(parse(Some(auth.as_bytes()), Some(b"sk_live_nope")), m);
        assert_eq!(parse(Some(auth.as_bytes()), Some(KEY.as_bytes())), m);
        // Unknown scheme, bad base64, no colon, swapped fields.
        assert_eq!(parse(Some(b"Token abc"), secret), m);
        assert_eq!(parse(Some(KEY.as_bytes()), secret), m);
        assert_eq!(parse(Some(b"Basic !!!notbase64"), None), m);
        assert_eq!(parse(Some(&basic(KEY)), None), m);
        assert_eq!(parse(Some(&basic(&format!("{SECRET}:{KEY}"))), None), m);
        assert_eq!(parse(Some(&basic(&format!("{KEY}:{SECRET}x"))), None), m);
        let huge = format!("Basic {}", "A".repeat(4096));
        assert_eq!(parse(Some(huge.as_bytes()), None), m);
        // A malformed key with no secret is reported as malformed, not missing.
        assert_eq!(parse(Some(b"Bearer garbage"), None), m);
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let c = Credentials::new(KEY.as_bytes(), SECRET.as_bytes()).unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains(KEY));
        assert!(!s.contains(SECRET));
    }
}
