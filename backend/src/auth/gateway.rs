//! `/v1` requests are served only when the gateway vouches for them: it authenticated the API key
//! and signs the identity it forwards (docs/internal-api.md, "Forwarded /v1 requests").

use axum::{
    extract::{FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{error::ApiError, state::AppState};

pub const KEY_ID: &str = "x-wiz-key-id";
pub const ACCOUNT_ID: &str = "x-wiz-account-id";
pub const KEY_PREFIX: &str = "x-wiz-key-prefix";
pub const CLIENT_IP: &str = "x-wiz-client-ip";
pub const PROOF: &str = "x-wiz-gateway-proof";

/// How far the proof's timestamp may be from our clock.
const MAX_SKEW_SECS: i64 = 300;

/// The API key a `/v1` request was made with, as vouched for by the gateway.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub account_id: String,
    pub key_prefix: String,
    pub request_id: String,
}

/// Middleware for the `/v1` router: verifies the proof and stores the `Caller` in the request.
pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match verify(request.headers(), &state.config.internal_token, now_secs()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::unauthorized(
                "missing_gateway_proof",
                "request did not come through the gateway",
            )
        })
    }
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn verify(headers: &http::HeaderMap, token: &str, now: i64) -> Result<Caller, ApiError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let missing = || {
        ApiError::unauthorized(
            "missing_gateway_proof",
            "request did not come through the gateway",
        )
    };
    let invalid =
        || ApiError::unauthorized("invalid_gateway_proof", "gateway proof does not verify");
    let proof = get(PROOF).ok_or_else(missing)?;
    let key_id = get(KEY_ID).ok_or_else(missing)?;
    let account_id = get(ACCOUNT_ID).ok_or_else(missing)?;
    let request_id = get("x-request-id").unwrap_or_default();

    let mut parts = proof.splitn(3, ',');
    let (Some("v1"), Some(t), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let t: i64 = t.parse().map_err(|_| invalid())?;
    if (now - t).abs() > MAX_SKEW_SECS {
        return Err(invalid());
    }
    let sig = hex::decode(sig).map_err(|_| invalid())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{request_id}.{key_id}.{account_id}").as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&sig).map_err(|_| invalid())?;
    Ok(Caller {
        key_id: key_id.to_string(),
        account_id: account_id.to_string(),
        key_prefix: get(KEY_PREFIX).unwrap_or_default().to_string(),
        request_id: request_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(token: &str, t: i64, rid: &str, key: &str, acc: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(format!("{t}.{rid}.{key}.{acc}").as_bytes());
        format!("v1,{t},{}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(proof: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(PROOF, proof.parse().unwrap());
        h.insert(KEY_ID, "key_1".parse().unwrap());
        h.insert(ACCOUNT_ID, "acc_1".parse().unwrap());
        h.insert("x-request-id", "req_1".parse().unwrap());
        h
    }

    #[test]
    fn accepts_a_fresh_proof_and_rejects_tampering() {
        let token = "t".repeat(32);
        let proof = sign(&token, 1000, "req_1", "key_1", "acc_1");
        let caller = verify(&headers(&proof), &token, 1010).unwrap();
        assert_eq!(caller.account_id, "acc_1");

        let mut h = headers(&proof);
        h.insert(ACCOUNT_ID, "acc_2".parse().unwrap());
        assert_eq!(
            verify(&h, &token, 1010).unwrap_err().code(),
            "invalid_gateway_proof"
        );
        assert_eq!(
            verify(&headers(&proof), &token, 2000).unwrap_err().code(),
            "invalid_gateway_proof"
        );
        assert_eq!(
            verify(&headers(&proof), &"u".repeat(32), 1010)
                .unwrap_err()
                .code(),
            "invalid_gateway_proof"
        );
        assert_eq!(
            verify(&http::HeaderMap::new(), &token, 1010)
                .unwrap_err()
                .code(),
            "missing_gateway_proof"
        );
    }
}
