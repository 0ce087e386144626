//! The HTTP surface: one router per audience, merged here with the layers every request passes.

pub mod admin;
pub mod channels;
pub mod extract;
pub mod health;
pub mod internal;
pub mod pagination;
pub mod v1;

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{Method, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

use crate::{error::ApiError, request_id, state::AppState};

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .merge(health::router())
        .merge(internal::router(state.clone()))
        .merge(admin::router())
        .merge(channels::router(&state))
        .merge(v1::router(state.clone()))
        // Outside the /v1 router: served without the gateway proof (SPEC §7).
        .merge(crate::openapi::router())
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost last: request id first, so every answer below (errors included) can name it.
        .layer((
            // `read_body_first` has already bounded the body; this only lifts the extractors'
            // own 2 MB default to the same limit.
            DefaultBodyLimit::max(limit),
            middleware::from_fn_with_state(state.clone(), observe),
            TimeoutLayer::with_status_code(
                http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(60),
            ),
            CatchPanicLayer::custom(|_| {
                ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
            }),
        ))
        // Before routing (nesting would rewrite the path the proof covers).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::gateway::identify,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_first,
        ))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NoRoute(format!("{method} {path}"))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut response = ApiError::bad_request(
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response();
    *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// How long a client may take to send a request body the backend has started to read.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the whole request body (up to `max_body_bytes`) before anything answers.
///
/// hyper closes a connection whose request body was not read to the end, without saying so in
/// the response. Every early answer (a refused proof, no session, 404, 415) would then leave the
/// gateway a pooled connection that is already closing, and the next request sent on it fails
/// with a 502 that no backend caused. With the body read first, every connection stays reusable;
/// the few answers given without reading (too large, too slow) say `Connection: close`.
async fn read_body_first(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = body_limit(&request, &state);
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return closing(ApiError::PayloadTooLarge.into_response());
    }
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => {
            return closing(ApiError::PayloadTooLarge.into_response())
        }
        Ok(Err(_)) => {
            // The client went away or sent a malformed body; nobody may be left to answer.
            return closing(
                ApiError::bad_request("invalid_body", "the request body could not be read")
                    .into_response(),
            );
        }
        Err(_) => {
            let mut response =
                ApiError::bad_request("body_timeout", "the request body was not received in time")
                    .into_response();
            *response.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
            return closing(response);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The most a request's body may hold: `max_body_bytes`, or less on routes whose bodies are small
/// by nature, so that an oversized one is refused after reading only that much (a 4 MB login
/// email costs 8 KiB of buffer, not 4 MB).
fn body_limit(request: &Request, state: &AppState) -> usize {
    if request.method() == Method::POST && request.uri().path() == "/admin/session" {
        return admin::session::LOGIN_MAX_BODY_BYTES;
    }
    state.config.max_body_bytes
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// Request metrics by matched route template (never the raw path) and one access log line.
async fn observe(State(state): State<AppState>, request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let key_prefix = request
        .headers()
        .get(crate::auth::gateway::KEY_PREFIX)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let status_class = format!("{}xx", status / 100);
    state
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status_class.as_str()])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        request_id = %request_id::RequestId::current(),
        method = %method,
        route = %route,
        key_prefix = %key_prefix,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}
