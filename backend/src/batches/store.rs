//! Batches SQL, scoped by account where a caller names a batch.

use sqlx::AnyConnection;

use super::{Batch, BatchStatus, Counts};
use crate::messages::Status;

type Row = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

const COLUMNS: &str = "id, account_id, status, type, total, created_at, started_at, finished_at";

fn from_row(row: Row) -> Result<Batch, sqlx::Error> {
    let (id, account_id, status, kind, total, created_at, started_at, finished_at) = row;
    Ok(Batch {
        id,
        account_id,
        status: BatchStatus::parse(&status).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "status".into(),
            source: format!("unknown batch status {status}").into(),
        })?,
        kind,
        total,
        created_at,
        started_at,
        finished_at,
    })
}

pub async fn insert(
    conn: &mut AnyConnection,
    batch: &Batch,
    spec: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO batches (id, account_id, status, type, spec, total, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&batch.id)
    .bind(&batch.account_id)
    .bind(batch.status.as_str())
    .bind(&batch.kind)
    .bind(spec)
    .bind(batch.total)
    .bind(batch.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM batches WHERE account_id = $1 AND id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(from_row).transpose()
}

/// The batch's messages by status, from one query, so the counts always add up to the total.
pub async fn counts(conn: &mut AnyConnection, batch_id: &str) -> Result<Counts, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, CAST(COUNT(*) AS BIGINT) FROM messages WHERE batch_id = $1 GROUP BY status",
    )
    .bind(batch_id)
    .fetch_all(conn)
    .await?;
    let mut counts = Counts::default();
    for (status, n) in rows {
        match Status::parse(&status) {
            Some(Status::Queued) => counts.queued += n,
            Some(Status::Sent) => counts.sent += n,
            Some(Status::Delivered) => counts.delivered += n,
            Some(Status::Read) => counts.read += n,
            Some(Status::Failed) | Some(Status::Received) | None => counts.failed += n,
        }
    }
    Ok(counts)
}

/// Messages of the batch still waiting for the channel.
pub async fn in_flight(conn: &mut AnyConnection, batch_id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM messages \
         WHERE batch_id = $1 AND status IN ('queued', 'sent')",
    )
    .bind(batch_id)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Takes the row lock of a running batch until the end of the transaction (a no-op UPDATE, the
/// portable spelling of `SELECT ... FOR UPDATE`); `false` if the batch is not running.
pub async fn lock_running(conn: &mut AnyConnection, batch_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE batches SET updated_at = updated_at WHERE id = $1 AND status = 'running'",
    )
    .bind(batch_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Moves a running batch to `completed` or `cancelled`; `false` if it was not running.
pub async fn finish(
    conn: &mut AnyConnection,
    batch_id: &str,
    status: BatchStatus,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE batches SET status = $1, finished_at = $2, updated_at = $2 \
         WHERE id = $3 AND status = 'running'",
    )
    .bind(status.as_str())
    .bind(now)
    .bind(batch_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Records when the first message was handed to the channel.
pub async fn mark_started(
    conn: &mut AnyConnection,
    batch_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE batches SET started_at = $1, updated_at = $1 WHERE id = $2 AND started_at IS NULL",
    )
    .bind(now)
    .bind(batch_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Existing contacts among `phones`: (phone, contact id, opted in).
pub async fn contacts_by_phone(
    conn: &mut AnyConnection,
    account_id: &str,
    phones: &[&str],
) -> Result<Vec<(String, String, bool)>, sqlx::Error> {
    // Read-only lookup in the contacts table (owned by `contacts`): one IN query per 500
    // numbers instead of 10,000 single lookups.
    let mut out = Vec::new();
    for chunk in phones.chunks(500) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT phone, id, CAST(CASE WHEN opted_in THEN 1 ELSE 0 END AS BIGINT) \
             FROM contacts WHERE account_id = $1 AND phone IN ({placeholders})"
        );
        let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql).bind(account_id);
        for phone in chunk {
            query = query.bind(*phone);
        }
        for (phone, id, opted_in) in query.fetch_all(&mut *conn).await? {
            out.push((phone, id, opted_in != 0));
        }
    }
    Ok(out)
}
