//! Bulk sends (`POST /v1/messages/bulk`): one text or template with `{{variables}}` and 1 to
//! 10,000 recipients. Every recipient is validated first (rejections reported by index), the
//! content is rendered per recipient and fixed at creation, and the accepted messages are
//! stored in one transaction with multi-row INSERTs. The dispatcher then sends them at the
//! channel's pace; a restart resumes from the rows.
//!
//! A batch is `running` until none of its messages is `queued` or `sent` (then `completed`, with
//! `batch.completed`), or until cancelled: cancelling fails every message not yet handed to the
//! channel (`failed`, error `batch_cancelled`) and emits `batch.completed` with status
//! `cancelled`; messages already handed over finish their lifecycle.

#[cfg(test)]
mod api_tests;
pub mod error;
pub mod service;
pub mod store;

pub use error::BatchError;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::{
    clock::{now_ms, rfc3339},
    contacts, events,
    messages::{self, render::TemplateSource, store::BatchRow, Content, TextContent},
    refusal::Refusal,
    templates::{self, Compiled},
    unit_of_work::UnitOfWork,
};

pub const MAX_RECIPIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Running,
    Completed,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "running",
            BatchStatus::Completed => "completed",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(BatchStatus::Running),
            "completed" => Some(BatchStatus::Completed),
            "cancelled" => Some(BatchStatus::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub account_id: String,
    pub status: BatchStatus,
    pub kind: String,
    pub total: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Messages of a batch by status; they add up to `total` (cancelled ones are `failed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Counts {
    pub queued: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    #[schema(example = "bat_01jd7k2v8m3q4r5s6t7u8v9w0x")]
    pub id: String,
    pub status: BatchStatus,
    /// `text` or `template`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Accepted recipients.
    pub total: i64,
    pub counts: Counts,
    /// Share of messages that reached `delivered`, `read` or `failed`, 0 to 1.
    pub progress: f64,
    pub created_at: String,
    /// When the first message was handed to the channel.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl Batch {
    pub fn view(&self, counts: Counts) -> BatchView {
        let done = counts.delivered + counts.read + counts.failed;
        let progress = if self.total > 0 {
            ((done as f64 / self.total as f64) * 10_000.0).round() / 10_000.0
        } else {
            1.0
        };
        BatchView {
            id: self.id.clone(),
            status: self.status,
            kind: self.kind.clone(),
            total: self.total,
            counts,
            progress,
            created_at: rfc3339(self.created_at),
            started_at: self.started_at.map(rfc3339),
            finished_at: self.finished_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkKind {
    Text,
    Template,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkText {
    /// 1 to 4096 characters after rendering; `{{variables}}` filled per recipient.
    #[schema(example = "Hi {{name}}, your order has shipped")]
    pub body: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkTemplate {
    #[schema(example = "order_update")]
    pub name: String,
    /// Optional when the account has the template in one language only.
    #[schema(example = "en")]
    pub language: Option<String>,
}

/// One recipient of a bulk request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// E.164.
    #[schema(example = "+14155550101")]
    pub to: String,
    /// Values for the body's `{{variables}}`: strings, numbers or booleans.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Your reference for this recipient (1 to 128 characters), shown on its message.
    #[serde(default)]
    pub reference: Option<String>,
}

/// `POST /v1/messages/bulk`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[serde(rename = "type")]
    pub kind: BulkKind,
    #[serde(default)]
    pub text: Option<BulkText>,
    #[serde(default)]
    pub template: Option<BulkTemplate>,
    /// 1 to 10,000. Each is validated on its own: a bad recipient is rejected by index, the
    /// others are accepted.
    #[schema(value_type = Vec<Recipient>)]
    pub recipients: Vec<Value>,
    /// Validate only: nothing is stored or sent.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Rejection {
    pub index: usize,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkAccepted {
    /// `null` for a dry run.
    pub batch_id: Option<String>,
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
    pub dry_run: bool,
}

/// What the body of every recipient's message is rendered from.
pub enum Source {
    Text(Compiled),
    Template(TemplateSource),
}

/// A recipient that passed validation, with its rendered content.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub index: usize,
    pub phone: String,
    pub content: Content,
    pub reference: Option<String>,
}

/// Checks the request as a whole (type, body, recipient count) before looking at recipients.
pub fn check_shape(request: &BulkRequest) -> Result<(), Refusal> {
    if request.recipients.is_empty() {
        return Err(Refusal::unacceptable(
            "no_recipients",
            "recipients: at least one recipient",
        ));
    }
    if request.recipients.len() > MAX_RECIPIENTS {
        return Err(Refusal::unacceptable(
            "too_many_recipients",
            format!(
                "recipients: at most {MAX_RECIPIENTS} per request, got {}",
                request.recipients.len()
            ),
        ));
    }
    match request.kind {
        BulkKind::Text if request.text.is_none() || request.template.is_some() => Err(
            Refusal::invalid("invalid_body", "type text needs `text` (and no `template`)"),
        ),
        BulkKind::Template if request.template.is_none() || request.text.is_some() => {
            Err(Refusal::invalid(
                "invalid_body",
                "type template needs `template` (and no `text`)",
            ))
        }
        _ => Ok(()),
    }
}

/// The source for a text bulk: the body compiled as a template.
pub fn text_source(body: &str) -> Result<Source, Refusal> {
    messages::validate_text("text.body", body)?;
    let compiled = templates::compile(body)
        .map_err(|e| Refusal::unacceptable("invalid_text", format!("text.body: {e}")))?;
    Ok(Source::Text(compiled))
}

fn reject(index: usize, refusal: Refusal) -> Rejection {
    Rejection {
        index,
        code: refusal.code.to_string(),
        message: refusal.message,
    }
}

fn parse_recipient(value: Value) -> Result<Recipient, Refusal> {
    serde_json::from_value(value).map_err(|e| {
        Refusal::unacceptable(
            "invalid_recipient",
            format!("recipient: {e} (expected {{\"to\",\"variables\",\"reference\"}})"),
        )
    })
}

/// Validates and renders every recipient: pure CPU work, no database. Duplicated numbers are
/// rejected after their first appearance, so nobody gets the same bulk message twice.
pub fn validate_recipients(
    source: &Source,
    recipients: Vec<Value>,
) -> (Vec<Accepted>, Vec<Rejection>) {
    let mut accepted = Vec::with_capacity(recipients.len());
    let mut rejected = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(recipients.len());
    for (index, value) in recipients.into_iter().enumerate() {
        match validate_one(source, value, index, &seen) {
            Ok(ok) => {
                seen.insert(ok.phone.clone(), index);
                accepted.push(ok);
            }
            Err(err) => rejected.push(reject(index, err)),
        }
    }
    (accepted, rejected)
}

fn validate_one(
    source: &Source,
    value: Value,
    index: usize,
    seen: &HashMap<String, usize>,
) -> Result<Accepted, Refusal> {
    let recipient = parse_recipient(value)?;
    contacts::validate_phone_field("to", &recipient.to)?;
    if let Some(first) = seen.get(&recipient.to) {
        return Err(Refusal::unacceptable(
            "duplicate_recipient",
            format!("to: the same number as recipients[{first}]"),
        ));
    }
    if let Some(reference) = &recipient.reference {
        messages::validate_reference("reference", reference)?;
    }
    let content = match source {
        Source::Text(compiled) => {
            let body = compiled.render(&recipient.variables)?;
            messages::validate_text("text.body (rendered)", &body)?;
            Content::Text(TextContent { body })
        }
        Source::Template(template) => Content::Template(template.render(&recipient.variables)?),
    };
    Ok(Accepted {
        index,
        phone: recipient.to,
        content,
        reference: recipient.reference,
    })
}

/// Drops recipients whose contact opted out and links the others to their existing contact.
/// Returns the rows to store (ids in recipient order) and the new rejections.
pub async fn resolve_contacts(
    conn: &mut AnyConnection,
    account_id: &str,
    accepted: Vec<Accepted>,
) -> Result<(Vec<BatchRow>, Vec<Rejection>), sqlx::Error> {
    let phones: Vec<&str> = accepted.iter().map(|a| a.phone.as_str()).collect();
    let known: HashMap<String, (String, bool)> =
        store::contacts_by_phone(conn, account_id, &phones)
            .await?
            .into_iter()
            .map(|(phone, id, opted_in)| (phone, (id, opted_in)))
            .collect();
    // Monotonic ULIDs: ids in recipient order even within one millisecond, so paging a batch's
    // messages by id is paging in recipient order.
    let mut ids = ulid::Generator::new();
    let mut rows = Vec::with_capacity(accepted.len());
    let mut rejected = Vec::new();
    for a in accepted {
        let contact_id = match known.get(&a.phone) {
            Some((_, false)) => {
                rejected.push(reject(
                    a.index,
                    Refusal::unacceptable(
                        "contact_opted_out",
                        "to: this contact opted out of messages",
                    ),
                ));
                continue;
            }
            Some((id, true)) => Some(id.clone()),
            None => None,
        };
        let ulid = ids
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string()
            .to_ascii_lowercase();
        rows.push(BatchRow {
            id: format!("msg_{ulid}"),
            contact_id,
            phone: a.phone,
            content: a.content.to_json_string(),
            index: a.index as i64,
            reference: a.reference,
        });
    }
    Ok((rows, rejected))
}

/// Completes the batch if none of its messages is still queued or sent, emitting
/// `batch.completed`. Returns whether it completed now.
pub async fn check_completed(
    work: &mut UnitOfWork,
    account_id: &str,
    batch_id: &str,
) -> Result<bool, sqlx::Error> {
    // Serialise the check per batch. Under PostgreSQL (READ COMMITTED, several connections and
    // backends) two transactions each settling one of the last two messages would otherwise
    // both still see the other's message in flight, and the batch would never complete. Waiting
    // for the batch row lock means the second one counts after the first has committed. On
    // SQLite (one connection) transactions are serial anyway and this is a no-op.
    if !store::lock_running(work, batch_id).await? || store::in_flight(work, batch_id).await? > 0 {
        return Ok(false);
    }
    let now = now_ms();
    if !store::finish(work, batch_id, BatchStatus::Completed, now).await? {
        return Ok(false);
    }
    let Some(batch) = store::get(work, account_id, batch_id).await? else {
        return Ok(false);
    };
    let counts = store::counts(work, batch_id).await?;
    let data = serde_json::to_value(batch.view(counts)).expect("batch serializes");
    events::emit(work, account_id, "batch.completed", data).await?;
    work.batch_reached(BatchStatus::Completed);
    Ok(true)
}

/// Recipients rejected at acceptance are reported in index order.
pub fn sort_rejections(rejected: &mut [Rejection]) {
    rejected.sort_by_key(|r| r.index);
}

/// Fails a whole request whose recipients were all rejected, naming the first few reasons.
pub fn all_rejected(rejected: &[Rejection]) -> Refusal {
    let sample = rejected
        .iter()
        .take(5)
        .map(|r| format!("recipients[{}]: {} ({})", r.index, r.message, r.code))
        .collect::<Vec<_>>()
        .join("; ");
    Refusal::unacceptable(
        "no_valid_recipients",
        format!(
            "all {} recipients were rejected; validate with dry_run to see each: {sample}",
            rejected.len()
        ),
    )
}
