//! Playground credentials (issue 13): `Authorization: Bearer wpg_<key_id>.<expires_unix>.<mac>`,
//! minted by the backend for the console's Playground (`backend/src/keys/playground.rs`, wire
//! contract in docs/internal-api.md). A valid one acts as the key it names: the request then
//! goes through the same status, plan, whitelist and limit checks as the key's own credentials.
//!
//! `mac` is the unpadded base64url HMAC-SHA256 of `"<key_id>.<expires_unix>.<key_hash hex>"`
//! under `HMAC-SHA256(internal_token, "wiz-edge playground credential v1")`. Binding the MAC to the
//! key's current hash is what makes a rotation end every credential of the key; the status check
//! ends them at revocation; the expiry at `expires_unix`. Nothing to store or sync.

use std::net::IpAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::{self, AuthOutcome};
use crate::keys::KeyTable;

pub const TOKEN_PREFIX: &[u8] = b"wpg_";
const DERIVATION_LABEL: &[u8] = b"wiz-edge playground credential v1";
/// A real credential is about 90 bytes; anything much longer is refused before any work.
const MAX_TOKEN_LEN: usize = 200;
/// 32 bytes in unpadded base64.
const MAC_B64_LEN: usize = 43;

/// The bearer value, if the request presents a Playground credential rather than a key.
pub fn presented(authorization: Option<&[u8]>) -> Option<&[u8]> {
    let value = authorization?.trim_ascii();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    token.starts_with(TOKEN_PREFIX).then_some(token)
}

/// Verifies the credential and, if it is valid and unexpired, authorizes the key it names as
/// `auth::check` would for the key's own credentials. Any flaw is `Invalid`, one answer for all.
pub fn check(
    table: &KeyTable,
    internal_token: &str,
    token: &[u8],
    client_ip: IpAddr,
    now_ms: i64,
) -> AuthOutcome {
    let Some((key_id, expires, mac)) = split(token) else {
        return AuthOutcome::Invalid;
    };
    if expires.saturating_mul(1000) <= now_ms {
        return AuthOutcome::Invalid;
    }
    let Some(record) = table.get_by_id(key_id) else {
        return AuthOutcome::Invalid;
    };
    let mut derived = Hmac::<Sha256>::new_from_slice(internal_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    derived.update(DERIVATION_LABEL);
    let derived = derived.finalize().into_bytes();
    let mut expected =
        Hmac::<Sha256>::new_from_slice(&derived).expect("HMAC accepts keys of any length");
    expected.update(key_id.as_bytes());
    expected.update(b".");
    expected.update(expires.to_string().as_bytes());
    expected.update(b".");
    expected.update(hex::encode(record.key_hash.0).as_bytes());
    // `verify_slice` compares in constant time.
    if expected.verify_slice(&mac).is_err() {
        return AuthOutcome::Invalid;
    }
    auth::authorize(record, client_ip, now_ms)
}

/// `wpg_<key_id>.<expires>.<mac>` → its parts, or `None` if it is not shaped like one.
fn split(token: &[u8]) -> Option<(&str, i64, [u8; 32])> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let body = std::str::from_utf8(token.strip_prefix(TOKEN_PREFIX)?).ok()?;
    let mut parts = body.split('.');
    let (key_id, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || key_id.is_empty()
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || mac.len() != MAC_B64_LEN
        || expires.is_empty()
        || !expires.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let expires: i64 = expires.parse().ok()?;
    let mut out = [0u8; 32];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(mac, &mut out)
        .ok()?;
    (n == 32).then_some((key_id, expires, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::record;
    use crate::keys::{Digest, KeyStatus, Whitelist};

    const K1: &str = "pk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1";
    const S1: &str = "sk_live_SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS1";
    const K2: &str = "pk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2";
    /// Minted by the backend's `keys::playground::mint` for this token, key and hash (its
    /// `known_vector` test pins the same string): both sides agree on the format.
    const TOKEN: &str = "tttttttttttttttttttttttttttttttt";
    const PINNED: &str = "wpg_key_01ABC.1700000000.zdI8Yq2ZEwx-7JdRhp51DOtv8IPsbKUQhds2R303Deo";

    fn ip() -> IpAddr {
        "1.2.3.4".parse().unwrap()
    }

    fn granted(o: &AuthOutcome) -> bool {
        matches!(o, AuthOutcome::Granted(_))
    }

    /// `key_01ABC` whose key hash is 0xab × 32, as in the backend's vector.
    fn table() -> KeyTable {
        let t = KeyTable::new();
        let mut r = record("key_01ABC", K1, S1);
        r.key_hash = Digest([0xab; 32]);
        t.replace_all(vec![r], 1);
        t
    }

    #[test]
    fn presented_only_for_wpg_bearer_values() {
        assert_eq!(
            presented(Some(b"Bearer wpg_key_1.5.x")),
            Some(&b"wpg_key_1.5.x"[..])
        );
        assert_eq!(
            presented(Some(b"bearer  wpg_key_1.5.x ")),
            Some(&b"wpg_key_1.5.x"[..])
        );
        assert_eq!(presented(Some(format!("Bearer {K1}").as_bytes())), None);
        assert_eq!(presented(Some(b"Basic wpg_x")), None);
        assert_eq!(presented(Some(b"Bearer")), None);
        assert_eq!(presented(None), None);
    }

    #[test]
    fn the_backend_vector_verifies_until_it_expires() {
        let t = table();
        let now = 1_699_999_000_000;
        assert!(granted(&check(&t, TOKEN, PINNED.as_bytes(), ip(), now)));
        assert!(!granted(&check(
            &t,
            TOKEN,
            PINNED.as_bytes(),
            ip(),
            1_700_000_000_000
        )));
        // Another internal token, a changed expiry, a flipped MAC character: all invalid.
        assert!(!granted(&check(
            &t,
            &"u".repeat(32),
            PINNED.as_bytes(),
            ip(),
            now
        )));
        let later = PINNED.replace(".1700000000.", ".1800000000.");
        assert!(!granted(&check(&t, TOKEN, later.as_bytes(), ip(), now)));
        let mut flipped = PINNED.as_bytes().to_vec();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(!granted(&check(&t, TOKEN, &flipped, ip(), now)));
    }

    #[test]
    fn rotation_revocation_and_whitelist_apply() {
        let now = 1_699_999_000_000;
        let t = table();
        let mut r = (*t.get_by_id("key_01ABC").unwrap()).clone();
        r.whitelist = Whitelist::compile(&["10.0.0.0/8"]).0;
        t.upsert(vec![r.clone()], 2);
        match check(&t, TOKEN, PINNED.as_bytes(), ip(), now) {
            AuthOutcome::Denied(_, refusal) => assert_eq!(refusal.code(), "ip_not_allowed"),
            other => panic!("{other:?}"),
        }
        r.whitelist = Whitelist::any();
        r.status = KeyStatus::Revoked;
        t.upsert(vec![r.clone()], 3);
        match check(&t, TOKEN, PINNED.as_bytes(), ip(), now) {
            AuthOutcome::Denied(_, refusal) => assert_eq!(refusal.code(), "key_revoked"),
            other => panic!("{other:?}"),
        }
        // Rotated: the key hash the credential was bound to is gone.
        r.status = KeyStatus::Active;
        r.key_hash = Digest::of(K2.as_bytes());
        t.upsert(vec![r], 4);
        assert!(matches!(
            check(&t, TOKEN, PINNED.as_bytes(), ip(), now),
            AuthOutcome::Invalid
        ));
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        let t = table();
        for bad in [
            "wpg_",
            "wpg_key_01ABC",
            "wpg_key_01ABC.1700000000",
            "wpg_key_01ABC.-1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "wpg_key_01ABC.1700000000.short",
            "wpg_key_unknown.1700000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "wpg_key_01ABC.1700000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.x",
        ] {
            assert!(
                matches!(
                    check(&t, TOKEN, bad.as_bytes(), ip(), 0),
                    AuthOutcome::Invalid
                ),
                "{bad}"
            );
        }
        let huge = format!("wpg_{}", "a".repeat(500));
        assert!(matches!(
            check(&t, TOKEN, huge.as_bytes(), ip(), 0),
            AuthOutcome::Invalid
        ));
    }
}
