//! Bulk operations behind `/v1/messages/bulk` and `/v1/batches/...`: accept a bulk request,
//! read a batch and its messages, cancel it. Each runs in one unit of work (writes through the
//! request's idempotency claim) and returns what the handler shows.

use axum::http::StatusCode;
use serde_json::json;

use super::{
    all_rejected, check_shape, reject, resolve_contacts, sort_rejections, store, text_source,
    validate_recipients, Batch, BatchStatus, BatchView, BulkAccepted, BulkKind, BulkRequest,
    Source,
};
use crate::{
    channel::window,
    clock::now_ms,
    error::ApiError,
    idempotency::Idempotency,
    ids::new_id,
    messages::{self, render::TemplateSource, Message, Status},
    state::AppState,
    templates,
};

/// Accepts a bulk request (the whole of `POST /v1/messages/bulk`): validates every recipient,
/// then stores the batch and its messages in one transaction (nothing with `dry_run`) and wakes
/// the dispatcher.
pub async fn accept(
    state: &AppState,
    idem: &Idempotency,
    account_id: &str,
    mut req: BulkRequest,
) -> Result<BulkAccepted, ApiError> {
    check_shape(&req)?;
    let (source, spec) = match (req.kind, &req.text, &req.template) {
        (BulkKind::Text, Some(text), _) => (
            text_source(&text.body)?,
            json!({"type": "text", "text": {"body": text.body}}),
        ),
        (BulkKind::Template, _, Some(t)) => {
            let template = {
                let mut conn = state.db.acquire().await?;
                templates::service::find(&mut conn, account_id, &t.name, t.language.as_deref())
                    .await?
            };
            let source = TemplateSource::new(template)?;
            let spec = json!({"type": "template",
                              "template": {"name": source.name(), "language": source.language()}});
            (Source::Template(source), spec)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "missing message body",
            ))
        }
    };
    let recipients = std::mem::take(&mut req.recipients);
    let (accepted, mut rejected) = validate_recipients(&source, recipients);

    let mut tx = idem.begin(state).await?;
    let (mut rows, opted_out) = resolve_contacts(&mut tx, account_id, accepted).await?;
    rejected.extend(opted_out);
    let channel = state.messaging.channel_for(&mut tx, account_id).await?;
    if matches!(req.kind, BulkKind::Text) {
        // Free-form text on the Cloud API: only numbers inside the 24-hour window.
        if let Some(open) = window::open_phones(&mut tx, account_id, channel).await? {
            rows.retain(|row| {
                let inside = open.contains(&row.phone);
                if !inside {
                    rejected.push(reject(row.index as usize, window::outside()));
                }
                inside
            });
        }
    }
    sort_rejections(&mut rejected);
    if req.dry_run {
        tx.rollback().await?;
        return Ok(BulkAccepted {
            batch_id: None,
            accepted: rows.len(),
            rejected,
            dry_run: true,
        });
    }
    if rows.is_empty() {
        return Err(all_rejected(&rejected));
    }
    let kind = match req.kind {
        BulkKind::Text => "text",
        BulkKind::Template => "template",
    };
    let now = now_ms();
    let batch = Batch {
        id: new_id("bat"),
        account_id: account_id.to_string(),
        status: BatchStatus::Running,
        kind: kind.to_string(),
        total: rows.len() as i64,
        created_at: now,
        started_at: None,
        finished_at: None,
    };
    store::insert(&mut tx, &batch, &spec.to_string()).await?;
    tx.batch_reached(BatchStatus::Running);
    messages::store::insert_many(&mut tx, account_id, &batch.id, kind, channel, now, &rows).await?;
    let answer = BulkAccepted {
        batch_id: Some(batch.id),
        accepted: rows.len(),
        rejected,
        dry_run: false,
    };
    idem.commit(tx, StatusCode::ACCEPTED, &answer).await?;
    Ok(answer)
}

/// A batch's view: its counts by message status, progress and times; 404 if the account has no
/// such batch.
pub async fn view(state: &AppState, account_id: &str, id: &str) -> Result<BatchView, ApiError> {
    let mut conn = state.db.acquire().await?;
    let batch = store::get(&mut conn, account_id, id)
        .await?
        .ok_or(ApiError::not_found("batch"))?;
    let counts = store::counts(&mut conn, id).await?;
    Ok(batch.view(counts))
}

/// A page of a batch's messages in recipient order (optionally one status); 404 if the account
/// has no such batch.
pub async fn messages_page(
    state: &AppState,
    account_id: &str,
    id: &str,
    status: Option<Status>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Message>, Option<String>), ApiError> {
    let mut conn = state.db.acquire().await?;
    store::get(&mut conn, account_id, id)
        .await?
        .ok_or(ApiError::not_found("batch"))?;
    Ok(messages::store::list_batch(&mut conn, account_id, id, status, cursor, limit).await?)
}

/// Cancels a running batch (see the module doc of `batches`) and returns its view.
pub async fn cancel(
    state: &AppState,
    idem: &Idempotency,
    account_id: &str,
    id: &str,
) -> Result<BatchView, ApiError> {
    let mut work = idem.begin(state).await?;
    let (batch, _) = super::cancel(&mut work, account_id, id).await?;
    let counts = store::counts(&mut work, id).await?;
    let view = batch.view(counts);
    idem.commit(work, StatusCode::OK, &view).await?;
    Ok(view)
}
