//! Standard Webhooks signing (<https://www.standardwebhooks.com/>), so that the official
//! `standardwebhooks` and Svix libraries verify our deliveries unchanged:
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//! the base64-decoded part of the secret after `whsec_`. During a secret rotation several
//! signatures go out, space-separated, and a receiver accepts the delivery if any one matches.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SECRET_PREFIX: &str = "whsec_";
/// 32 random bytes: an HMAC-SHA256 key as long as the hash (the Standard Webhooks range is 24-64).
const SECRET_BYTES: usize = 32;
/// How far a timestamp may be from the receiver's clock (the standard libraries use 5 minutes).
pub const TOLERANCE_SECS: i64 = 5 * 60;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// An endpoint secret (`whsec_...`). `Debug` and `Display` never print it, so it cannot end up in
/// a log line or an error body by accident; `expose()` is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A new secret from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Secret(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// Wraps a stored secret, checking that it decodes to a usable key.
    pub fn parse(text: &str) -> Result<Self, SignError> {
        let secret = Secret(text.to_string());
        secret.key()?;
        Ok(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64 after the prefix. Unpadded base64 is accepted too, as the
    /// reference libraries accept it.
    pub fn key(&self) -> Result<Vec<u8>, SignError> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).unwrap_or(&self.0);
        let trimmed = encoded.trim_end_matches('=');
        let key = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .map_err(|_| SignError::BadSecret)?;
        if key.is_empty() {
            return Err(SignError::BadSecret);
        }
        Ok(key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the webhook secret is not valid base64")]
    BadSecret,
    #[error("a webhook header is missing")]
    MissingHeader,
    #[error("the webhook timestamp is not a number")]
    BadTimestamp,
    #[error("the webhook timestamp is outside the tolerance")]
    TimestampOutOfRange,
    #[error("no signature matches")]
    NoMatch,
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One `v1,<base64>` signature.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(digest))
}

/// The `webhook-signature` header value: one signature per key, space-separated (the current
/// key first, then the previous one while a rotation overlaps).
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign(key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a delivery the way a receiver would: the timestamp within `TOLERANCE_SECS` of `now`,
/// and at least one `v1` signature equal (in constant time) to the expected one.
pub fn verify(
    secret: &Secret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(SignError::MissingHeader);
    };
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignError::BadTimestamp)?;
    if (now_secs - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignError::TimestampOutOfRange);
    }
    let expected = mac(&secret.key()?, id, timestamp, body)
        .finalize()
        .into_bytes();
    let matched = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
        .any(|sig| bool::from(sig.as_slice().ct_eq(expected.as_slice())));
    if matched {
        Ok(())
    } else {
        Err(SignError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn reproduces_the_specification_vector() {
        let key = Secret::parse(SECRET).unwrap().key().unwrap();
        assert_eq!(sign(&key, ID, TIMESTAMP, BODY.as_bytes()), EXPECTED);
    }

    #[test]
    fn verifies_the_specification_vector_and_rejects_tampering() {
        let secret = Secret::parse(SECRET).unwrap();
        let ts = TIMESTAMP.to_string();
        let check = |body: &str, sig: &str, now: i64| {
            verify(
                &secret,
                Some(ID),
                Some(&ts),
                Some(sig),
                body.as_bytes(),
                now,
            )
        };
        assert_eq!(check(BODY, EXPECTED, TIMESTAMP), Ok(()));
        assert_eq!(check(BODY, EXPECTED, TIMESTAMP + 299), Ok(()));
        assert_eq!(
            check(BODY, EXPECTED, TIMESTAMP + 301),
            Err(SignError::TimestampOutOfRange)
        );
        assert_eq!(
            check(r#"{"test": 2432232315}"#, EXPECTED, TIMESTAMP),
            Err(SignError::NoMatch)
        );
        // A rotation sends two signatures; either one is enough, in any order, and unknown
        // versions are skipped.
        let other = Secret::generate().key().unwrap();
        let stale = sign(&other, ID, TIMESTAMP, BODY.as_bytes());
        assert_eq!(
            check(BODY, &format!("v2,abc {stale} {EXPECTED}"), TIMESTAMP),
            Ok(())
        );
        assert_eq!(check(BODY, &stale, TIMESTAMP), Err(SignError::NoMatch));
        assert_eq!(
            verify(&secret, Some(ID), None, Some(EXPECTED), BODY.as_bytes(), 0),
            Err(SignError::MissingHeader)
        );
    }

    #[test]
    fn rotation_header_carries_one_signature_per_key() {
        let new = Secret::generate();
        let old = Secret::generate();
        let header = signature_header(
            &[new.key().unwrap(), old.key().unwrap()],
            ID,
            TIMESTAMP,
            BODY.as_bytes(),
        );
        assert_eq!(header.split(' ').count(), 2);
        for secret in [&new, &old] {
            verify(
                secret,
                Some(ID),
                Some(&TIMESTAMP.to_string()),
                Some(&header),
                BODY.as_bytes(),
                TIMESTAMP,
            )
            .unwrap();
        }
    }

    #[test]
    fn generated_secrets_are_prefixed_random_and_never_printed() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.key().unwrap().len(), SECRET_BYTES);
        assert!(!format!("{a:?}").contains(&a.expose()[6..]));
        assert_eq!(Secret::parse("whsec_!!!"), Err(SignError::BadSecret));
    }
}
