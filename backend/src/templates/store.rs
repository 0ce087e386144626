//! Templates SQL, scoped by account in every statement.

use sqlx::AnyConnection;

use super::Template;
use crate::{clock::now_ms, ids::new_id};

const COLUMNS: &str = "id, account_id, name, language, body, created_at, updated_at";

/// In creation (id) order; `cursor` is the last id of the previous page.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Template>, Option<String>), sqlx::Error> {
    let templates = sqlx::query_as::<_, Template>(&format!(
        "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT {}",
        crate::db::page_rows(limit)
    ))
    .bind(account_id)
    .bind(cursor.unwrap_or(""))
    .fetch_all(conn)
    .await?;
    Ok(crate::db::into_page(templates, limit, |t| &t.id))
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Template>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The templates with this name: the one in `language`, or without a language all of them, in
/// language order.
pub async fn named(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    language: Option<&str>,
) -> Result<Vec<Template>, sqlx::Error> {
    match language {
        Some(language) => {
            sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND name = $2 AND language = $3"
        ))
            .bind(account_id)
            .bind(name)
            .bind(language)
            .fetch_all(conn)
            .await
        }
        None => {
            sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND name = $2 ORDER BY language"
        ))
            .bind(account_id)
            .bind(name)
            .fetch_all(conn)
            .await
        }
    }
}

/// Inserts a validated template; `None` if the account has one with this name and language.
pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    language: &str,
    body: &str,
) -> Result<Option<Template>, sqlx::Error> {
    let now = now_ms();
    let template = Template {
        id: new_id("tpl"),
        account_id: account_id.to_string(),
        name: name.to_string(),
        language: language.to_string(),
        body: body.to_string(),
        created_at: now,
        updated_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO templates (id, account_id, name, language, body, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (account_id, name, language) DO NOTHING",
    )
    .bind(&template.id)
    .bind(account_id)
    .bind(name)
    .bind(language)
    .bind(body)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((inserted == 1).then_some(template))
}

/// Saves a changed template; `false` (nothing saved) if its new name and language belong to
/// another template of the account.
pub async fn update(conn: &mut AnyConnection, template: &Template) -> Result<bool, sqlx::Error> {
    let taken: Option<String> = sqlx::query_scalar(
        "SELECT id FROM templates WHERE account_id = $1 AND name = $2 AND language = $3 AND id <> $4",
    )
    .bind(&template.account_id)
    .bind(&template.name)
    .bind(&template.language)
    .bind(&template.id)
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE templates SET name = $1, language = $2, body = $3, updated_at = $4 \
         WHERE account_id = $5 AND id = $6",
    )
    .bind(&template.name)
    .bind(&template.language)
    .bind(&template.body)
    .bind(template.updated_at)
    .bind(&template.account_id)
    .bind(&template.id)
    .execute(conn)
    .await?;
    Ok(true)
}

pub async fn delete(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM templates WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}
