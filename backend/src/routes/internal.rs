//! Routes for the gateway only (docs/internal-api.md), behind the shared internal token.

use axum::{middleware, Router};

use crate::{auth, state::AppState};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        // Routes go above this line; the layer covers every route of this router.
        .layer(middleware::from_fn_with_state(state, auth::internal::require))
}
