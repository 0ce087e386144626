//! Who is calling: the gateway on behalf of an API key (`/v1`, proved by an HMAC the gateway
//! adds to every request it forwards, which also proves the client IP), a console user (`/admin`, session cookie + CSRF token), or the gateway itself
//! (`/internal`, shared token).

pub mod gateway;
pub mod internal;
pub mod password;
pub mod session;
pub mod token_keys;

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256, the form every stored credential hash takes.
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}
