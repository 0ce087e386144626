//! What the console and the API do with an account's flows, with the rules that go with them: a
//! flow is checked as a whole on every save, deleting one ends the runs in it, and a trigger's
//! variables are plain values. Moving a contact through a flow is `engine`'s. The HTTP edge turns
//! [`ChatbotError`] into its answer.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::{store, ChatbotError, Definition, Flow, FlowInput, FlowPatch};
use crate::{
    clock::now_ms,
    db::{Db, Page},
    refusal::Refusal,
    templates,
};

/// The account's flows.
pub struct Flows<'a> {
    pub db: &'a Db,
}

impl Flows<'_> {
    /// One page in creation order, and the cursor of the next.
    pub async fn list(
        &self,
        account_id: &str,
        page: &Page,
    ) -> Result<(Vec<Flow>, Option<String>), ChatbotError> {
        let mut conn = self.db.acquire().await?;
        Ok(store::list(&mut conn, account_id, page.cursor.as_deref(), page.limit).await?)
    }

    #[tracing::instrument(skip_all, fields(flow_id = %id))]
    pub async fn get(&self, account_id: &str, id: &str) -> Result<Flow, ChatbotError> {
        let mut conn = self.db.acquire().await?;
        flow(&mut conn, account_id, id).await
    }

    /// Checks the name and the flow as a whole, then stores it.
    #[tracing::instrument(skip_all, fields(flow_id = tracing::field::Empty))]
    pub async fn create(&self, account_id: &str, input: FlowInput) -> Result<Flow, ChatbotError> {
        super::validate_name(&input.name)?;
        let definition = Definition {
            keywords: input.keywords,
            start: input.start,
            steps: input.steps,
        };
        super::validate(&definition)?;
        let mut conn = self.db.acquire().await?;
        let flow = store::insert(&mut conn, account_id, input.name.trim(), definition).await?;
        tracing::Span::current().record("flow_id", flow.id.as_str());
        Ok(flow)
    }

    /// Applies the patch and checks the result as a whole. Contacts in the flow continue from
    /// their current step; if it no longer exists, their next reply ends the flow for them.
    #[tracing::instrument(skip_all, fields(flow_id = %id))]
    pub async fn update(
        &self,
        account_id: &str,
        id: &str,
        patch: FlowPatch,
    ) -> Result<Flow, ChatbotError> {
        let mut tx = self.db.begin().await?;
        let mut flow = flow(&mut tx, account_id, id).await?;
        if let Some(name) = patch.name {
            super::validate_name(&name)?;
            flow.name = name.trim().to_string();
        }
        if let Some(keywords) = patch.keywords {
            flow.definition.keywords = keywords;
        }
        if let Some(start) = patch.start {
            flow.definition.start = start;
        }
        if let Some(steps) = patch.steps {
            flow.definition.steps = steps;
        }
        super::validate(&flow.definition)?;
        flow.updated_at = now_ms().max(flow.updated_at);
        store::update(&mut tx, &flow).await?;
        tx.commit().await?;
        Ok(flow)
    }

    /// Deletes the flow; the contacts in it leave it.
    #[tracing::instrument(skip_all, fields(flow_id = %id))]
    pub async fn delete(&self, account_id: &str, id: &str) -> Result<(), ChatbotError> {
        let mut tx = self.db.begin().await?;
        let deleted = store::delete(&mut tx, account_id, id).await?;
        tx.commit().await?;
        if deleted {
            Ok(())
        } else {
            Err(ChatbotError::FlowNotFound)
        }
    }
}

/// The flow, on the caller's connection (a trigger's unit of work).
pub async fn flow(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Flow, ChatbotError> {
    store::get(conn, account_id, id)
        .await?
        .ok_or(ChatbotError::FlowNotFound)
}

/// A trigger's variables are strings, numbers or booleans, as a template's are.
pub fn check_variables(variables: &Map<String, Value>) -> Result<(), Refusal> {
    for (name, value) in variables {
        templates::variable_text(name, value)?;
    }
    Ok(())
}
