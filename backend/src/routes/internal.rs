//! Routes for the gateway only (docs/internal-api.md), behind the shared internal token.

use axum::{
    middleware,
    routing::{get, post},
    Router,
};

use crate::{auth, internal, state::AppState};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route(internal::wire::KEYS_PATH, get(internal::keys::handler))
        .route(internal::wire::USAGE_PATH, post(internal::usage::handler))
        // Routes go above this line; the layer covers every route of this router.
        .layer(middleware::from_fn_with_state(
            state,
            auth::internal::require,
        ))
}
