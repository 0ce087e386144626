//! `/admin/keys` (SPEC §3, §6): the console manages its account's API keys. The plain key and
//! secret appear only in the answers of create and rotate. Every change takes a new key table
//! version and wakes the gateways' long polls after commit.

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::routes::extract::{JsonBody, PathParams};
use crate::{
    auth::session::AdminSession,
    clock::{now_ms, rfc3339},
    error::{ApiError, ApiResult},
    keys::{
        self,
        service::{KeyChanges, KeyError, Keys, NewKey},
        store::{self, utc_day, KeyRecord},
        Credentials, KeyView,
    },
    openapi::ErrorBody,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/{id}", get(fetch).patch(patch))
        .route("/admin/keys/{id}/revoke", post(revoke))
        .route("/admin/keys/{id}/rotate", post(rotate))
        .route("/admin/keys/{id}/usage", get(usage))
        .route(
            "/admin/keys/{id}/playground-credential",
            post(playground_credential),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, fetch, patch, revoke, rotate, usage, playground_credential),
    components(schemas(KeyView, KeyList, NewCredentials, CreateBody, PatchBody, RotateBody,
                       KeyUsage, DayCount, MinuteCount, PlaygroundCredential)),
    tags((name = "admin: keys", description = "API keys of the session's account"))
)]
pub struct ApiDoc;

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    data: Vec<KeyView>,
    next_cursor: Option<String>,
}

/// A key as created or rotated: the listed fields plus, this once, `key` and `secret`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // only its schema is used
pub struct NewCredentials {
    #[serde(flatten)]
    view: KeyView,
    /// `pk_live_` + 32 base62 characters.
    key: String,
    /// `sk_live_` + 40 base62 characters.
    secret: String,
}

/// `GET /admin/keys/{id}/usage`
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct KeyUsage {
    key_id: String,
    /// Today, UTC (`YYYY-MM-DD`).
    day: String,
    /// Accepted requests today.
    today: i64,
    daily_limit: i64,
    rate_limit_per_minute: i64,
    last_used_at: Option<String>,
    /// The last 30 UTC days, oldest first, today last.
    days: Vec<DayCount>,
    /// The last 60 minutes, oldest first, the current minute last.
    minutes: Vec<MinuteCount>,
    /// Today's refusals by `error.code`.
    #[schema(value_type = Object)]
    refusals: serde_json::Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DayCount {
    date: String,
    count: i64,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct MinuteCount {
    /// Start of the minute, RFC 3339.
    minute: String,
    count: i64,
}

/// The HTTP answer of each refusal of the key rules.
impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::NotFound => ApiError::not_found("key"),
            KeyError::Revoked => {
                ApiError::conflict("key_revoked", "the key is revoked and cannot be changed")
            }
            e @ KeyError::PlanRequired(_) => ApiError::forbidden("plan_required", e.to_string()),
            KeyError::NoAccount => ApiError::unauthorized("not_authenticated", "log in first"),
            KeyError::Refused(refusal) => refusal.into(),
            KeyError::Db(e) => e.into(),
        }
    }
}

fn keys_of(state: &AppState) -> Keys<'_> {
    Keys {
        db: &state.db,
        key_version: &state.key_version,
    }
}

async fn load(
    conn: &mut sqlx::AnyConnection,
    session: &AdminSession,
    id: &str,
    now: i64,
) -> ApiResult<KeyRecord> {
    Ok(store::get(conn, &session.account_id, id, &utc_day(now))
        .await?
        .ok_or(KeyError::NotFound)?)
}

/// List the account's keys
#[utoipa::path(
    get, path = "/admin/keys", operation_id = "listApiKeys", tag = "admin: keys",
    security(("session" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody))
)]
async fn list(State(state): State<AppState>, session: AdminSession) -> ApiResult<Json<KeyList>> {
    let now = now_ms();
    let records = keys_of(&state).list(&session.account_id, now).await?;
    let data: Vec<KeyView> = records
        .iter()
        .map(|r| KeyView::from_record(r, now))
        .collect();
    Ok(Json(KeyList {
        data,
        next_cursor: None,
    }))
}

/// Get a key
#[utoipa::path(
    get, path = "/admin/keys/{id}", operation_id = "getApiKey", tag = "admin: keys",
    params(("id" = String, Path, description = "`key_...`")),
    security(("session" = [])),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody))
)]
async fn fetch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<KeyView>> {
    let now = now_ms();
    let record = keys_of(&state).get(&session.account_id, &id, now).await?;
    Ok(Json(KeyView::from_record(&record, now)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ApiKeyCreate)]
pub struct CreateBody {
    /// 1 to 100 characters.
    name: String,
    /// 1 to 100000, default 60.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    rate_limit_per_minute: Option<Value>,
    /// 1 to 100000000, default 1000.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    daily_limit: Option<Value>,
    /// IPv4/IPv6 addresses and CIDRs; empty (default) allows any address.
    #[serde(default)]
    ip_whitelist: Option<Vec<String>>,
    /// RFC 3339, in the future; the key stops working then.
    #[serde(default)]
    expires_at: Option<String>,
}

/// The view plus, this once, the plain key and secret.
fn with_credentials(view: KeyView, credentials: &Credentials) -> Value {
    let mut value = serde_json::to_value(view).expect("key view serializes");
    value["key"] = Value::from(credentials.key.as_str());
    value["secret"] = Value::from(credentials.secret.as_str());
    value
}

/// Create a key (answers `key` and `secret`, this once)
#[utoipa::path(
    post, path = "/admin/keys", operation_id = "createApiKey", tag = "admin: keys",
    request_body = CreateBody,
    security(("session" = [])),
    responses(
        (status = 201, body = NewCredentials),
        (status = 403, description = "`plan_required` on the free plan, `csrf_failed`", body = ErrorBody),
        (status = 422, description = "`invalid_name`, `invalid_limit`, `invalid_ip_whitelist`, `invalid_expires_at`; `too_many_api_keys`: the account has `account_limits.max_api_keys` keys that are not revoked already (default 100)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    session: AdminSession,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let now = now_ms();
    let new = NewKey {
        name: body.name,
        rate_limit_per_minute: body.rate_limit_per_minute,
        daily_limit: body.daily_limit,
        ip_whitelist: body.ip_whitelist,
        expires_at: body.expires_at,
    };
    let max_keys = state.config.account_limits.max_api_keys;
    let issued = keys_of(&state)
        .create(&session.account_id, new, max_keys, now)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(with_credentials(
            KeyView::from_record(&issued.record, now),
            &issued.credentials,
        )),
    ))
}

/// `Some(None)` for an explicit `null`, `None` (via `default`) for an absent field.
fn explicit_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ApiKeyPatch)]
pub struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    rate_limit_per_minute: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    daily_limit: Option<Value>,
    #[serde(default)]
    ip_whitelist: Option<Vec<String>>,
    /// `null` removes the expiry.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
}

/// Change a key's name, limits, whitelist or expiry
#[utoipa::path(
    patch, path = "/admin/keys/{id}", operation_id = "updateApiKey", tag = "admin: keys",
    params(("id" = String, Path, description = "`key_...`")),
    request_body = PatchBody,
    security(("session" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`key_revoked`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
async fn patch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> ApiResult<Json<KeyView>> {
    let now = now_ms();
    let changes = KeyChanges {
        name: body.name,
        rate_limit_per_minute: body.rate_limit_per_minute,
        daily_limit: body.daily_limit,
        ip_whitelist: body.ip_whitelist,
        expires_at: body.expires_at,
    };
    let record = keys_of(&state)
        .update(&session.account_id, &id, changes, now)
        .await?;
    Ok(Json(KeyView::from_record(&record, now)))
}

/// Revoke a key (for good)
#[utoipa::path(
    post, path = "/admin/keys/{id}/revoke", operation_id = "revokeApiKey", tag = "admin: keys",
    params(("id" = String, Path, description = "`key_...`")),
    security(("session" = [])),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody))
)]
async fn revoke(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<KeyView>> {
    let now = now_ms();
    let record = keys_of(&state)
        .revoke(&session.account_id, &id, now)
        .await?;
    Ok(Json(KeyView::from_record(&record, now)))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old pair keeps working: 0 (default) to 604800.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    grace_seconds: Option<Value>,
}

/// An optional JSON body: empty means all defaults (the console may post nothing).
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::bad_request("invalid_body", e.to_string())
        } else {
            ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            )
        }
    })
}

/// Rotate a key's credentials (answers the new `key` and `secret`, this once)
#[utoipa::path(
    post, path = "/admin/keys/{id}/rotate", operation_id = "rotateApiKey", tag = "admin: keys",
    params(("id" = String, Path, description = "`key_...`")),
    request_body(content = Option<RotateBody>, description = "Optional"),
    security(("session" = [])),
    responses(
        (status = 200, body = NewCredentials),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`key_revoked`", body = ErrorBody),
        (status = 422, description = "`invalid_grace_seconds`", body = ErrorBody),
    )
)]
async fn rotate(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: RotateBody = optional_json(&body)?;
    let grace_seconds = match &body.grace_seconds {
        None | Some(Value::Null) => 0,
        Some(v) => match keys::integral(v) {
            Some(n) if (0..=keys::MAX_GRACE_SECONDS).contains(&n) => n,
            _ => {
                return Err(ApiError::unprocessable(
                    "invalid_grace_seconds",
                    format!(
                        "grace_seconds: an integer from 0 to {}",
                        keys::MAX_GRACE_SECONDS
                    ),
                ))
            }
        },
    };
    let now = now_ms();
    let issued = keys_of(&state)
        .rotate(&session.account_id, &id, grace_seconds, now)
        .await?;
    Ok(Json(with_credentials(
        KeyView::from_record(&issued.record, now),
        &issued.credentials,
    )))
}

/// `POST /admin/keys/{id}/playground-credential`
#[derive(Serialize, ToSchema)]
pub struct PlaygroundCredential {
    /// `key_...`: the only key this credential acts as.
    key_id: String,
    /// Send as `Authorization: Bearer <credential>` (no `X-Api-Secret`). Keep it in memory only.
    #[schema(example = "wpg_key_01JD0000000000000000000000.1764028860.Zm9v")]
    credential: String,
    /// RFC 3339; the gateway refuses it afterwards (401 `invalid_credentials`).
    expires_at: String,
    expires_in_seconds: i64,
}

/// A short-lived credential for the console's Playground
///
/// Acts as the key at the gateway, with every check and limit of that key, until it expires or
/// the key is revoked or rotated. Nothing is stored.
#[utoipa::path(
    post, path = "/admin/keys/{id}/playground-credential", operation_id = "createPlaygroundCredential", tag = "admin: keys",
    params(("id" = String, Path, description = "`key_...`")),
    security(("session" = [])),
    responses(
        (status = 201, body = PlaygroundCredential),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`key_revoked`", body = ErrorBody),
    )
)]
async fn playground_credential(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<(
    StatusCode,
    [(http::HeaderName, &'static str); 1],
    Json<PlaygroundCredential>,
)> {
    let now = now_ms();
    let mut conn = state.db.acquire().await?;
    let record = load(&mut conn, &session, &id, now).await?;
    if record.status_at(now) != "active" {
        return Err(ApiError::conflict(
            "key_revoked",
            "the key is revoked or expired; the Playground cannot use it",
        ));
    }
    let ttl = state.config.playground.credential_ttl.as_secs() as i64;
    let expires = now / 1000 + ttl;
    let credential = keys::playground::mint(
        &state.config.internal_token,
        &record.id,
        &record.key_hash,
        expires,
    );
    tracing::info!(key_id = %id, prefix = %record.prefix, ttl, "playground credential issued");
    Ok((
        StatusCode::CREATED,
        // A credential must not linger in any cache.
        [(http::header::CACHE_CONTROL, "no-store")],
        Json(PlaygroundCredential {
            key_id: record.id,
            credential,
            expires_at: rfc3339(expires * 1000),
            expires_in_seconds: ttl,
        }),
    ))
}

const USAGE_DAYS: i64 = 30;
const USAGE_MINUTES: i64 = 60;
const DAY_MS: i64 = 86_400_000;

/// Today's count, the last 30 UTC days and the last 60 minutes (oldest first, zeros filled in,
/// so a chart can draw them as they come) and today's refusals by code.
/// A key's usage for the console's charts
#[utoipa::path(
    get, path = "/admin/keys/{id}/usage", operation_id = "getApiKeyUsage", tag = "admin: keys",
    params(("id" = String, Path, description = "`key_...`")),
    security(("session" = [])),
    responses((status = 200, body = KeyUsage), (status = 404, body = ErrorBody))
)]
async fn usage(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let today = utc_day(now);
    let mut conn = state.db.acquire().await?;
    let record = load(&mut conn, &session, &id, now).await?;

    let first_day = utc_day(now - (USAGE_DAYS - 1) * DAY_MS);
    let per_day = store::daily_usage(&mut conn, &id, &first_day).await?;
    let days: Vec<Value> = (0..USAGE_DAYS)
        .rev()
        .map(|ago| {
            let day = utc_day(now - ago * DAY_MS);
            let count = per_day
                .iter()
                .find(|(d, _)| *d == day)
                .map_or(0, |(_, n)| *n);
            json!({"date": day, "count": count})
        })
        .collect();

    let this_minute = now.div_euclid(60_000) * 60;
    let first_minute = this_minute - (USAGE_MINUTES - 1) * 60;
    let per_minute = store::minute_usage(&mut conn, &id, first_minute).await?;
    let minutes: Vec<Value> = (0..USAGE_MINUTES)
        .map(|i| {
            let minute = first_minute + i * 60;
            let count = per_minute
                .iter()
                .find(|(m, _)| *m == minute)
                .map_or(0, |(_, n)| *n);
            json!({"minute": rfc3339(minute * 1000), "count": count})
        })
        .collect();

    let refusals: serde_json::Map<String, Value> = store::refusals_on(&mut conn, &id, &today)
        .await?
        .into_iter()
        .map(|(code, n)| (code, Value::from(n)))
        .collect();

    Ok(Json(json!({
        "key_id": record.id,
        "day": today,
        "today": record.usage_today,
        "daily_limit": record.daily_limit,
        "rate_limit_per_minute": record.rate_limit_per_minute,
        "last_used_at": record.last_used_at.map(rfc3339),
        "days": days,
        "minutes": minutes,
        "refusals": refusals,
    })))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use crate::{
        accounts::Plan,
        auth::sha256_hex,
        testing::{Console, TestApp},
    };

    async fn create_key(app: &TestApp, console: &Console, body: Value) -> Value {
        let answer = app.admin(console, "POST", "/admin/keys", Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer.body
    }

    async fn synced_key(app: &TestApp, id: &str) -> Value {
        let snapshot = app.internal("GET", "/internal/keys", None).await;
        assert_eq!(snapshot.status, StatusCode::OK);
        snapshot.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .cloned()
            .expect("key in snapshot")
    }

    #[tokio::test]
    async fn create_returns_credentials_once_and_lists_never_show_hashes() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        let created = create_key(
            &app,
            &console,
            json!({"name": "prod", "ip_whitelist": ["203.0.113.7", "10.1.0.0/16"]}),
        )
        .await;
        let key = created["key"].as_str().unwrap().to_string();
        let secret = created["secret"].as_str().unwrap().to_string();
        let id = created["id"].as_str().unwrap().to_string();
        assert!(key.starts_with("pk_live_") && key.len() == 40);
        assert!(secret.starts_with("sk_live_") && secret.len() == 48);
        assert_eq!(created["prefix"], json!(&key[..12]));
        assert_eq!(created["rate_limit_per_minute"], json!(60));
        assert_eq!(created["daily_limit"], json!(1000));
        assert_eq!(created["status"], json!("active"));
        assert_eq!(created["usage_today"], json!(0));

        let list = app.admin(&console, "GET", "/admin/keys", None).await;
        let one = app
            .admin(&console, "GET", &format!("/admin/keys/{id}"), None)
            .await;
        for answer in [&list, &one] {
            assert_eq!(answer.status, StatusCode::OK);
            let text = answer.body.to_string();
            assert!(!text.contains(&secret) && !text.contains(&key));
            assert!(!text.contains(&sha256_hex(&key)) && !text.contains(&sha256_hex(&secret)));
            assert!(!text.contains("hash") && !text.contains("\"secret\""));
        }
        assert_eq!(list.body["data"][0]["id"], json!(&id));
        assert_eq!(
            one.body["ip_whitelist"],
            json!(["203.0.113.7", "10.1.0.0/16"])
        );

        // What the database holds: prefix and hashes only.
        let row: (String, String, String) =
            sqlx::query_as("SELECT prefix, key_hash, secret_hash FROM api_keys WHERE id = $1")
                .bind(&id)
                .fetch_one(&app.state.db)
                .await
                .unwrap();
        assert_eq!(
            row,
            (key[..12].to_string(), sha256_hex(&key), sha256_hex(&secret))
        );

        let synced = synced_key(&app, &id).await;
        assert_eq!(synced["key_hash"], json!(sha256_hex(&key)));
        assert_eq!(synced["secret_hash"], json!(sha256_hex(&secret)));
        assert_eq!(synced["plan"], json!("wiz_pro"));
        assert_eq!(synced["previous"], json!(null));
        assert_eq!(synced["account_id"], json!(console.account_id));
    }

    #[tokio::test]
    async fn rotate_with_grace_and_revoke_show_in_the_sync_record() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        let created = create_key(&app, &console, json!({"name": "k"})).await;
        let id = created["id"].as_str().unwrap();
        let old_key = created["key"].as_str().unwrap();
        let old_secret = created["secret"].as_str().unwrap();
        let v0 = *app.state.key_version.borrow();

        let before = crate::clock::now_ms();
        let rotated = app
            .admin(
                &console,
                "POST",
                &format!("/admin/keys/{id}/rotate"),
                Some(json!({"grace_seconds": 60})),
            )
            .await;
        assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
        assert_eq!(rotated.body["id"], json!(id));
        let new_key = rotated.body["key"].as_str().unwrap();
        let new_secret = rotated.body["secret"].as_str().unwrap();
        assert_ne!(new_key, old_key);
        assert!(rotated.body["previous_valid_until"].is_string());
        assert!(*app.state.key_version.borrow() > v0);

        let synced = synced_key(&app, id).await;
        assert_eq!(synced["key_hash"], json!(sha256_hex(new_key)));
        assert_eq!(synced["secret_hash"], json!(sha256_hex(new_secret)));
        assert_eq!(synced["previous"]["key_hash"], json!(sha256_hex(old_key)));
        assert_eq!(
            synced["previous"]["secret_hash"],
            json!(sha256_hex(old_secret))
        );
        let until = synced["previous"]["valid_until_ms"].as_i64().unwrap();
        assert!(until >= before + 60_000 && until <= crate::clock::now_ms() + 60_000);

        // Without grace the old pair goes at once.
        let again = app
            .admin(&console, "POST", &format!("/admin/keys/{id}/rotate"), None)
            .await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(synced_key(&app, id).await["previous"], json!(null));

        let revoked = app
            .admin(&console, "POST", &format!("/admin/keys/{id}/revoke"), None)
            .await;
        assert_eq!(revoked.status, StatusCode::OK);
        assert_eq!(revoked.body["status"], json!("revoked"));
        assert_eq!(synced_key(&app, id).await["status"], json!("revoked"));
        let rotate_revoked = app
            .admin(&console, "POST", &format!("/admin/keys/{id}/rotate"), None)
            .await;
        assert_eq!(rotate_revoked.status, StatusCode::CONFLICT);
        assert_eq!(rotate_revoked.code(), "key_revoked");
    }

    #[tokio::test]
    async fn validation_errors_name_the_field() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        for (body, code, field) in [
            (
                json!({"name": "k", "ip_whitelist": ["10.0.0.0/33"]}),
                "invalid_ip_whitelist",
                "10.0.0.0/33",
            ),
            (
                json!({"name": "k", "ip_whitelist": ["nope"]}),
                "invalid_ip_whitelist",
                "ip_whitelist[0]",
            ),
            (
                json!({"name": "k", "rate_limit_per_minute": 0}),
                "invalid_limit",
                "rate_limit_per_minute",
            ),
            (
                json!({"name": "k", "daily_limit": -5}),
                "invalid_limit",
                "daily_limit",
            ),
            (
                json!({"name": "k", "daily_limit": 100_000_001}),
                "invalid_limit",
                "daily_limit",
            ),
            (json!({"name": "n".repeat(101)}), "invalid_name", "name"),
            (json!({"name": ""}), "invalid_name", "name"),
            (
                json!({"name": "k", "expires_at": "yesterday"}),
                "invalid_expires_at",
                "expires_at",
            ),
        ] {
            let answer = app.admin(&console, "POST", "/admin/keys", Some(body)).await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{code}");
            assert_eq!(answer.code(), code);
            let message = answer.body["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{message}");
        }
        let unknown = app
            .admin(
                &console,
                "POST",
                "/admin/keys",
                Some(json!({"name": "k", "owner": "x"})),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);

        let created = create_key(&app, &console, json!({"name": "k"})).await;
        let id = created["id"].as_str().unwrap();
        let patched = app
            .admin(
                &console,
                "PATCH",
                &format!("/admin/keys/{id}"),
                Some(json!({"rate_limit_per_minute": 5, "daily_limit": 10,
                            "ip_whitelist": ["2001:db8::/32"], "name": "renamed"})),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
        assert_eq!(patched.body["rate_limit_per_minute"], json!(5));
        assert_eq!(patched.body["name"], json!("renamed"));
        let synced = synced_key(&app, id).await;
        assert_eq!(synced["daily_limit"], json!(10));
        assert_eq!(synced["ip_whitelist"], json!(["2001:db8::/32"]));
        let bad_patch = app
            .admin(
                &console,
                "PATCH",
                &format!("/admin/keys/{id}"),
                Some(json!({"rate_limit_per_minute": 1.5})),
            )
            .await;
        assert_eq!(bad_patch.code(), "invalid_limit");
    }

    #[tokio::test]
    async fn free_plan_tenants_and_csrf() {
        let app = TestApp::new().await;
        let demo = app.demo_console().await;
        let created = create_key(&app, &demo, json!({"name": "k"})).await;
        let id = created["id"].as_str().unwrap();

        app.create_account("Free", Plan::Free, "free@x.test", "password-f")
            .await;
        let free = app.login("free@x.test", "password-f").await;
        let refused = app
            .admin(&free, "POST", "/admin/keys", Some(json!({"name": "k"})))
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.code(), "plan_required");

        // Another account never sees or touches this key.
        for (method, path, body) in [
            ("GET", format!("/admin/keys/{id}"), None),
            (
                "PATCH",
                format!("/admin/keys/{id}"),
                Some(json!({"name": "x"})),
            ),
            ("POST", format!("/admin/keys/{id}/revoke"), None),
            ("POST", format!("/admin/keys/{id}/rotate"), None),
            ("GET", format!("/admin/keys/{id}/usage"), None),
        ] {
            let answer = app.admin(&free, method, &path, body).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        }
        let list = app.admin(&free, "GET", "/admin/keys", None).await;
        assert_eq!(list.body["data"], json!([]));

        let no_csrf = Console {
            csrf: String::new(),
            ..demo.clone()
        };
        let answer = app
            .admin(&no_csrf, "POST", "/admin/keys", Some(json!({"name": "k"})))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(answer.code(), "csrf_failed");
        let wrong_csrf = Console {
            csrf: "wrong".into(),
            ..demo.clone()
        };
        let answer = app
            .admin(
                &wrong_csrf,
                "POST",
                &format!("/admin/keys/{id}/revoke"),
                None,
            )
            .await;
        assert_eq!(answer.code(), "csrf_failed");
        // Reads need no CSRF token.
        let read = app.admin(&no_csrf, "GET", "/admin/keys", None).await;
        assert_eq!(read.status, StatusCode::OK);

        let anonymous = Console {
            cookie: "wiz_session=forged".into(),
            ..demo
        };
        let answer = app.admin(&anonymous, "GET", "/admin/keys", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn usage_reports_feed_usage_today_and_the_usage_view() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        let created = create_key(&app, &console, json!({"name": "k"})).await;
        let id = created["id"].as_str().unwrap();
        let now = crate::clock::now_ms();
        let minute = now / 1000 / 60 * 60;
        let report = json!({"gateway_id": "test:1", "entries": [
            {"key_id": id, "minute": minute, "accepted": 12,
             "refused": {"rate_limited": 3, "ip_not_allowed": 1, "daily_limit_exceeded": 0},
             "last_used_at_ms": now},
            {"key_id": id, "minute": minute, "accepted": 5, "refused": {}, "last_used_at_ms": now - 10},
            {"key_id": "key_unknown", "minute": minute, "accepted": 1, "refused": {}, "last_used_at_ms": now}
        ]});
        let answer = app.internal("POST", "/internal/usage", Some(report)).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);

        let synced = synced_key(&app, id).await;
        assert_eq!(synced["usage_today"]["count"], json!(17));
        assert_eq!(
            synced["usage_today"]["day"],
            json!(crate::keys::store::utc_day(now))
        );
        let listed = app
            .admin(&console, "GET", &format!("/admin/keys/{id}"), None)
            .await;
        assert_eq!(listed.body["usage_today"], json!(17));
        assert_eq!(
            listed.body["last_used_at"],
            json!(crate::clock::rfc3339(now))
        );

        let usage = app
            .admin(&console, "GET", &format!("/admin/keys/{id}/usage"), None)
            .await;
        assert_eq!(usage.status, StatusCode::OK);
        assert_eq!(usage.body["today"], json!(17));
        let days = usage.body["days"].as_array().unwrap();
        assert_eq!(days.len(), 30);
        assert_eq!(days[29]["count"], json!(17));
        let minutes = usage.body["minutes"].as_array().unwrap();
        assert_eq!(minutes.len(), 60);
        assert_eq!(minutes[59]["count"], json!(17));
        assert_eq!(
            usage.body["refusals"],
            json!({"ip_not_allowed": 1, "rate_limited": 3})
        );
    }
}
