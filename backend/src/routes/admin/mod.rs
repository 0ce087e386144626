//! The console's API (SPEC §6): session-authenticated, every query scoped to the session's account.

pub mod channel;
pub mod flows;
pub mod keys;
pub mod session;
pub mod templates;
pub mod webhooks;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(session::router())
        .merge(channel::router())
        .merge(keys::router())
        .merge(webhooks::router())
        .merge(templates::router())
        .merge(flows::router())
}
