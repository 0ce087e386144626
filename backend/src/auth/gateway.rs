//! What the gateway vouches for. Every request the gateway forwards carries a proof
//! (docs/internal-api.md, "Forwarded requests") binding its method, path and query, scheme, the
//! client IP the gateway resolved, the API key and account (empty on key-less routes), the
//! request id and the time. One layer in front of every route checks it and records the
//! request's [`Origin`]: the proven client IP, or the TCP peer when there is no valid proof (a
//! caller on the private listener, or a forgery). `/v1` additionally requires a proof naming a key.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{auth::token_keys::PROOF_VERSION, error::ApiError, state::AppState};

pub const KEY_ID: &str = "x-wiz-key-id";
pub const ACCOUNT_ID: &str = "x-wiz-account-id";
pub const KEY_PREFIX: &str = "x-wiz-key-prefix";
pub const CLIENT_IP: &str = "x-wiz-client-ip";
pub const SCHEME: &str = "x-wiz-scheme";
pub const PROOF: &str = "x-wiz-gateway-proof";

/// How far the proof's timestamp may be from our clock: a captured proof is worth at most this
/// long, and only for the exact request it was made for.
pub const MAX_SKEW_SECS: i64 = 30;

/// The API key a `/v1` request was made with, as vouched for by the gateway.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub account_id: String,
    pub key_prefix: String,
    pub request_id: String,
}

/// Where a request came from, as far as the backend can tell. Present on every request.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The gateway's resolved client IP if the proof verified, else the TCP peer (`None` only
    /// without a socket, in handler tests).
    pub client_ip: Option<IpAddr>,
    /// `true` when a valid proof says the client reached the gateway over TLS.
    pub https: bool,
    pub proof: ProofStatus,
}

#[derive(Debug, Clone)]
pub enum ProofStatus {
    Missing,
    Invalid,
    /// Verified; `caller` is `Some` when the gateway authenticated an API key.
    Valid {
        caller: Option<Caller>,
    },
}

/// Outermost layer: records the request's [`Origin`].
pub async fn identify(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let origin = origin(
        &request,
        &state.token_keys.proof_key,
        peer,
        crate::clock::now_secs(),
    );
    request.extensions_mut().insert(origin);
    next.run(request).await
}

/// Middleware for the `/v1` router: only requests the gateway proved for an API key pass; the
/// `Caller` is stored in the request.
pub async fn require(mut request: Request, next: Next) -> Response {
    let status = request
        .extensions()
        .get::<Origin>()
        .map(|o| o.proof.clone());
    match status {
        Some(ProofStatus::Valid {
            caller: Some(caller),
        }) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Some(ProofStatus::Invalid) => {
            ApiError::unauthorized("invalid_gateway_proof", "gateway proof does not verify")
                .into_response()
        }
        _ => missing().into_response(),
    }
}

fn missing() -> ApiError {
    ApiError::unauthorized(
        "missing_gateway_proof",
        "request did not come through the gateway",
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(missing)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Origin>().cloned().unwrap_or(Origin {
            client_ip: None,
            https: false,
            proof: ProofStatus::Missing,
        }))
    }
}

/// Checks the proof of `request` against `proof_key` at time `now`.
pub fn origin(request: &Request, proof_key: &[u8], peer: Option<IpAddr>, now: i64) -> Origin {
    let unproven = |proof| Origin {
        client_ip: peer,
        https: false,
        proof,
    };
    let headers = request.headers();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(proof) = get(PROOF) else {
        return unproven(ProofStatus::Missing);
    };
    let mut parts = proof.splitn(3, ',');
    let (Some(PROOF_VERSION), Some(t), Some(sig)) = (parts.next(), parts.next(), parts.next())
    else {
        return unproven(ProofStatus::Invalid);
    };
    let (Ok(t), Ok(sig)) = (t.parse::<i64>(), hex::decode(sig)) else {
        return unproven(ProofStatus::Invalid);
    };
    if (now - t).abs() > MAX_SKEW_SECS {
        return unproven(ProofStatus::Invalid);
    }
    let client_ip = get(CLIENT_IP).unwrap_or_default();
    let scheme = get(SCHEME).unwrap_or_default();
    let key_id = get(KEY_ID).unwrap_or_default();
    let account_id = get(ACCOUNT_ID).unwrap_or_default();
    let request_id = get("x-request-id").unwrap_or_default();
    let message = [
        PROOF_VERSION,
        &t.to_string(),
        scheme,
        request.method().as_str(),
        request.uri().path_and_query().map_or("/", |p| p.as_str()),
        client_ip,
        key_id,
        account_id,
        request_id,
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(proof_key).expect("any key length");
    mac.update(message.as_bytes());
    // verify_slice compares in constant time.
    if mac.verify_slice(&sig).is_err() {
        return unproven(ProofStatus::Invalid);
    }
    let Ok(client_ip) = client_ip.parse::<IpAddr>() else {
        return unproven(ProofStatus::Invalid);
    };
    let caller = (!key_id.is_empty() && !account_id.is_empty()).then(|| Caller {
        key_id: key_id.to_string(),
        account_id: account_id.to_string(),
        key_prefix: get(KEY_PREFIX).unwrap_or_default().to_string(),
        request_id: request_id.to_string(),
    });
    Origin {
        client_ip: Some(client_ip),
        https: scheme == "https",
        proof: ProofStatus::Valid { caller },
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;
    use crate::auth::token_keys::TokenKeys;
    use crate::testing::{gateway_proof, ProofFields};

    const TOKEN: &str = "tttttttttttttttttttttttttttttttt";

    fn request(method: &str, uri: &str, fields: &ProofFields<'_>, proof: &str) -> Request {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(PROOF, proof)
            .header(CLIENT_IP, fields.client_ip)
            .header(SCHEME, fields.scheme)
            .header("x-request-id", fields.request_id);
        if !fields.key_id.is_empty() {
            builder = builder
                .header(KEY_ID, fields.key_id)
                .header(ACCOUNT_ID, fields.account_id);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_proof_holds_only_for_its_request_and_30_seconds() {
        let keys = TokenKeys::derive(TOKEN);
        let peer: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let fields = ProofFields {
            unix_secs: 1000,
            scheme: "http",
            method: "POST",
            path_and_query: "/v1/messages?x=1",
            client_ip: "203.0.113.7",
            key_id: "key_1",
            account_id: "acc_1",
            request_id: "req_1",
        };
        let proof = gateway_proof(TOKEN, &fields);
        let good = origin(
            &request("POST", "/v1/messages?x=1", &fields, &proof),
            &keys.proof_key,
            peer,
            1030,
        );
        assert_eq!(good.client_ip, Some("203.0.113.7".parse().unwrap()));
        let ProofStatus::Valid { caller: Some(c) } = good.proof else {
            panic!("{good:?}")
        };
        assert_eq!(c.account_id, "acc_1");

        let cases = [
            ("GET", "/v1/messages?x=1", fields, 1000),
            ("POST", "/v1/messages?x=2", fields, 1000),
            ("POST", "/v1/contacts", fields, 1000),
            ("POST", "/v1/messages?x=1", fields, 1031),
            ("POST", "/v1/messages?x=1", fields, 969),
            (
                "POST",
                "/v1/messages?x=1",
                ProofFields {
                    client_ip: "203.0.113.8",
                    ..fields
                },
                1000,
            ),
            (
                "POST",
                "/v1/messages?x=1",
                ProofFields {
                    account_id: "acc_2",
                    ..fields
                },
                1000,
            ),
        ];
        for (method, uri, presented, now) in cases {
            let o = origin(
                &request(method, uri, &presented, &proof),
                &keys.proof_key,
                peer,
                now,
            );
            assert!(
                matches!(o.proof, ProofStatus::Invalid),
                "{method} {uri} {now}"
            );
            assert_eq!(o.client_ip, peer, "an unproven request is its TCP peer");
        }
        // The raw token is not the proof key.
        let o = origin(
            &request("POST", "/v1/messages?x=1", &fields, &proof),
            TOKEN.as_bytes(),
            peer,
            1000,
        );
        assert!(matches!(o.proof, ProofStatus::Invalid));

        // Key-less routes are proven too, with empty key and account.
        let console = ProofFields {
            method: "GET",
            path_and_query: "/admin/session",
            scheme: "https",
            key_id: "",
            account_id: "",
            ..fields
        };
        let o = origin(
            &request(
                "GET",
                "/admin/session",
                &console,
                &gateway_proof(TOKEN, &console),
            ),
            &keys.proof_key,
            peer,
            1000,
        );
        assert!(matches!(o.proof, ProofStatus::Valid { caller: None }));
        assert!(o.https);
        assert_eq!(o.client_ip, Some("203.0.113.7".parse().unwrap()));

        let bare = Request::builder().uri("/").body(Body::empty()).unwrap();
        let o = origin(&bare, &keys.proof_key, peer, 1000);
        assert!(matches!(o.proof, ProofStatus::Missing));
        assert_eq!(o.client_ip, peer);
    }
}
