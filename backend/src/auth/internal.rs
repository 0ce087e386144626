//! `/internal/*` is for the gateway only, which presents the bearer derived from the shared
//! token (`token_keys`).

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

use crate::{error::ApiError, state::AppState};

pub const TOKEN_HEADER: &str = "x-wiz-internal-token";

pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = state.token_keys.bearer.as_bytes();
    if bool::from(presented.ct_eq(expected)) {
        next.run(request).await
    } else {
        ApiError::unauthorized("invalid_internal_token", "internal token missing or wrong")
            .into_response()
    }
}
