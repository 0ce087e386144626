//! The public API (SPEC §7), reached through the gateway only.

pub mod batches;
pub mod chatbot;
pub mod contacts;
pub mod messages;
pub mod templates;

use axum::{middleware, Router};

use crate::{auth, state::AppState};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(contacts::router())
        .merge(messages::router())
        .merge(batches::router())
        .merge(templates::router())
        .merge(chatbot::router())
        // Inside the proof check (it needs the caller's account): Idempotency-Key on POSTs.
        .layer(middleware::from_fn_with_state(
            state,
            crate::idempotency::layer,
        ))
        // Routes go above this line; the layer covers every route of this router.
        .layer(middleware::from_fn(auth::gateway::require))
}
