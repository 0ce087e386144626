//! The OpenAPI 3 document of the public and admin API, served at `GET /v1/openapi.json` without a
//! key (SPEC §4, §7).
//!
//! Each resource module describes its own routes (`#[utoipa::path]` on the handlers) in a
//! `#[derive(utoipa::OpenApi)] pub struct ApiDoc` next to them; [`document`] merges them all.
//! To plug a module in, add one `.merge_from(...)` line there. A test below checks that every
//! documented route exists and that the routes SPEC names are documented.

mod constraints;
mod shared;

use axum::{routing::get, Router};
use serde_json::Value;
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
            "playground_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wpg_<key_id>.<expires>.<mac>")
                    .description(Some(
                        "Bearer <Playground credential> alone (no X-Api-Secret): a short-lived \
                         stand-in for one key, from POST /admin/keys/{id}/playground-credential",
                    ))
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

/// The whole document as served: the modules' operations (from [`document`]) plus what every
/// operation shares, added here in one place rather than repeated on 48 handlers: the gateway's
/// refusals (401/403/429/503) and the limit headers on `/v1`, the session and CSRF refusals on
/// `/admin`, 400/413/415/422 for bodies, 404 for ids, `Idempotency-Key` on every `/v1` POST,
/// `X-CSRF-Token` on every state-changing admin call, `X-Request-Id` on every answer, and the
/// security requirements of each side.
pub fn document_json() -> Value {
    let mut doc = serde_json::to_value(document()).expect("the document serializes");
    constraints::apply(&mut doc);
    shared::apply(&mut doc);
    doc
}

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
        .merge_from(admin::channel::ApiDoc::openapi())
}

/// `GET /v1/openapi.json`, outside the `/v1` router so it needs no gateway proof.
pub fn router() -> Router<AppState> {
    // Rendered once; every answer is a cheap clone of the bytes.
    let json = axum::body::Bytes::from(
        serde_json::to_vec(&document_json()).expect("the document serializes"),
    );
    Router::new().route(
        "/v1/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], json) }
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
        ("GET", "/admin/channel"),
        ("PUT", "/admin/channel"),
        ("POST", "/admin/channel/test"),
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
        let doc = document_json();
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

    /// Code generators name methods after operation ids: each must be there, unique, camelCase.
    #[test]
    fn operation_ids_are_unique_and_meaningful() {
        let doc = document_json();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(
                    id.len() > 4
                        && id.chars().next().unwrap().is_ascii_lowercase()
                        && id.chars().all(|c| c.is_ascii_alphanumeric())
                        && id.chars().any(|c| c.is_ascii_uppercase()),
                    "{method} {path}: {id:?} is not a camelCase verb + noun"
                );
                if let Some(other) = seen.insert(id.to_string(), format!("{method} {path}")) {
                    panic!("operationId {id} used by {other} and {method} {path}");
                }
            }
        }
    }

    /// utoipa merges schemas by name: two modules registering different shapes under one name
    /// would silently describe one body with the other's schema.
    #[test]
    fn no_two_schemas_share_a_name() {
        use crate::routes::{admin, v1};
        let docs = [
            ("v1::contacts", v1::contacts::ApiDoc::openapi()),
            ("v1::messages", v1::messages::ApiDoc::openapi()),
            ("v1::batches", v1::batches::ApiDoc::openapi()),
            ("v1::templates", v1::templates::ApiDoc::openapi()),
            ("v1::chatbot", v1::chatbot::ApiDoc::openapi()),
            ("admin::session", admin::session::ApiDoc::openapi()),
            ("admin::keys", admin::keys::ApiDoc::openapi()),
            ("admin::templates", admin::templates::ApiDoc::openapi()),
            ("admin::flows", admin::flows::ApiDoc::openapi()),
            ("admin::webhooks", admin::webhooks::ApiDoc::openapi()),
        ];
        let mut seen: std::collections::BTreeMap<String, (&str, Value)> = Default::default();
        for (module, doc) in docs {
            let Some(components) = doc.components else {
                continue;
            };
            for (name, schema) in components.schemas {
                let schema = serde_json::to_value(schema).unwrap();
                if let Some((other, earlier)) = seen.get(&name) {
                    assert_eq!(
                        earlier, &schema,
                        "schema {name} differs between {other} and {module}"
                    );
                } else {
                    seen.insert(name, (module, schema));
                }
            }
        }
        let doc = document_json();
        let keys = &doc["components"]["schemas"];
        assert!(keys["ApiKeyCreate"]["properties"]["name"].is_object());
        assert!(keys["ApiKeyCreate"]["properties"]["phone"].is_null());
        assert!(keys["ContactCreate"]["required"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("phone")));
    }

    /// What every operation shares: the refusals of the gateway, of the session and of the body
    /// parser, the headers, and the constraints the validators enforce.
    #[test]
    fn statuses_headers_and_constraints_are_documented() {
        let doc = document_json();
        let op = |m: &str, p: &str| doc["paths"][p][m].clone();
        let send = op("post", "/v1/messages");
        for status in [
            "202", "400", "401", "403", "409", "413", "415", "422", "429", "503",
        ] {
            assert!(
                send["responses"][status].is_object(),
                "POST /v1/messages lacks {status}"
            );
        }
        assert!(send["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert!(send["responses"]["202"]["headers"]["X-RateLimit-Remaining"].is_object());
        assert!(send["responses"]["202"]["headers"]["X-Request-Id"].is_object());
        let params: Vec<&str> = send["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(params, ["Idempotency-Key"]);
        for (method, path) in [
            ("post", "/v1/contacts"),
            ("post", "/v1/chatbot/flows/{id}/trigger"),
            ("post", "/v1/batches/{id}/cancel"),
        ] {
            let names = op(method, path)["parameters"].to_string();
            assert!(names.contains("Idempotency-Key"), "{method} {path}");
        }
        let create_key = op("post", "/admin/keys");
        assert!(create_key["parameters"]
            .to_string()
            .contains("X-CSRF-Token"));
        assert_eq!(create_key["security"], serde_json::json!([{"session": []}]));
        assert!(
            create_key["responses"]["401"].is_object()
                && create_key["responses"]["415"].is_object()
        );
        assert_eq!(
            op("post", "/admin/session")["security"],
            serde_json::json!([])
        );
        assert_eq!(
            op("get", "/v1/contacts")["security"]
                .as_array()
                .unwrap()
                .len(),
            3,
            "Basic, Bearer + X-Api-Secret, Playground credential"
        );
        let limit = op("get", "/v1/contacts")["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"]
            .clone();
        assert_eq!(
            (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
            (Some(1), Some(200))
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["ContactCreate"]["properties"]["phone"]["pattern"],
            constraints::E164
        );
        assert_eq!(
            schemas["ContactCreate"]["properties"]["tags"]["items"]["minLength"],
            1
        );
        assert_eq!(
            schemas["TemplateInput"]["properties"]["language"]["pattern"]
                .as_str()
                .map(|p| !p.is_empty()),
            Some(true)
        );
        assert_eq!(schemas["SendMessage"]["oneOf"].as_array().unwrap().len(), 3);
        assert_eq!(
            schemas["BulkRequest"]["oneOf"][0]["properties"]["recipients"]["maxItems"],
            10_000
        );
        assert_eq!(
            schemas["TriggerRequest"]["properties"]["variables"]["additionalProperties"]["type"],
            serde_json::json!(["string", "number", "boolean"])
        );
        // The rotate body may be absent, never `null`.
        let rotate = &op("post", "/admin/keys/{id}/rotate")["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(rotate["$ref"], "#/components/schemas/RotateBody");
    }

    /// A body that is not declared JSON is 415, not 400 (SPEC §7, issue 13).
    #[tokio::test]
    async fn a_body_without_json_content_type_is_415() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        for content_type in [None, Some("text/plain")] {
            let mut request = Request::post("/admin/templates")
                .header("cookie", &console.cookie)
                .header("x-csrf-token", &console.csrf);
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            let answer = app
                .send(request.body(Body::from(r#"{"name":"x"}"#)).unwrap())
                .await;
            assert_eq!(answer.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(answer.code(), "unsupported_media_type");
        }
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
