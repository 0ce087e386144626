//! Per-account bounds on what a tenant can create (issue 9 point 8; sizes in
//! `config.account_limits`). Checked inside the transaction that inserts, after locking the
//! account's row, so two creates racing at the bound cannot both pass: on PostgreSQL the second
//! waits for the first to commit and then counts its row; on SQLite the one connection runs one
//! transaction at a time anyway.

use sqlx::AnyConnection;

use crate::refusal::Refusal;

/// A bounded kind of thing an account owns.
#[derive(Debug, Clone, Copy)]
pub enum Bounded {
    ApiKeys,
    WebhookEndpoints,
}

impl Bounded {
    fn count_sql(self) -> &'static str {
        match self {
            Bounded::ApiKeys => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM api_keys \
                 WHERE account_id = $1 AND status <> 'revoked'"
            }
            Bounded::WebhookEndpoints => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_endpoints WHERE account_id = $1"
            }
        }
    }

    fn refusal(self, max: u32) -> Refusal {
        match self {
            Bounded::ApiKeys => Refusal::unacceptable(
                "too_many_api_keys",
                format!(
                    "this account already has {max} API keys that are not revoked \
                     (account_limits.max_api_keys); revoke one first"
                ),
            ),
            Bounded::WebhookEndpoints => Refusal::unacceptable(
                "too_many_webhook_endpoints",
                format!(
                    "this account already has {max} webhook endpoints \
                     (account_limits.max_webhook_endpoints); delete one first"
                ),
            ),
        }
    }
}

/// Refuses one more `what` if the account holds `max` already. Call it in the inserting
/// transaction, before the insert. The outer error is the database's, the inner one the
/// bound's answer (`too_many_*`), so callers write `check(..).await??`.
pub async fn check(
    tx: &mut AnyConnection,
    account_id: &str,
    what: Bounded,
    max: u32,
) -> Result<Result<(), Refusal>, sqlx::Error> {
    if tx.backend_name() == "PostgreSQL" {
        // NO KEY UPDATE: serialises the bound checks of one account without blocking the foreign
        // key checks (KEY SHARE) of every other insert that references the account.
        sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
    }
    let count: i64 = sqlx::query_scalar(what.count_sql())
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= i64::from(max) {
        return Ok(Err(what.refusal(max)));
    }
    Ok(Ok(()))
}
