//! What every operation of the document shares, added to the generated document in one place:
//! the statuses the gateway and the extractors answer for any operation, the headers on every
//! answer, the request headers (`Idempotency-Key`, `X-CSRF-Token`) and the security requirements.
//! The handlers' `#[utoipa::path]` annotations keep only what is particular to them.

use serde_json::{json, Map, Value};

use crate::idempotency::MAX_KEY_CHARS;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The limit headers the gateway puts on `/v1` answers (SPEC §4). Absent when the request had no
/// known key (e.g. 401 `missing_credentials`), so none is required.
const LIMIT_HEADERS: [(&str, &str, &str); 7] = [
    ("X-RateLimit-Limit", "integer", "Requests the key may make per rolling minute."),
    ("X-RateLimit-Remaining", "integer", "Requests left in the current minute window."),
    ("X-RateLimit-Reset", "integer", "Seconds until the minute window frees a request."),
    ("X-DailyLimit-Limit", "integer", "Requests the key may make per UTC day."),
    ("X-DailyLimit-Remaining", "integer", "Requests left today (UTC)."),
    (
        "RateLimit-Policy",
        "string",
        "draft-ietf-httpapi-ratelimit-headers, e.g. `\"minute\";q=60;w=60, \"day\";q=1000;w=86400`.",
    ),
    (
        "RateLimit",
        "string",
        "draft-ietf-httpapi-ratelimit-headers, e.g. `\"minute\";r=12;t=34`.",
    ),
];

pub fn apply(doc: &mut Value) {
    add_components(doc);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            if let Some(op) = item.get_mut(method) {
                operation(path, method, op);
            }
        }
    }
}

fn add_components(doc: &mut Value) {
    let components = doc["components"]
        .as_object_mut()
        .expect("the base document has components");
    let mut headers = Map::new();
    headers.insert(
        "X-Request-Id".into(),
        json!({
            "description": "The request's id (the client's if sane, else a new ULID); quote it in support requests.",
            "required": true,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        }),
    );
    for (name, kind, description) in LIMIT_HEADERS {
        headers.insert(
            name.into(),
            json!({"description": description, "schema": {"type": kind}}),
        );
    }
    headers.insert(
        "Retry-After".into(),
        json!({
            "description": "Seconds to wait before retrying.",
            "required": true,
            "schema": {"type": "integer", "minimum": 0},
        }),
    );
    headers.insert(
        "Idempotent-Replayed".into(),
        json!({
            "description": "`true` when this is the stored answer to an earlier request with the same Idempotency-Key, `false` on a first answer.",
            "schema": {"type": "string", "enum": ["true", "false"]},
        }),
    );
    components.insert("headers".into(), Value::Object(headers));
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

/// An error answer: the SPEC's error object, with an example naming `code`.
fn error(description: &str, code: &str, kind: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": {"error": {
                "type": kind,
                "code": code,
                "message": "what went wrong, in words",
                "request_id": "01JD5ZQ6J2V3G7X8Y9Z0ABCDEF",
            }},
        }},
    })
}

fn operation(path: &str, method: &str, op: &mut Value) {
    let public = path.starts_with("/v1/");
    let login = path == "/admin/session" && method == "post";
    let state_changing = method != "get";
    let has_body = op.get("requestBody").is_some();
    let has_id = path.contains('{');

    let mut shared: Vec<(&str, Value)> = vec![(
        "400",
        error(
            "The request cannot be read: `invalid_json`, `invalid_body`, `invalid_limit`, `invalid_cursor`, `invalid_query`, `invalid_idempotency_key`, ...",
            "invalid_body",
            "invalid_request_error",
        ),
    )];
    if public {
        shared.push((
            "401",
            error(
                "Refused by the gateway: `missing_credentials`, `malformed_credentials`, `invalid_credentials`, `key_revoked`, `key_expired`.",
                "invalid_credentials",
                "authentication_error",
            ),
        ));
        shared.push((
            "403",
            error(
                "Refused by the gateway: `plan_required` (the account's plan has no API access), `ip_not_allowed` (not in the key's whitelist).",
                "ip_not_allowed",
                "permission_error",
            ),
        ));
        let mut limited = error(
            "`rate_limited` (per-minute limit), `daily_limit_exceeded` (daily limit), `too_many_failed_attempts` (failed authentications from this IP).",
            "rate_limited",
            "rate_limit_error",
        );
        limited["headers"] = json!({"Retry-After": header_ref("Retry-After")});
        shared.push(("429", limited));
    } else if !login {
        shared.push((
            "401",
            error(
                "`not_authenticated` (no session cookie) or `session_expired`.",
                "not_authenticated",
                "authentication_error",
            ),
        ));
    }
    if !public && state_changing && !login {
        shared.push((
            "403",
            error(
                "`csrf_failed`: the `X-CSRF-Token` header is missing or is not the session's.",
                "csrf_failed",
                "permission_error",
            ),
        ));
    }
    if has_id {
        shared.push((
            "404",
            error("`not_found`", "not_found", "invalid_request_error"),
        ));
    }
    if public && method == "post" {
        shared.push((
            "409",
            error(
                "`idempotency_key_in_progress`: a request with the same Idempotency-Key is still running.",
                "idempotency_key_in_progress",
                "invalid_request_error",
            ),
        ));
    }
    if has_body || method == "post" {
        shared.push((
            "413",
            error(
                "`payload_too_large`: the body exceeds `max_body_bytes` (4 MiB by default).",
                "payload_too_large",
                "invalid_request_error",
            ),
        ));
    }
    if has_body {
        shared.push((
            "415",
            error(
                "`unsupported_media_type`: the body is missing or not declared `Content-Type: application/json`.",
                "unsupported_media_type",
                "invalid_request_error",
            ),
        ));
    }
    if has_body || (public && method == "post") {
        shared.push((
            "422",
            error(
                "The content cannot be acted on; `code` names the field or the reason (`idempotency_key_reused` for a reused Idempotency-Key with another body).",
                "idempotency_key_reused",
                "invalid_request_error",
            ),
        ));
    }
    shared.push((
        "500",
        error(
            "`internal_error`: a fault on our side (details only in our logs).",
            "internal_error",
            "api_error",
        ),
    ));
    shared.push((
        "503",
        error(
            "Refused by the gateway: `backend_unavailable`, `limiter_unavailable`, `key_table_unavailable`.",
            "backend_unavailable",
            "api_error",
        ),
    ));

    // An optional body is "absent", not "null": the server refuses a JSON `null`.
    if let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema") {
        let unwrapped = schema["oneOf"].as_array().and_then(|variants| {
            let non_null: Vec<&Value> = variants.iter().filter(|v| v["type"] != "null").collect();
            (variants.len() == 2 && non_null.len() == 1).then(|| non_null[0].clone())
        });
        if let Some(inner) = unwrapped {
            *schema = inner;
        }
    }
    let responses = op["responses"]
        .as_object_mut()
        .expect("every operation has responses");
    for (status, response) in shared {
        responses.entry(status).or_insert(response);
    }
    for (status, response) in responses.iter_mut() {
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}));
        headers["X-Request-Id"] = header_ref("X-Request-Id");
        if public {
            for (name, _, _) in LIMIT_HEADERS {
                headers[name] = header_ref(name);
            }
            if status == "429" {
                headers["Retry-After"] = header_ref("Retry-After");
            }
            if method == "post" {
                headers["Idempotent-Replayed"] = header_ref("Idempotent-Replayed");
            }
        }
    }

    let params = op
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("parameters are a list");
    params.retain(|p| {
        !p["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"))
    });
    if public && method == "post" {
        params.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Retries with the same key and the same body get the first answer for 24 h and do nothing twice; the same key with another body is 422 `idempotency_key_reused`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[!-~]+$"},
            "example": "order-1234-confirmation",
        }));
    }
    if !public && state_changing && !login {
        params.push(json!({
            "name": "X-CSRF-Token",
            "in": "header",
            "required": true,
            "description": "The session's `csrf_token` (from `POST /admin/session` or `GET /admin/session`).",
            "schema": {"type": "string", "minLength": 1},
        }));
    }
    if params.is_empty() {
        op.as_object_mut()
            .expect("an operation is an object")
            .remove("parameters");
    }

    op["security"] = if public {
        json!([{"api_key_basic": []}, {"api_key_bearer": [], "api_secret": []}, {"playground_credential": []}])
    } else if login {
        json!([])
    } else {
        json!([{"session": []}])
    };
}
