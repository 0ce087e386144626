//! How the gateway authenticates itself to the backend (docs/internal-api.md). Two keys are
//! derived from the shared `internal_token` with HKDF-SHA256 under distinct labels, so that
//! neither value that travels (the `/internal` bearer, the proofs) reveals the other:
//!
//! - the bearer sent as `x-wiz-internal-token` on the gateway's own `/internal` calls;
//! - the key of the proof added to every request the gateway forwards, which binds the request's
//!   method, path and query, scheme, resolved client IP, key and account ids, request id and time.
//!
//! The proof key is derived once per configuration ([`ProofKey`], kept in the config snapshot)
//! as a keyed HMAC state: deriving it and keying the HMAC per request cost ~10 SHA-256 blocks,
//! several times the proof itself.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const BEARER_LABEL: &str = "wiz internal-api bearer v1";
pub const PROOF_KEY_LABEL: &str = "wiz gateway-proof v2";
pub const PROOF_VERSION: &str = "v2";

fn derive(internal_token: &str, label: &str) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, internal_token.as_bytes())
        .expand(label.as_bytes(), &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// The value of `x-wiz-internal-token` on `/internal` calls: lowercase hex of the derived bearer.
pub fn internal_bearer(internal_token: &str) -> String {
    hex::encode(derive(internal_token, BEARER_LABEL))
}

/// What a proof binds. Empty `key_id` / `account_id` on routes forwarded without an API key.
#[derive(Debug, Clone, Copy)]
pub struct ProofInput<'a> {
    pub unix_secs: i64,
    pub scheme: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub client_ip: &'a str,
    pub key_id: &'a str,
    pub account_id: &'a str,
    pub request_id: &'a str,
}

/// The proof key, derived from the token, as an HMAC state already keyed with it: each proof
/// clones it and hashes only its message.
#[derive(Clone)]
pub struct ProofKey(Hmac<Sha256>);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(…)")
    }
}

impl ProofKey {
    pub fn derive(internal_token: &str) -> ProofKey {
        ProofKey(
            Hmac::<Sha256>::new_from_slice(&derive(internal_token, PROOF_KEY_LABEL))
                .expect("HMAC accepts keys of any length"),
        )
    }

    /// `v2,<t>,<hex HMAC-SHA256(proof key, message)>`. The message is the fields joined by
    /// `\n`, a byte none of them can contain (they are header values or an HTTP request
    /// target), so no two inputs share a message. Fed to the MAC piece by piece: no allocation
    /// but the returned value.
    pub fn prove(&self, input: &ProofInput<'_>) -> String {
        let mut secs = itoa::Buffer::new();
        let secs = secs.format(input.unix_secs);
        let mut mac = self.0.clone();
        mac.update(PROOF_VERSION.as_bytes());
        for field in [
            secs,
            input.scheme,
            input.method,
            input.path_and_query,
            input.client_ip,
            input.key_id,
            input.account_id,
            input.request_id,
        ] {
            mac.update(b"\n");
            mac.update(field.as_bytes());
        }
        let mut hex_mac = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex_mac)
            .expect("64 hex digits for 32 bytes");
        let mut out = String::with_capacity(PROOF_VERSION.len() + secs.len() + 2 + 64);
        out.push_str(PROOF_VERSION);
        out.push(',');
        out.push_str(secs);
        out.push(',');
        out.push_str(std::str::from_utf8(&hex_mac).expect("hex is ASCII"));
        out
    }
}

/// `v2,<t>,<hex HMAC-SHA256(proof key, message)>`, deriving the key first (tests, tools).
pub fn gateway_proof(internal_token: &str, input: &ProofInput<'_>) -> String {
    ProofKey::derive(internal_token).prove(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tttttttttttttttttttttttttttttttt";

    #[test]
    fn bearer_and_proof_key_are_distinct_derivations() {
        let bearer = internal_bearer(TOKEN);
        assert_eq!(bearer.len(), 64);
        assert_ne!(bearer, hex::encode(derive(TOKEN, PROOF_KEY_LABEL)));
        assert_ne!(bearer.as_bytes(), TOKEN.as_bytes());
        // Independent HKDF computation (RFC 5869 with an all-zero salt when none is given).
        let prk = {
            let mut mac = Hmac::<Sha256>::new_from_slice(&[0u8; 32]).unwrap();
            mac.update(TOKEN.as_bytes());
            mac.finalize().into_bytes()
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&prk).unwrap();
        mac.update(BEARER_LABEL.as_bytes());
        mac.update(&[1]);
        assert_eq!(bearer, hex::encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn proof_binds_every_field() {
        let base = ProofInput {
            unix_secs: 1_700_000_000,
            scheme: "http",
            method: "POST",
            path_and_query: "/v1/messages?x=1",
            client_ip: "203.0.113.7",
            key_id: "key_1",
            account_id: "acc_1",
            request_id: "req1",
        };
        let proof = gateway_proof(TOKEN, &base);
        let parts: Vec<_> = proof.split(',').collect();
        assert_eq!(parts[..2], ["v2", "1700000000"]);
        let mut mac = Hmac::<Sha256>::new_from_slice(&derive(TOKEN, PROOF_KEY_LABEL)).unwrap();
        mac.update(
            b"v2\n1700000000\nhttp\nPOST\n/v1/messages?x=1\n203.0.113.7\nkey_1\nacc_1\nreq1",
        );
        assert_eq!(parts[2], hex::encode(mac.finalize().into_bytes()));
        let variants = [
            ProofInput {
                unix_secs: 1_700_000_001,
                ..base
            },
            ProofInput {
                scheme: "https",
                ..base
            },
            ProofInput {
                method: "GET",
                ..base
            },
            ProofInput {
                path_and_query: "/v1/messages?x=2",
                ..base
            },
            ProofInput {
                client_ip: "203.0.113.8",
                ..base
            },
            ProofInput { key_id: "", ..base },
            ProofInput {
                account_id: "acc_2",
                ..base
            },
            ProofInput {
                request_id: "req2",
                ..base
            },
        ];
        for v in variants {
            assert_ne!(gateway_proof(TOKEN, &v), proof, "{v:?}");
        }
    }
}
