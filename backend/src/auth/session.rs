//! Console sessions: an HttpOnly, SameSite=Strict cookie holding a random token (only its hash is
//! stored) plus a CSRF token that every state-changing admin call must echo in `X-CSRF-Token`.

use axum::{extract::FromRequestParts, http::request::Parts};
use base64::Engine;
use rand::{rngs::OsRng, RngCore};
use sqlx::AnyConnection;
use subtle::ConstantTimeEq;

use crate::{auth::sha256_hex, clock::now_ms, db::Db, error::ApiError, state::AppState};

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

/// The user an email logs in as, with the hash the password is checked against.
#[derive(sqlx::FromRow)]
pub struct LoginUser {
    pub id: String,
    pub account_id: String,
    pub password_hash: String,
}

/// The user with this (normalized) email, if any.
pub async fn find_login(db: &Db, email: &str) -> Result<Option<LoginUser>, sqlx::Error> {
    sqlx::query_as("SELECT id, account_id, password_hash FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(db)
        .await
}

/// A session just opened: the cookie's token (only its hash is stored) and the CSRF token.
pub struct Opened {
    pub token: String,
    pub csrf_token: String,
}

/// 32 bytes from the OS CSPRNG, URL-safe base64: a cookie value or CSRF token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Opens a session for a user whose login succeeded, valid for `ttl_ms` (on the caller's
/// transaction). Expired sessions go whenever someone logs in; no separate sweeper needed.
pub async fn open(
    conn: &mut AnyConnection,
    user_id: &str,
    account_id: &str,
    ttl_ms: i64,
) -> Result<Opened, sqlx::Error> {
    let opened = Opened {
        token: random_token(),
        csrf_token: random_token(),
    };
    let now = now_ms();
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, account_id, csrf_token, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sha256_hex(&opened.token))
    .bind(user_id)
    .bind(account_id)
    .bind(&opened.csrf_token)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(&mut *conn)
    .await?;
    Ok(opened)
}

/// Ends a session (logout).
pub async fn close(db: &Db, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// A stored session, as the extractor checks it.
#[derive(sqlx::FromRow)]
struct StoredSession {
    user_id: String,
    account_id: String,
    csrf_token: String,
    created_at: i64,
    expires_at: i64,
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
        let row: Option<StoredSession> = sqlx::query_as(
            "SELECT user_id, account_id, csrf_token, created_at, expires_at FROM sessions \
             WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(&state.db)
        .await?;
        let Some(StoredSession {
            user_id,
            account_id,
            csrf_token,
            created_at,
            expires_at,
        }) = row
        else {
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
