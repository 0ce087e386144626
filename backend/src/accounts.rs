//! Accounts (tenants) and their plans.

use crate::state::AppState;

/// Creates the demo account and its admin on first start.
pub async fn bootstrap(_state: &AppState) -> anyhow::Result<()> {
    Ok(())
}
