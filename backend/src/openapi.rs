//! The OpenAPI 3 document of the public and admin API, served at `GET /v1/openapi.json` without a
//! key (SPEC §4, §7).
//!
//! Each resource module describes its own routes (`#[utoipa::path]` on the handlers) in a
//! `#[derive(utoipa::OpenApi)] pub struct ApiDoc` next to them; [`document`] merges them all.
//! To plug a module in, add one `.merge_from(...)` line there. A test below checks that every
//! documented route exists and that the routes SPEC names are documented.

use axum::{routing::get, Json, Router};
use utoipa::{
    openapi::{
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        OpenApi as Document,
    },
    Modify, OpenApi, ToSchema,
};

use crate::state::AppState;

/// SPEC §4's error object, the body of every 4xx/5xx answer.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error`,
    /// `api_error`.
    #[schema(example = "invalid_request_error")]
    r#type: String,
    /// Machine-readable reason, e.g. `template_not_found`.
    #[schema(example = "template_not_found")]
    code: String,
    message: String,
    request_id: String,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("Basic base64(<key>:<secret>)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Bearer <key>, together with X-Api-Secret"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_secret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Secret"))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "wiz_session",
                "console session (POST /admin/session); state-changing calls also need X-CSRF-Token",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WizMessage Edge API",
        version = "1",
        description = "Public API (`/v1`, through the gateway with an API key) and the console's \
                       admin API (`/admin`, session cookie + X-CSRF-Token). Errors are \
                       `{\"error\":{\"type\",\"code\",\"message\",\"request_id\"}}`. Every POST \
                       under /v1 honours `Idempotency-Key` for 24 h."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecuritySchemes),
    security(("api_key_basic" = []), ("api_key_bearer" = [], "api_secret" = [])),
)]
struct BaseDoc;

/// The whole document: the base plus every module's `ApiDoc` (one line each).
pub fn document() -> Document {
    use crate::routes::{admin, v1};
    BaseDoc::openapi()
        .merge_from(v1::contacts::ApiDoc::openapi())
        .merge_from(v1::messages::ApiDoc::openapi())
        .merge_from(v1::batches::ApiDoc::openapi())
        .merge_from(v1::templates::ApiDoc::openapi())
        .merge_from(v1::chatbot::ApiDoc::openapi())
        .merge_from(admin::session::ApiDoc::openapi())
        .merge_from(admin::keys::ApiDoc::openapi())
        .merge_from(admin::templates::ApiDoc::openapi())
        .merge_from(admin::flows::ApiDoc::openapi())
        .merge_from(admin::webhooks::ApiDoc::openapi())
}

/// `GET /v1/openapi.json`, outside the `/v1` router so it needs no gateway proof.
pub fn router() -> Router<AppState> {
    let json = std::sync::Arc::new(document());
    Router::new().route(
        "/v1/openapi.json",
        get(move || {
            let json = json.clone();
            async move { Json(json.as_ref().clone()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};

    use super::*;
    use crate::testing::TestApp;

    /// Every route of SPEC §6 and §7: each must be in the document.
    const MUST_BE_DOCUMENTED: &[(&str, &str)] = &[
        ("POST", "/admin/session"),
        ("GET", "/admin/session"),
        ("DELETE", "/admin/session"),
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("GET", "/admin/keys/{id}"),
        ("PATCH", "/admin/keys/{id}"),
        ("POST", "/admin/keys/{id}/revoke"),
        ("POST", "/admin/keys/{id}/rotate"),
        ("GET", "/admin/keys/{id}/usage"),
        ("GET", "/admin/webhooks"),
        ("POST", "/admin/webhooks"),
        ("GET", "/admin/webhooks/{id}"),
        ("PATCH", "/admin/webhooks/{id}"),
        ("DELETE", "/admin/webhooks/{id}"),
        ("POST", "/admin/webhooks/{id}/rotate-secret"),
        ("POST", "/admin/webhooks/{id}/test"),
        ("GET", "/admin/webhooks/{id}/deliveries"),
        ("POST", "/admin/deliveries/{id}/retry"),
        ("GET", "/admin/templates"),
        ("POST", "/admin/templates"),
        ("GET", "/admin/templates/{id}"),
        ("PATCH", "/admin/templates/{id}"),
        ("DELETE", "/admin/templates/{id}"),
        ("GET", "/admin/flows"),
        ("POST", "/admin/flows"),
        ("GET", "/admin/flows/{id}"),
        ("PATCH", "/admin/flows/{id}"),
        ("DELETE", "/admin/flows/{id}"),
        ("GET", "/v1/contacts"),
        ("POST", "/v1/contacts"),
        ("GET", "/v1/contacts/{id}"),
        ("PATCH", "/v1/contacts/{id}"),
        ("DELETE", "/v1/contacts/{id}"),
        ("GET", "/v1/templates"),
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages"),
        ("GET", "/v1/messages/{id}"),
        ("POST", "/v1/messages/bulk"),
        ("GET", "/v1/batches/{id}"),
        ("GET", "/v1/batches/{id}/messages"),
        ("POST", "/v1/batches/{id}/cancel"),
        ("GET", "/v1/chatbot/flows"),
        ("POST", "/v1/chatbot/flows/{id}/trigger"),
        ("POST", "/v1/contacts/{id}/chatbot/pause"),
        ("POST", "/v1/contacts/{id}/chatbot/resume"),
        ("POST", "/v1/sandbox/inbound"),
    ];

    /// (method, path) of every operation in the document.
    fn documented() -> Vec<(String, String)> {
        let doc = serde_json::to_value(document()).unwrap();
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in [
                "get", "post", "put", "patch", "delete", "head", "options", "trace",
            ] {
                if item.get(method).is_some() {
                    out.push((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn every_documented_route_exists() {
        let app = TestApp::new().await;
        let mut missing = Vec::new();
        for (method, path) in documented() {
            // Any value fits a path parameter: the router matches the shape, the handler
            // answers 401/404/422, never the fallback.
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x_test" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let answer = app
                .send(
                    Request::builder()
                        .method(method.as_str())
                        .uri(&concrete)
                        .header("content-type", "application/json")
                        .body(Body::from("{}"))
                        .unwrap(),
                )
                .await;
            let fallback = answer.status == http::StatusCode::METHOD_NOT_ALLOWED
                || (answer.status == http::StatusCode::NOT_FOUND
                    && answer.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no route for")));
            if fallback {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(missing.is_empty(), "documented but not routed: {missing:?}");
    }

    #[test]
    fn spec_routes_are_documented() {
        let documented = documented();
        let undocumented: Vec<String> = MUST_BE_DOCUMENTED
            .iter()
            .filter(|(m, p)| !documented.iter().any(|(dm, dp)| dm == m && dp == p))
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in the OpenAPI document: {undocumented:?}"
        );
    }

    #[tokio::test]
    async fn served_without_a_key() {
        let app = TestApp::new().await;
        let answer = app
            .send(
                Request::get("/v1/openapi.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, http::StatusCode::OK);
        assert!(answer.body["openapi"].as_str().unwrap().starts_with("3."));
        assert!(answer.body["paths"]["/v1/messages"]["post"].is_object());
        assert!(answer.body["components"]["securitySchemes"]["api_key_basic"].is_object());
    }
}
