//! Two keys derived from the shared `internal_token` with HKDF-SHA256 under distinct labels
//! (docs/internal-api.md): the bearer the gateway presents on `/internal/*`, and the key of the
//! proofs on forwarded requests. A leaked bearer (it travels on every key-sync call) does not let
//! anyone forge proofs, and proofs reveal nothing about the bearer.

use hkdf::Hkdf;
use sha2::Sha256;

pub const BEARER_LABEL: &str = "wiz internal-api bearer v1";
pub const PROOF_KEY_LABEL: &str = "wiz gateway-proof v2";
pub const PROOF_VERSION: &str = "v2";

pub struct TokenKeys {
    /// Lowercase hex, as presented in `x-wiz-internal-token`.
    pub bearer: String,
    pub proof_key: [u8; 32],
}

impl TokenKeys {
    pub fn derive(internal_token: &str) -> Self {
        Self {
            bearer: hex::encode(derive(internal_token, BEARER_LABEL)),
            proof_key: derive(internal_token, PROOF_KEY_LABEL),
        }
    }
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(***)")
    }
}

pub fn derive(internal_token: &str, label: &str) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, internal_token.as_bytes())
        .expand(label.as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}
