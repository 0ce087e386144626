//! Messages SQL. Every function takes the caller's connection (inside a transaction: `&mut *tx`);
//! the ones that change a status emit the matching `message.*` event on that same connection.

use sqlx::AnyConnection;

use super::{Content, Direction, ErrorInfo, Message, Status};
use crate::{
    clock::now_ms,
    db::{JsonText, QueryBuilder},
    events,
    unit_of_work::UnitOfWork,
};

const COLUMNS: &str = "id, account_id, direction, contact_id, phone, type, content, status, \
     error_code, error_message, batch_id, batch_index, reference, flow_id, created_at, sent_at, \
     delivered_at, read_at, failed_at, updated_at, channel";

/// Rows per multi-row INSERT: 500 rows x 6 bound values stays far below SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement.
pub const INSERT_CHUNK: usize = 500;

/// A `messages` row as stored (`COLUMNS`); `Message` is what it means.
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    account_id: String,
    direction: String,
    contact_id: Option<String>,
    phone: String,
    content: JsonText<Content>,
    status: String,
    error_code: Option<String>,
    error_message: Option<String>,
    batch_id: Option<String>,
    batch_index: Option<i64>,
    reference: Option<String>,
    flow_id: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
    delivered_at: Option<i64>,
    read_at: Option<i64>,
    failed_at: Option<i64>,
    updated_at: i64,
    channel: String,
}

fn decode_err(column: &str, message: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: message.into(),
    }
}

impl TryFrom<MessageRow> for Message {
    type Error = sqlx::Error;

    fn try_from(row: MessageRow) -> Result<Self, sqlx::Error> {
        Ok(Message {
            direction: Direction::parse(&row.direction).ok_or_else(|| {
                decode_err("direction", format!("unknown direction {}", row.direction))
            })?,
            status: Status::parse(&row.status)
                .ok_or_else(|| decode_err("status", format!("unknown status {}", row.status)))?,
            error: row.error_code.map(|code| ErrorInfo {
                code,
                message: row.error_message.unwrap_or_default(),
            }),
            id: row.id,
            account_id: row.account_id,
            contact_id: row.contact_id,
            phone: row.phone,
            content: row.content.0,
            batch_id: row.batch_id,
            batch_index: row.batch_index,
            reference: row.reference,
            flow_id: row.flow_id,
            created_at: row.created_at,
            sent_at: row.sent_at,
            delivered_at: row.delivered_at,
            read_at: row.read_at,
            failed_at: row.failed_at,
            updated_at: row.updated_at,
            channel: row.channel,
        })
    }
}

/// Decodes rows selected with `COLUMNS`.
fn from_rows(rows: Vec<MessageRow>) -> Result<Vec<Message>, sqlx::Error> {
    rows.into_iter().map(Message::try_from).collect()
}

/// A message to store. Outbound ones are `queued` and wait for the dispatcher; inbound ones are
/// `received`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub account_id: String,
    pub direction: Direction,
    pub contact_id: Option<String>,
    pub phone: String,
    pub content: Content,
    pub reference: Option<String>,
    pub flow_id: Option<String>,
    pub channel: &'static str,
}

/// Stores one message (and, for an inbound one, emits `message.received`).
pub async fn insert(work: &mut UnitOfWork, new: NewMessage) -> Result<Message, sqlx::Error> {
    let now = now_ms();
    let (status, dispatch_at) = match new.direction {
        Direction::Outbound => (Status::Queued, Some(now)),
        Direction::Inbound => (Status::Received, None),
    };
    sqlx::query(
        "INSERT INTO messages (id, account_id, direction, contact_id, phone, type, content, status, \
         reference, flow_id, channel, dispatch_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(&new.id)
    .bind(&new.account_id)
    .bind(new.direction.as_str())
    .bind(&new.contact_id)
    .bind(&new.phone)
    .bind(new.content.kind())
    .bind(new.content.to_json_string())
    .bind(status.as_str())
    .bind(&new.reference)
    .bind(&new.flow_id)
    .bind(new.channel)
    .bind(dispatch_at)
    .bind(now)
    .execute(&mut **work)
    .await?;
    let message = Message {
        id: new.id,
        account_id: new.account_id,
        direction: new.direction,
        contact_id: new.contact_id,
        phone: new.phone,
        content: new.content,
        status,
        error: None,
        batch_id: None,
        batch_index: None,
        reference: new.reference,
        flow_id: new.flow_id,
        created_at: now,
        sent_at: None,
        delivered_at: None,
        read_at: None,
        failed_at: None,
        updated_at: now,
        channel: new.channel.to_string(),
    };
    match new.direction {
        Direction::Inbound => {
            events::emit(
                work,
                &message.account_id,
                "message.received",
                message.to_json(),
            )
            .await?;
            work.messages_reached(Status::Received, 1);
        }
        Direction::Outbound => work.messages_queued(1),
    }
    Ok(message)
}

/// One bulk recipient's message, rendered.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub id: String,
    pub contact_id: Option<String>,
    pub phone: String,
    /// `Content` as JSON.
    pub content: String,
    pub index: i64,
    pub reference: Option<String>,
}

/// Stores a batch's messages with multi-row INSERTs, `INSERT_CHUNK` rows per statement: the
/// difference between ~20 statements and 10,000 for a full bulk request.
pub async fn insert_many(
    work: &mut UnitOfWork,
    account_id: &str,
    batch_id: &str,
    kind: &str,
    channel: &str,
    now: i64,
    rows: &[BatchRow],
) -> Result<(), sqlx::Error> {
    // $1..$5 are shared by every row; each row adds six values.
    const SHARED: usize = 5;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut sql = String::with_capacity(200 + chunk.len() * 90);
        sql.push_str(
            "INSERT INTO messages (id, account_id, direction, contact_id, phone, type, content, \
             status, batch_id, batch_index, reference, channel, dispatch_at, created_at, updated_at) \
             VALUES ",
        );
        for i in 0..chunk.len() {
            let p = SHARED + i * 6;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},$1,'outbound',${},${},$2,${},'queued',$3,${},${},$4,$5,$5,$5)",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6
            ));
        }
        let mut query = sqlx::query(&sql)
            .bind(account_id)
            .bind(kind)
            .bind(batch_id)
            .bind(channel)
            .bind(now);
        for row in chunk {
            query = query
                .bind(&row.id)
                .bind(&row.contact_id)
                .bind(&row.phone)
                .bind(&row.content)
                .bind(row.index)
                .bind(&row.reference);
        }
        query.execute(&mut **work).await?;
    }
    work.messages_queued(rows.len() as u64);
    Ok(())
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE account_id = $1 AND id = $2");
    sqlx::query_as::<_, MessageRow>(&sql)
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(Message::try_from)
        .transpose()
}

/// `GET /v1/messages` filters. Newest first; `cursor` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub contact_id: Option<String>,
    pub status: Option<Status>,
    pub direction: Option<Direction>,
    pub batch_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: i64,
}

pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    filter: &ListFilter,
) -> Result<(Vec<Message>, Option<String>), sqlx::Error> {
    let mut query = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM messages WHERE account_id = "
    ));
    query.push_bind(account_id);
    if let Some(contact_id) = &filter.contact_id {
        query
            .push(" AND contact_id = ")
            .push_bind(contact_id.as_str());
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(direction) = filter.direction {
        query
            .push(" AND direction = ")
            .push_bind(direction.as_str());
    }
    if let Some(batch_id) = &filter.batch_id {
        query.push(" AND batch_id = ").push_bind(batch_id.as_str());
    }
    if let Some(cursor) = &filter.cursor {
        query.push(" AND id < ").push_bind(cursor.as_str());
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push(crate::db::page_rows(filter.limit));
    let rows = query.build_query_as::<MessageRow>().fetch_all(conn).await?;
    page(rows, filter.limit)
}

/// A batch's messages in recipient order; `cursor` is the last id of the previous page.
pub async fn list_batch(
    conn: &mut AnyConnection,
    account_id: &str,
    batch_id: &str,
    status: Option<Status>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Message>, Option<String>), sqlx::Error> {
    let mut query = QueryBuilder::new(format!("SELECT {COLUMNS} FROM messages WHERE batch_id = "));
    query
        .push_bind(batch_id)
        .push(" AND account_id = ")
        .push_bind(account_id)
        .push(" AND id > ")
        .push_bind(cursor.unwrap_or(""));
    if let Some(status) = status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    query
        .push(" ORDER BY id LIMIT ")
        .push(crate::db::page_rows(limit));
    let rows = query.build_query_as::<MessageRow>().fetch_all(conn).await?;
    page(rows, limit)
}

/// Fails a batch's messages that nobody claimed yet (`dispatch_at` set) with `error` at `now`,
/// and returns them. The dispatcher's claim and this UPDATE exclude each other, so a message is
/// either sent or failed here, never both.
pub async fn fail_unclaimed_of_batch(
    conn: &mut AnyConnection,
    account_id: &str,
    batch_id: &str,
    error: &ErrorInfo,
    now: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let sql = format!(
        "UPDATE messages SET status = 'failed', failed_at = $1, error_code = $2, \
         error_message = $3, dispatch_at = NULL, updated_at = $1 \
         WHERE batch_id = $4 AND account_id = $5 AND dispatch_at IS NOT NULL \
         AND status = 'queued' RETURNING {COLUMNS}"
    );
    let rows = sqlx::query_as::<_, MessageRow>(&sql)
        .bind(now)
        .bind(&error.code)
        .bind(&error.message)
        .bind(batch_id)
        .bind(account_id)
        .fetch_all(conn)
        .await?;
    from_rows(rows)
}

fn page(rows: Vec<MessageRow>, limit: i64) -> Result<(Vec<Message>, Option<String>), sqlx::Error> {
    let messages = from_rows(rows)?;
    Ok(crate::db::into_page(messages, limit, |m| &m.id))
}

/// Moves a message to `to` at `at` unless that would move it backwards (or sideways); emits the
/// status's event when it moved, and a final status settles it in the unit of work (its batch
/// may be complete). `next_report_at` is stored with the transition (the channel's
/// next status report). Returns whether the message moved; `msg` is updated in memory if so.
pub async fn transition(
    work: &mut UnitOfWork,
    msg: &mut Message,
    to: Status,
    at: i64,
    error: Option<&ErrorInfo>,
    next_report_at: Option<i64>,
) -> Result<bool, sqlx::Error> {
    // Status names and columns are constants from `Status`, never user input.
    let sql = format!(
        "UPDATE messages SET status = $1, {col} = $2, error_code = COALESCE($3, error_code), \
         error_message = COALESCE($4, error_message), next_report_at = $5, dispatch_at = NULL, \
         updated_at = $6 WHERE id = $7 AND status IN {preds}",
        col = to.time_column(),
        preds = to.predecessors_sql(),
    );
    let moved = sqlx::query(&sql)
        .bind(to.as_str())
        .bind(at)
        .bind(error.map(|e| e.code.clone()))
        .bind(error.map(|e| e.message.clone()))
        .bind(next_report_at)
        .bind(now_ms().max(at))
        .bind(&msg.id)
        .execute(&mut **work)
        .await?
        .rows_affected()
        == 1;
    if moved {
        msg.apply(to, at, error);
        if let Some(event) = to.event_type() {
            events::emit(work, &msg.account_id, event, msg.to_json()).await?;
        }
        work.messages_reached(to, 1);
        if !to.in_flight() {
            work.message_settled(msg);
        }
    }
    Ok(moved)
}

/// Accounts with messages waiting for the dispatcher, and how many.
pub async fn due_accounts(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT account_id, CAST(COUNT(*) AS BIGINT) FROM messages \
         WHERE dispatch_at IS NOT NULL AND dispatch_at <= $1 GROUP BY account_id",
    )
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Claims up to `limit` of one account's waiting messages, oldest first, for sending: sets
/// `dispatched_at` (the claim's time, which is also its lease: see `stale_claims`) and clears
/// `dispatch_at`, so no other claimer (another backend's dispatcher, a batch cancel) can take
/// them. Rows another transaction holds are skipped, not waited for. Returned in id order.
pub async fn claim_due(
    conn: &mut AnyConnection,
    account_id: &str,
    now: i64,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let sql = format!(
        "UPDATE messages SET dispatch_at = NULL, dispatched_at = $1, updated_at = $1 \
         WHERE id IN (SELECT id FROM messages WHERE account_id = $2 AND dispatch_at IS NOT NULL \
           AND dispatch_at <= $1 AND status = 'queued' ORDER BY dispatch_at, id LIMIT {limit}{lock}) \
         AND dispatch_at IS NOT NULL AND status = 'queued' RETURNING {COLUMNS}",
        lock = crate::db::skip_locked(conn),
    );
    let rows = sqlx::query_as::<_, MessageRow>(&sql)
        .bind(now)
        .bind(account_id)
        .fetch_all(conn)
        .await?;
    let mut claimed = from_rows(rows)?;
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(claimed)
}

pub async fn set_contact(
    conn: &mut AnyConnection,
    id: &str,
    contact_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET contact_id = $1 WHERE id = $2")
        .bind(contact_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the provider's acceptance of a message claimed at `claimed_at` and when its first
/// report is due. Only while the claim is still this one: `false` if it was given up (requeued
/// or failed by housekeeping after the lease ran out), which leaves that decision standing.
pub async fn record_accepted(
    conn: &mut AnyConnection,
    id: &str,
    claimed_at: i64,
    provider_message_id: &str,
    next_report_at: Option<i64>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE messages SET provider_message_id = $1, next_report_at = $2 \
         WHERE id = $3 AND dispatched_at = $4 AND provider_message_id IS NULL \
         AND status = 'queued'",
    )
    .bind(provider_message_id)
    .bind(next_report_at)
    .bind(id)
    .bind(claimed_at)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Gives back a claim made at `claimed_at` that was never handed to the channel (its lease was
/// running out before its turn came), so it is due again at once.
pub async fn unclaim(
    conn: &mut AnyConnection,
    id: &str,
    claimed_at: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE messages SET dispatch_at = $1, dispatched_at = NULL, updated_at = $1 \
         WHERE id = $2 AND dispatched_at = $3 AND provider_message_id IS NULL \
         AND status = 'queued'",
    )
    .bind(now)
    .bind(id)
    .bind(claimed_at)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

#[derive(sqlx::FromRow)]
struct DueReportRow {
    #[sqlx(flatten)]
    message: MessageRow,
    dispatched_at: Option<i64>,
    next_report_at: i64,
}

/// A message whose channel report is due, as the report worker claimed it.
pub struct DueReport {
    pub message: Message,
    /// When it was handed to the channel (the report plan counts from there).
    pub dispatched_at: i64,
    /// The `next_report_at` that made it due.
    pub due_at: i64,
}

/// Claims the messages whose next channel report is due, oldest due first: inside the caller's
/// transaction their rows stay locked until it ends, and rows another backend's report round
/// holds are skipped rather than waited for (two rounds waiting on each other's rows in
/// different orders is the deadlock this replaces). Returned in id order.
pub async fn due_reports(
    conn: &mut AnyConnection,
    now: i64,
    limit: i64,
) -> Result<Vec<DueReport>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS}, dispatched_at, next_report_at FROM messages \
         WHERE next_report_at IS NOT NULL AND next_report_at <= $1 \
         ORDER BY next_report_at, id LIMIT {limit}{lock}",
        lock = crate::db::skip_locked(conn),
    );
    let rows = sqlx::query_as::<_, DueReportRow>(&sql)
        .bind(now)
        .fetch_all(conn)
        .await?;
    let mut due = rows
        .into_iter()
        .map(|row| {
            Ok(DueReport {
                message: row.message.try_into()?,
                dispatched_at: row.dispatched_at.unwrap_or_default(),
                due_at: row.next_report_at,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    due.sort_by(|a, b| a.message.id.cmp(&b.message.id));
    Ok(due)
}

/// Stops reporting on a message, only if its next report is still the one that was due: a
/// report another worker applied in the meantime (which set a new `next_report_at`) stands.
pub async fn clear_next_report(
    conn: &mut AnyConnection,
    id: &str,
    due_at: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE messages SET next_report_at = NULL WHERE id = $1 AND next_report_at = $2",
    )
    .bind(id)
    .bind(due_at)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The earliest pending report, so the report worker can sleep until then.
pub async fn next_report_due(conn: &mut AnyConnection) -> Result<Option<i64>, sqlx::Error> {
    let (min,): (Option<i64>,) =
        sqlx::query_as("SELECT MIN(next_report_at) FROM messages WHERE next_report_at IS NOT NULL")
            .fetch_one(conn)
            .await?;
    Ok(min)
}

/// Claims whose lease ran out without the provider's answer (the claimer died, or stalled, between
/// claiming and recording): ids of messages claimed before `before` and still without a provider
/// id, locked for the caller's transaction (skipping rows another backend is recovering).
pub async fn stale_claims(
    conn: &mut AnyConnection,
    channel: &str,
    before: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = format!(
        "SELECT id FROM messages WHERE provider_message_id IS NULL AND dispatched_at IS NOT NULL \
         AND dispatched_at < $1 AND status = 'queued' AND channel = $2 ORDER BY id LIMIT 500{}",
        crate::db::skip_locked(conn)
    );
    let rows: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(before)
        .bind(channel)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Puts an interrupted claim back in the queue (only for channels where a resend is safe).
pub async fn requeue(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE messages SET dispatch_at = $1, dispatched_at = NULL, updated_at = $1 \
         WHERE id = $2 AND provider_message_id IS NULL AND status = 'queued' \
         AND dispatched_at IS NOT NULL",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<Message>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE id = $1");
    sqlx::query_as::<_, MessageRow>(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(Message::try_from)
        .transpose()
}

/// Number of outbound messages waiting for the dispatcher (a gauge).
pub async fn queue_depth(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM messages WHERE dispatch_at IS NOT NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Applies a status report for one of the account's messages identified by the provider's id
/// (how a webhook-driven channel such as the WhatsApp Cloud API reports). `None`: no message has
/// that id (yet); `Some(moved)`: whether the status moved — a backward or repeated report
/// changes nothing and emits nothing.
pub async fn apply_provider_report(
    work: &mut UnitOfWork,
    account_id: &str,
    provider_message_id: &str,
    status: Status,
    at: i64,
    error: Option<&ErrorInfo>,
) -> Result<Option<bool>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE account_id = $1 AND provider_message_id = $2 \
         AND direction = 'outbound'"
    );
    let row = sqlx::query_as::<_, MessageRow>(&sql)
        .bind(account_id)
        .bind(provider_message_id)
        .fetch_optional(&mut **work)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut msg = Message::try_from(row)?;
    Ok(Some(
        transition(work, &mut msg, status, at, error, None).await?,
    ))
}

/// Whether the account already has a message with this provider id (an inbound message Meta
/// delivered twice).
pub async fn provider_id_known(
    conn: &mut AnyConnection,
    account_id: &str,
    provider_message_id: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM messages WHERE account_id = $1 AND provider_message_id = $2",
    )
    .bind(account_id)
    .bind(provider_message_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

pub async fn set_provider_id(
    conn: &mut AnyConnection,
    id: &str,
    provider_message_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET provider_message_id = $1 WHERE id = $2")
        .bind(provider_message_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// When the number last wrote to the account through `channel` (the WhatsApp customer-service
/// window opens then).
pub async fn last_inbound_at(
    conn: &mut AnyConnection,
    account_id: &str,
    phone: &str,
    channel: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let (at,): (Option<i64>,) = sqlx::query_as(
        "SELECT MAX(created_at) FROM messages WHERE account_id = $1 AND phone = $2 \
         AND direction = 'inbound' AND channel = $3",
    )
    .bind(account_id)
    .bind(phone)
    .bind(channel)
    .fetch_one(conn)
    .await?;
    Ok(at)
}

/// Re-queues a message claimed at `claimed_at` that the channel refused for throughput, to be
/// sent after `at`.
/// `counted`: the provider refused it (the refusal counts towards the message's limit).
pub async fn requeue_throttled(
    conn: &mut AnyConnection,
    id: &str,
    claimed_at: i64,
    at: i64,
    counted: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE messages SET dispatch_at = $1, dispatched_at = NULL, \
         throttle_retries = throttle_retries + $2 WHERE id = $3 AND dispatched_at = $4 \
         AND status = 'queued' AND provider_message_id IS NULL",
    )
    .bind(at)
    .bind(i64::from(counted))
    .bind(id)
    .bind(claimed_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn throttle_retries(conn: &mut AnyConnection, id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT throttle_retries FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(n)
}
