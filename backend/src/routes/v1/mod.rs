//! The public API (SPEC §7), reached through the gateway only.

use axum::{middleware, Router};

use crate::{auth, state::AppState};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        // Routes go above this line; the layer covers every route of this router.
        .layer(middleware::from_fn_with_state(state, auth::gateway::require))
}
