//! The delivery log as the console and the admin API read it.

use serde::Serialize;

use super::INSERT_CHUNK;
use crate::{
    clock::rfc3339,
    db::{Db, QueryBuilder},
};

/// One attempt as the delivery log shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// RFC 3339.
    pub at: String,
    /// `success`, `http_error`, `timeout`, `connect_error`, `blocked` or `gone`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub response: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    #[schema(example = "dlv_01jd8zq4y1v2k3m4n5p6q7r8s9")]
    pub id: String,
    pub endpoint_id: String,
    /// Also the `webhook-id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: Vec<AttemptView>,
    /// RFC 3339, while pending.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub cursor: Option<String>,
    pub limit: i64,
}

/// One of the account's deliveries with its attempts.
pub async fn get_delivery(
    db: &Db,
    account_id: &str,
    delivery_id: &str,
) -> Result<Option<DeliveryView>, sqlx::Error> {
    let row: Option<DeliveryRow> = sqlx::query_as(
        "SELECT id, endpoint_id, event_id, event_type, status, next_attempt_at, created_at \
         FROM webhook_deliveries WHERE id = $1 AND account_id = $2",
    )
    .bind(delivery_id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut attempts = attempts_of(db, std::slice::from_ref(&row.0)).await?;
    Ok(Some(delivery_view(row, &mut attempts)))
}

type DeliveryRow = (String, String, String, String, String, Option<i64>, i64);

fn delivery_view(
    (id, endpoint_id, event_id, event_type, status, next, created_at): DeliveryRow,
    attempts: &mut std::collections::HashMap<String, Vec<AttemptView>>,
) -> DeliveryView {
    DeliveryView {
        attempts: attempts.remove(&id).unwrap_or_default(),
        next_attempt_at: next.filter(|_| status == "pending").map(rfc3339),
        id,
        endpoint_id,
        event_id,
        event_type,
        status,
        created_at: rfc3339(created_at),
    }
}

/// A page of an endpoint's deliveries, newest first; the cursor is the last id shown.
pub async fn list_deliveries(
    db: &Db,
    endpoint_id: &str,
    filter: &DeliveryFilter,
) -> Result<(Vec<DeliveryView>, Option<String>), sqlx::Error> {
    let mut query = QueryBuilder::new(
        "SELECT id, endpoint_id, event_id, event_type, status, next_attempt_at, created_at \
         FROM webhook_deliveries WHERE endpoint_id = ",
    );
    query.push_bind(endpoint_id);
    for (column, value) in [
        ("status", &filter.status),
        ("event_type", &filter.event_type),
    ] {
        if let Some(value) = value {
            query
                .push(format_args!(" AND {column} = "))
                .push_bind(value);
        }
    }
    if let Some(cursor) = &filter.cursor {
        query.push(" AND id < ").push_bind(cursor);
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(crate::db::page_rows(filter.limit));
    let rows = query.build_query_as::<DeliveryRow>().fetch_all(db).await?;
    let (rows, next_cursor) = crate::db::into_page(rows, filter.limit, |r| &r.0);
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut attempts = attempts_of(db, &ids).await?;
    let data = rows
        .into_iter()
        .map(|row| delivery_view(row, &mut attempts))
        .collect();
    Ok((data, next_cursor))
}

async fn attempts_of(
    db: &Db,
    delivery_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<AttemptView>>, sqlx::Error> {
    let mut out: std::collections::HashMap<String, Vec<AttemptView>> = Default::default();
    for chunk in delivery_ids.chunks(INSERT_CHUNK) {
        let mut query = QueryBuilder::new(
            "SELECT delivery_id, at, outcome, status_code, latency_ms, error, response \
             FROM webhook_attempts WHERE delivery_id IN (",
        );
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(id);
        }
        list.push_unseparated(") ORDER BY id");
        for (delivery_id, at, outcome, status_code, latency_ms, error, response) in query
            .build_query_as::<(
                String,
                i64,
                String,
                Option<i64>,
                i64,
                Option<String>,
                Option<String>,
            )>()
            .fetch_all(db)
            .await?
        {
            out.entry(delivery_id).or_default().push(AttemptView {
                at: rfc3339(at),
                outcome,
                status_code,
                latency_ms,
                error,
                response,
            });
        }
    }
    Ok(out)
}

/// The endpoint of one of the account's deliveries (the retry route's check).
pub async fn delivery_endpoint(
    db: &Db,
    account_id: &str,
    delivery_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT endpoint_id FROM webhook_deliveries WHERE id = $1 AND account_id = $2",
    )
    .bind(delivery_id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(endpoint_id,)| endpoint_id))
}
