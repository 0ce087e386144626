//! `POST /internal/usage`: the gateways' per-key counts, flushed every second. Added to the
//! per-minute and per-day usage and refusal tables; `last_used_at` moves forward.

use axum::{extract::State, http::StatusCode};

use super::wire::UsageReport;
use crate::routes::extract::JsonBody;
use crate::{
    clock::now_ms,
    error::{ApiError, ApiResult},
    keys::store,
    state::AppState,
};

/// Per-minute rows are kept two days.
const KEEP_MINUTES_SECS: i64 = 2 * 24 * 3600;
/// More entries than any gateway flushes in a second; larger reports are refused whole.
const MAX_ENTRIES: usize = 100_000;

pub async fn handler(
    State(state): State<AppState>,
    JsonBody(mut report): JsonBody<UsageReport>,
) -> ApiResult<StatusCode> {
    if report.entries.len() > MAX_ENTRIES {
        return Err(ApiError::bad_request(
            "too_many_entries",
            format!("entries: at most {MAX_ENTRIES} per report"),
        ));
    }
    // One lock order for every report: two gateways flushing the same keys at once cannot
    // deadlock on PostgreSQL.
    report
        .entries
        .sort_by(|a, b| (&a.key_id, a.minute).cmp(&(&b.key_id, b.minute)));
    let mut tx = state.db.begin().await?;
    let mut unknown = 0usize;
    for entry in &report.entries {
        let refused: Vec<(&str, i64)> = entry
            .refused
            .iter()
            .map(|(code, n)| (code.as_str(), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        let known = store::record_usage(
            &mut tx,
            &entry.key_id,
            entry.minute,
            i64::try_from(entry.accepted).unwrap_or(i64::MAX),
            &refused,
            entry.last_used_at_ms,
        )
        .await?;
        if !known {
            unknown += 1;
        }
    }
    store::prune_minutes(&mut tx, now_ms() / 1000 - KEEP_MINUTES_SECS).await?;
    tx.commit().await?;
    if unknown > 0 {
        tracing::warn!(gateway = %report.gateway_id, unknown, "usage report named unknown keys");
    }
    Ok(StatusCode::NO_CONTENT)
}
