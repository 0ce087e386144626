//! The console's API (SPEC §6): session-authenticated, every query scoped to the session's account.

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
