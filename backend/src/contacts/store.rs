//! Contacts SQL. Every function takes the caller's connection (a transaction: `&mut *tx`) and
//! an account id that scopes every statement, so no query can see another tenant's rows.
//! Functions that change a contact take the operation's `UnitOfWork` and emit its event there.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::{ChatbotState, Contact};
use crate::{
    clock::now_ms,
    db::{JsonText, QueryBuilder},
    events,
    ids::new_id,
    unit_of_work::UnitOfWork,
};

/// `opted_in` is read as an integer: the Any driver cannot decode SQLite's BOOLEAN columns,
/// and `CASE` gives the same answer on both engines.
const COLUMNS: &str = "id, account_id, phone, name, tags, attributes, \
     CAST(CASE WHEN opted_in THEN 1 ELSE 0 END AS BIGINT) AS opted_in, chatbot, \
     created_at, updated_at";

/// A contact to create, already validated.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub phone: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub attributes: Map<String, Value>,
    pub opted_in: bool,
}

impl NewContact {
    /// A contact known only by its number, as messaging and inbound messages create them.
    /// Opted in: a contact is messageable until someone records an opt-out.
    pub fn with_phone(phone: &str) -> Self {
        Self {
            phone: phone.to_string(),
            name: None,
            tags: Vec::new(),
            attributes: Map::new(),
            opted_in: true,
        }
    }
}

/// `GET /v1/contacts` filters; `cursor` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub tag: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: i64,
}

/// A row of `COLUMNS`, as stored.
#[derive(sqlx::FromRow)]
struct ContactRow {
    id: String,
    account_id: String,
    phone: String,
    name: Option<String>,
    tags: JsonText<Vec<String>>,
    attributes: JsonText<Map<String, Value>>,
    opted_in: i64,
    chatbot: Option<JsonText<ChatbotState>>,
    created_at: i64,
    updated_at: i64,
}

impl From<ContactRow> for Contact {
    fn from(row: ContactRow) -> Self {
        Contact {
            id: row.id,
            account_id: row.account_id,
            phone: row.phone,
            name: row.name,
            tags: row.tags.0,
            attributes: row.attributes.0,
            opted_in: row.opted_in != 0,
            chatbot: row.chatbot.map(|state| state.0),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Contact>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM contacts WHERE account_id = $1 AND id = $2");
    Ok(sqlx::query_as::<_, ContactRow>(&sql)
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(Contact::from))
}

pub async fn find_by_phone(
    conn: &mut AnyConnection,
    account_id: &str,
    phone: &str,
) -> Result<Option<Contact>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM contacts WHERE account_id = $1 AND phone = $2");
    Ok(sqlx::query_as::<_, ContactRow>(&sql)
        .bind(account_id)
        .bind(phone)
        .fetch_optional(conn)
        .await?
        .map(Contact::from))
}

/// Inserts a checked contact and emits `contact.created`, unless the account has the number:
/// `None` then (the caller decides: refuse or reuse).
pub async fn insert(
    conn: &mut UnitOfWork,
    account_id: &str,
    new: &NewContact,
) -> Result<Option<Contact>, sqlx::Error> {
    let now = now_ms();
    let contact = Contact {
        id: new_id("con"),
        account_id: account_id.to_string(),
        phone: new.phone.clone(),
        name: new.name.clone(),
        tags: new.tags.clone(),
        attributes: new.attributes.clone(),
        opted_in: new.opted_in,
        chatbot: None,
        created_at: now,
        updated_at: now,
    };
    // ON CONFLICT DO NOTHING rather than catching the unique violation: a failed statement
    // aborts a PostgreSQL transaction, and concurrent creators of one number must both succeed.
    let inserted = sqlx::query(
        "INSERT INTO contacts (id, account_id, phone, name, tags, attributes, opted_in, chatbot, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $8) \
         ON CONFLICT (account_id, phone) DO NOTHING",
    )
    .bind(&contact.id)
    .bind(account_id)
    .bind(&contact.phone)
    .bind(&contact.name)
    .bind(Value::from(contact.tags.clone()).to_string())
    .bind(Value::Object(contact.attributes.clone()).to_string())
    .bind(contact.opted_in)
    .bind(now)
    .execute(&mut **conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    write_tags(conn, account_id, &contact.id, &contact.tags).await?;
    events::emit(conn, account_id, "contact.created", contact.to_json()).await?;
    Ok(Some(contact))
}

async fn write_tags(
    conn: &mut AnyConnection,
    account_id: &str,
    contact_id: &str,
    tags: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1")
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    for tag in tags {
        sqlx::query("INSERT INTO contact_tags (account_id, tag, contact_id) VALUES ($1, $2, $3)")
            .bind(account_id)
            .bind(tag)
            .bind(contact_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes `next` over `current` (the same contact) and emits `contact.updated`. `false` when
/// another contact of the account took `next`'s phone number meanwhile: nothing was written.
pub async fn write(
    conn: &mut UnitOfWork,
    account_id: &str,
    current: &Contact,
    next: &Contact,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE contacts SET phone = $1, name = $2, tags = $3, attributes = $4, opted_in = $5, \
         updated_at = $6 WHERE account_id = $7 AND id = $8",
    )
    .bind(&next.phone)
    .bind(&next.name)
    .bind(Value::from(next.tags.clone()).to_string())
    .bind(Value::Object(next.attributes.clone()).to_string())
    .bind(next.opted_in)
    .bind(next.updated_at)
    .bind(account_id)
    .bind(&current.id)
    .execute(&mut **conn)
    .await;
    match updated {
        Ok(_) => {}
        // A concurrent writer took the number between the caller's check and this write.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(false),
        Err(e) => return Err(e),
    }
    if next.tags != current.tags {
        write_tags(conn, account_id, &current.id, &next.tags).await?;
    }
    events::emit(conn, account_id, "contact.updated", next.to_json()).await?;
    Ok(true)
}

/// Records the contact's chatbot state (`None`: not in a flow). No event: the chatbot emits its
/// own (`chatbot.handover`).
pub async fn set_chatbot(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    state: Option<&ChatbotState>,
) -> Result<(), sqlx::Error> {
    let text = state.map(|s| serde_json::to_string(s).expect("chatbot state serializes"));
    sqlx::query(
        "UPDATE contacts SET chatbot = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
    )
    .bind(text)
    .bind(now_ms())
    .bind(account_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The account has no such contact.
    Missing,
    /// Rows elsewhere (messages) still point at it; nothing was deleted.
    InUse,
}

pub async fn delete(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Deletion, sqlx::Error> {
    let exists: Option<(String,)> =
        sqlx::query_as("SELECT id FROM contacts WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Ok(Deletion::Missing);
    }
    sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let deleted = sqlx::query("DELETE FROM contacts WHERE account_id = $1 AND id = $2")
        .bind(account_id)
        .bind(id)
        .execute(&mut *conn)
        .await;
    match deleted {
        Ok(done) if done.rows_affected() > 0 => Ok(Deletion::Deleted),
        Ok(_) => Ok(Deletion::Missing),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(Deletion::InUse),
        Err(e) => Err(e),
    }
}

/// Escapes `%`, `_` and the escape character itself for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One page in id (= creation) order, and the cursor of the next page if there is one.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    filter: &ListFilter,
) -> Result<(Vec<Contact>, Option<String>), sqlx::Error> {
    let mut query = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM contacts WHERE account_id = "
    ));
    // `account_id` is $1, which the tag filter uses again.
    query.push_bind(account_id);
    if let Some(cursor) = &filter.cursor {
        query.push(" AND id > ").push_bind(cursor);
    }
    if let Some(tag) = &filter.tag {
        query
            .push(
                " AND id IN (SELECT contact_id FROM contact_tags WHERE account_id = $1 AND tag = ",
            )
            .push_bind(tag)
            .push(")");
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let pattern = format!("%{}%", like_escape(&q.to_lowercase()));
        query
            .push(" AND (LOWER(COALESCE(name, '')) LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR phone LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    query.push(format_args!(
        " ORDER BY id LIMIT {}",
        crate::db::page_rows(filter.limit)
    ));
    let rows = query.build_query_as::<ContactRow>().fetch_all(conn).await?;
    let contacts = rows.into_iter().map(Contact::from).collect();
    Ok(crate::db::into_page(contacts, filter.limit, |c| &c.id))
}
