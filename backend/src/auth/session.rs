//! Console sessions: an HttpOnly, SameSite=Strict cookie holding a random token (only its hash is
//! stored) plus a CSRF token that every state-changing admin call must echo in `X-CSRF-Token`.

use axum::{extract::FromRequestParts, http::request::Parts};
use subtle::ConstantTimeEq;

use crate::{auth::sha256_hex, clock::now_ms, error::ApiError, state::AppState};

pub const COOKIE: &str = "wiz_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A logged-in console user. Every admin query is scoped by `account_id`.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub token_hash: String,
    pub user_id: String,
    pub account_id: String,
    pub csrf_token: String,
}

/// The session cookie's value, if the request has one.
pub fn cookie_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthenticated =
            || ApiError::unauthorized("not_authenticated", "log in first (POST /admin/session)");
        let token = cookie_token(parts).ok_or_else(unauthenticated)?;
        let token_hash = sha256_hex(&token);
        let row: Option<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT user_id, account_id, csrf_token, created_at, expires_at FROM sessions \
             WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(&state.db)
        .await?;
        let Some((user_id, account_id, csrf_token, created_at, expires_at)) = row else {
            return Err(unauthenticated());
        };
        let config = &state.config.session;
        let now = now_ms();
        // The absolute end is checked on its own too, so lowering `absolute_lifetime` also ends
        // sessions opened before.
        let ends_at = created_at.saturating_add(config.absolute_lifetime.as_millis() as i64);
        if expires_at <= now || ends_at <= now {
            return Err(ApiError::unauthorized(
                "session_expired",
                "the session has expired; log in again",
            ));
        }
        // Sliding expiry: a session in use lives on, up to its absolute end. Written at most
        // once per half-TTL, so ordinary requests stay read-only.
        let ttl_ms = config.ttl.as_millis() as i64;
        let extended = (now + ttl_ms).min(ends_at);
        if expires_at - now < ttl_ms / 2 && extended > expires_at {
            sqlx::query("UPDATE sessions SET expires_at = $1 WHERE token_hash = $2")
                .bind(extended)
                .bind(&token_hash)
                .execute(&state.db)
                .await?;
        }
        let safe = matches!(
            parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if !safe {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(presented.ct_eq(csrf_token.as_bytes())) {
                return Err(ApiError::forbidden(
                    "csrf_failed",
                    "missing or wrong X-CSRF-Token header",
                ));
            }
        }
        Ok(AdminSession {
            token_hash,
            user_id,
            account_id,
            csrf_token,
        })
    }
}
