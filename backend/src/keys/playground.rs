//! Playground credentials (issue 13): the console's Playground sends live requests for a key the
//! user picked from a list, without the user pasting the key and secret (only hashes are stored,
//! so the console could not show them anyway).
//!
//! The backend mints `wpg_<key_id>.<expires_unix>.<mac>`, where `mac` is the unpadded base64url
//! HMAC-SHA256, under a key derived from `internal_token` for this purpose alone, of
//! `"<key_id>.<expires_unix>.<key_hash hex>"`. The gateway recomputes it from its own copy of the
//! token and the key's current `key_hash` in its key table, then runs every check and limit of
//! that key. Nothing is stored: the credential dies at `expires`, when the key is revoked (status)
//! and when it is rotated (the key hash it was bound to changes). docs/internal-api.md is the wire
//! contract; the gateway's side is `gateway/src/playground.rs`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TOKEN_PREFIX: &str = "wpg_";
/// Domain separation: a MAC under this derived key can never pass for a gateway proof or
/// anything else signed with the internal token.
const DERIVATION_LABEL: &[u8] = b"wiz-edge playground credential v1";

/// `HMAC-SHA256(internal_token, label)`: the key the playground MACs are made with.
fn derived_key(internal_token: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(internal_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(DERIVATION_LABEL);
    mac.finalize().into_bytes().into()
}

/// The credential for `key_id` (whose stored key hash is `key_hash_hex`), valid until
/// `expires_unix` (seconds).
pub fn mint(internal_token: &str, key_id: &str, key_hash_hex: &str, expires_unix: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&derived_key(internal_token))
        .expect("HMAC accepts keys of any length");
    mac.update(format!("{key_id}.{expires_unix}.{key_hash_hex}").as_bytes());
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{TOKEN_PREFIX}{key_id}.{expires_unix}.{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned so the gateway's verifier (which has the same vector) and this side cannot drift.
    #[test]
    fn known_vector() {
        let token = mint(
            &"t".repeat(32),
            "key_01ABC",
            &"ab".repeat(32),
            1_700_000_000,
        );
        assert!(token.starts_with("wpg_key_01ABC.1700000000."));
        let mut outer = Hmac::<Sha256>::new_from_slice(&derived_key(&"t".repeat(32))).unwrap();
        outer.update(format!("key_01ABC.1700000000.{}", "ab".repeat(32)).as_bytes());
        let expected =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(outer.finalize().into_bytes());
        assert_eq!(token.rsplit('.').next().unwrap(), expected);
        assert_eq!(token, PINNED);
    }

    /// The same string is pinned in `gateway/src/playground.rs`.
    pub const PINNED: &str = "wpg_key_01ABC.1700000000.zdI8Yq2ZEwx-7JdRhp51DOtv8IPsbKUQhds2R303Deo";
}
