//! Bulk operations behind `/v1/messages/bulk` and `/v1/batches/...`: prepare a bulk request
//! (everything that needs no transaction), accept it, read a batch and its messages, cancel it.
//! Writes happen in the caller's unit of work, which the caller commits (through the request's
//! idempotency claim).

use serde_json::{json, Value};
use sqlx::AnyConnection;

use super::{
    all_rejected, check_shape, reject, resolve_contacts, sort_rejections, store, text_source,
    validate_recipients, Accepted, Batch, BatchError, BatchStatus, BatchView, BulkAccepted,
    BulkKind, BulkRequest, Rejection, Source,
};
use crate::{
    channel::{window, Messaging},
    clock::now_ms,
    db::{Db, Page},
    events,
    ids::new_id,
    messages::{self, render::TemplateSource, ErrorInfo, Message, Status},
    refusal::Refusal,
    templates,
    unit_of_work::UnitOfWork,
};

/// A bulk request whose shape, body and recipients are checked and rendered: what is left to do
/// needs the request's transaction.
pub struct PreparedBulk {
    kind: BulkKind,
    /// The batch's stored description of its content.
    spec: Value,
    accepted: Vec<Accepted>,
    rejected: Vec<Rejection>,
    dry_run: bool,
}

/// Checks the request as a whole, reads and compiles its template, and validates and renders
/// every recipient.
pub async fn prepare(
    db: &Db,
    account_id: &str,
    mut req: BulkRequest,
) -> Result<PreparedBulk, BatchError> {
    check_shape(&req)?;
    let (source, spec) = match (req.kind, &req.text, &req.template) {
        (BulkKind::Text, Some(text), _) => (
            text_source(&text.body)?,
            json!({"type": "text", "text": {"body": text.body}}),
        ),
        (BulkKind::Template, _, Some(t)) => {
            let template = {
                let mut conn = db.acquire().await?;
                templates::service::find(&mut conn, account_id, &t.name, t.language.as_deref())
                    .await?
            };
            let source = TemplateSource::new(template)?;
            let spec = json!({"type": "template",
                              "template": {"name": source.name(), "language": source.language()}});
            (Source::Template(source), spec)
        }
        _ => return Err(Refusal::invalid("invalid_body", "missing message body").into()),
    };
    let recipients = std::mem::take(&mut req.recipients);
    let (accepted, rejected) = validate_recipients(&source, recipients);
    Ok(PreparedBulk {
        kind: req.kind,
        spec,
        accepted,
        rejected,
        dry_run: req.dry_run,
    })
}

/// Accepts a prepared bulk request: links the recipients to their contacts (opted-out ones
/// rejected, and on the Cloud API, for text, those outside the customer-service window), then
/// stores the batch and its messages in `work`. A dry run stores nothing and answers what
/// would be accepted; the caller rolls `work` back. `no_valid_recipients` when nobody is left.
pub async fn accept(
    work: &mut UnitOfWork,
    messaging: &Messaging,
    account_id: &str,
    req: PreparedBulk,
) -> Result<BulkAccepted, BatchError> {
    let PreparedBulk {
        kind,
        spec,
        accepted,
        mut rejected,
        dry_run,
    } = req;
    let (mut rows, opted_out) = resolve_contacts(work, account_id, accepted).await?;
    rejected.extend(opted_out);
    let channel = messaging.channel_for(work, account_id).await?;
    if matches!(kind, BulkKind::Text) {
        // Free-form text on the Cloud API: only numbers inside the 24-hour window.
        if let Some(open) = window::open_phones(work, account_id, channel).await? {
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
    if dry_run {
        return Ok(BulkAccepted {
            batch_id: None,
            accepted: rows.len(),
            rejected,
            dry_run: true,
        });
    }
    if rows.is_empty() {
        return Err(all_rejected(&rejected).into());
    }
    let kind = match kind {
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
    store::insert(work, &batch, &spec.to_string()).await?;
    work.batch_reached(BatchStatus::Running);
    messages::store::insert_many(work, account_id, &batch.id, kind, channel, now, &rows).await?;
    Ok(BulkAccepted {
        batch_id: Some(batch.id),
        accepted: rows.len(),
        rejected,
        dry_run: false,
    })
}

/// A batch's view: its counts by message status, progress and times; `NotFound` if the account
/// has no such batch.
pub async fn view(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<BatchView, BatchError> {
    let batch = store::get(conn, account_id, id)
        .await?
        .ok_or(BatchError::NotFound)?;
    let counts = store::counts(conn, id).await?;
    Ok(batch.view(counts))
}

/// A page of a batch's messages in recipient order (optionally one status); `NotFound` if the
/// account has no such batch.
pub async fn messages_page(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    status: Option<Status>,
    page: &Page,
) -> Result<(Vec<Message>, Option<String>), BatchError> {
    store::get(conn, account_id, id)
        .await?
        .ok_or(BatchError::NotFound)?;
    let cursor = page.cursor.as_deref();
    Ok(messages::store::list_batch(conn, account_id, id, status, cursor, page.limit).await?)
}

/// Cancels a running batch in `work` (see the module doc of `batches`) and returns its view:
/// every message not yet claimed by the dispatcher fails (`batch_cancelled`, one
/// `message.failed` each) and the batch announces `batch.completed` as `cancelled`. A cancelled
/// batch changes nothing; a completed one is `batch_completed`.
pub async fn cancel(
    work: &mut UnitOfWork,
    account_id: &str,
    id: &str,
) -> Result<BatchView, BatchError> {
    let batch = store::get(work, account_id, id)
        .await?
        .ok_or(BatchError::NotFound)?;
    match batch.status {
        BatchStatus::Cancelled => return Ok(batch.view(store::counts(work, id).await?)),
        BatchStatus::Completed => return Err(already_completed()),
        BatchStatus::Running => {}
    }
    let now = now_ms();
    let error = ErrorInfo {
        code: "batch_cancelled".into(),
        message: "the batch was cancelled before this message was sent".into(),
    };
    let failed =
        messages::store::fail_unclaimed_of_batch(work, account_id, id, &error, now).await?;
    for msg in &failed {
        events::emit(work, account_id, "message.failed", msg.to_json()).await?;
    }
    let finished = store::finish(work, id, BatchStatus::Cancelled, now).await?;
    let batch = store::get(work, account_id, id)
        .await?
        .ok_or(BatchError::NotFound)?;
    // Another transaction (PostgreSQL, several backends) may have completed or cancelled the
    // batch since it was read above: then it is not ours to announce.
    if !finished {
        return match batch.status {
            BatchStatus::Completed => Err(already_completed()),
            _ => Ok(batch.view(store::counts(work, id).await?)),
        };
    }
    let view = batch.view(store::counts(work, id).await?);
    let data = serde_json::to_value(&view).expect("batch serializes");
    events::emit(work, account_id, "batch.completed", data).await?;
    work.messages_reached(Status::Failed, failed.len() as u64);
    work.batch_reached(BatchStatus::Cancelled);
    Ok(view)
}

fn already_completed() -> BatchError {
    Refusal::conflict(
        "batch_completed",
        "the batch already completed; there is nothing left to cancel",
    )
    .into()
}
