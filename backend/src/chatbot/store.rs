//! Flows and chatbot runs SQL, scoped by account.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::{Definition, Flow};
use crate::{
    clock::now_ms,
    contacts::{self, ChatbotState},
    error::ApiError,
    ids::new_id,
};

type FlowRow = (String, String, String, String, i64, i64);

const FLOW_COLUMNS: &str = "id, account_id, name, definition, created_at, updated_at";

fn flow_from_row(row: FlowRow) -> Result<Flow, sqlx::Error> {
    let (id, account_id, name, definition, created_at, updated_at) = row;
    Ok(Flow {
        id,
        account_id,
        name,
        definition: serde_json::from_str(&definition).map_err(|e| sqlx::Error::ColumnDecode {
            index: "definition".into(),
            source: Box::new(e),
        })?,
        created_at,
        updated_at,
    })
}

pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Flow>, Option<String>), sqlx::Error> {
    let rows: Vec<FlowRow> = sqlx::query_as(&format!(
        "SELECT {FLOW_COLUMNS} FROM flows WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT {}",
        crate::db::page_rows(limit)
    ))
    .bind(account_id)
    .bind(cursor.unwrap_or(""))
    .fetch_all(conn)
    .await?;
    let flows = rows
        .into_iter()
        .map(flow_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::db::into_page(flows, limit, |f| &f.id))
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Flow>, sqlx::Error> {
    let row: Option<FlowRow> = sqlx::query_as(&format!(
        "SELECT {FLOW_COLUMNS} FROM flows WHERE account_id = $1 AND id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(flow_from_row).transpose()
}

pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    definition: Definition,
) -> Result<Flow, sqlx::Error> {
    let now = now_ms();
    let flow = Flow {
        id: new_id("flw"),
        account_id: account_id.to_string(),
        name: name.to_string(),
        definition,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO flows (id, account_id, name, definition, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&flow.id)
    .bind(account_id)
    .bind(name)
    .bind(serde_json::to_string(&flow.definition).expect("definition serializes"))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(flow)
}

pub async fn update(conn: &mut AnyConnection, flow: &Flow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE flows SET name = $1, definition = $2, updated_at = $3 WHERE account_id = $4 AND id = $5",
    )
    .bind(&flow.name)
    .bind(serde_json::to_string(&flow.definition).expect("definition serializes"))
    .bind(flow.updated_at)
    .bind(&flow.account_id)
    .bind(&flow.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a flow and ends every run in it (those contacts leave the flow).
pub async fn delete(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<bool, ApiError> {
    let runs: Vec<(String,)> = sqlx::query_as(
        "SELECT contact_id FROM chatbot_runs WHERE account_id = $1 AND flow_id = $2",
    )
    .bind(account_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for (contact_id,) in runs {
        delete_run(conn, account_id, &contact_id).await?;
        contacts::set_chatbot(conn, account_id, &contact_id, None).await?;
    }
    Ok(
        sqlx::query("DELETE FROM flows WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// A contact's place in a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub contact_id: String,
    pub flow_id: String,
    pub step: String,
    pub paused: bool,
    pub variables: Map<String, Value>,
    pub started_at: i64,
}

impl Run {
    pub fn state(&self) -> ChatbotState {
        ChatbotState {
            flow_id: self.flow_id.clone(),
            step: self.step.clone(),
            paused: self.paused,
        }
    }
}

pub async fn get_run(
    conn: &mut AnyConnection,
    account_id: &str,
    contact_id: &str,
) -> Result<Option<Run>, sqlx::Error> {
    let row: Option<(String, String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT contact_id, flow_id, step, paused, variables, started_at FROM chatbot_runs \
         WHERE account_id = $1 AND contact_id = $2",
    )
    .bind(account_id)
    .bind(contact_id)
    .fetch_optional(conn)
    .await?;
    row.map(
        |(contact_id, flow_id, step, paused, variables, started_at)| {
            Ok(Run {
                contact_id,
                flow_id,
                step,
                paused: paused != 0,
                variables: serde_json::from_str(&variables).map_err(|e| {
                    sqlx::Error::ColumnDecode {
                        index: "variables".into(),
                        source: Box::new(e),
                    }
                })?,
                started_at,
            })
        },
    )
    .transpose()
}

/// Saves the run and mirrors its state into `contacts.chatbot` (same connection, same
/// transaction: the two never disagree).
pub async fn save_run(
    conn: &mut AnyConnection,
    account_id: &str,
    run: &Run,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO chatbot_runs (contact_id, account_id, flow_id, step, paused, variables, \
         started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (contact_id) DO UPDATE SET flow_id = excluded.flow_id, step = excluded.step, \
         paused = excluded.paused, variables = excluded.variables, started_at = excluded.started_at, \
         updated_at = excluded.updated_at",
    )
    .bind(&run.contact_id)
    .bind(account_id)
    .bind(&run.flow_id)
    .bind(&run.step)
    .bind(i64::from(run.paused))
    .bind(Value::Object(run.variables.clone()).to_string())
    .bind(run.started_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    contacts::set_chatbot(conn, account_id, &run.contact_id, Some(&run.state())).await
}

pub async fn delete_run(
    conn: &mut AnyConnection,
    account_id: &str,
    contact_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM chatbot_runs WHERE account_id = $1 AND contact_id = $2")
        .bind(account_id)
        .bind(contact_id)
        .execute(conn)
        .await?;
    Ok(())
}
