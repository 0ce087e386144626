//! Flows and chatbot runs SQL, scoped by account.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::{Definition, Flow};
use crate::{
    clock::now_ms,
    contacts::{self, ChatbotState},
    db::JsonText,
    ids::new_id,
};

const FLOW_COLUMNS: &str = "id, account_id, name, definition, created_at, updated_at";

/// A row of `FLOW_COLUMNS`, as stored; `Flow` is it with the definition parsed.
#[derive(sqlx::FromRow)]
struct FlowRow {
    id: String,
    account_id: String,
    name: String,
    definition: JsonText<Definition>,
    created_at: i64,
    updated_at: i64,
}

impl From<FlowRow> for Flow {
    fn from(row: FlowRow) -> Self {
        Flow {
            id: row.id,
            account_id: row.account_id,
            name: row.name,
            definition: row.definition.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
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
    let flows = rows.into_iter().map(Flow::from).collect();
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
    Ok(row.map(Flow::from))
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
) -> Result<bool, sqlx::Error> {
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT contact_id FROM chatbot_runs WHERE account_id = $1 AND flow_id = $2",
    )
    .bind(account_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for contact_id in runs {
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

/// A row of `chatbot_runs`, as stored.
#[derive(sqlx::FromRow)]
struct RunRow {
    contact_id: String,
    flow_id: String,
    step: String,
    paused: i64,
    variables: JsonText<Map<String, Value>>,
    started_at: i64,
}

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Self {
        Run {
            contact_id: row.contact_id,
            flow_id: row.flow_id,
            step: row.step,
            paused: row.paused != 0,
            variables: row.variables.0,
            started_at: row.started_at,
        }
    }
}

pub async fn get_run(
    conn: &mut AnyConnection,
    account_id: &str,
    contact_id: &str,
) -> Result<Option<Run>, sqlx::Error> {
    let row: Option<RunRow> = sqlx::query_as(
        "SELECT contact_id, flow_id, step, paused, variables, started_at FROM chatbot_runs \
         WHERE account_id = $1 AND contact_id = $2",
    )
    .bind(account_id)
    .bind(contact_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Run::from))
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
