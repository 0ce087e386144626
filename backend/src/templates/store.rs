//! Templates SQL, scoped by account in every statement.

use sqlx::AnyConnection;

use super::Template;
use crate::{clock::now_ms, error::ApiError, ids::new_id};

type Row = (String, String, String, String, String, i64, i64);

const COLUMNS: &str = "id, account_id, name, language, body, created_at, updated_at";

fn from_row((id, account_id, name, language, body, created_at, updated_at): Row) -> Template {
    Template {
        id,
        account_id,
        name,
        language,
        body,
        created_at,
        updated_at,
    }
}

/// In creation (id) order; `cursor` is the last id of the previous page.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Template>, Option<String>), sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT {}",
        crate::db::page_rows(limit)
    ))
    .bind(account_id)
    .bind(cursor.unwrap_or(""))
    .fetch_all(conn)
    .await?;
    let templates: Vec<Template> = rows.into_iter().map(from_row).collect();
    Ok(crate::db::into_page(templates, limit, |t| &t.id))
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Template>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(from_row))
}

/// The template with this name in `language`; without a language, the only template with this
/// name (`Err` listing the languages when there are several).
pub async fn find(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    language: Option<&str>,
) -> Result<Template, ApiError> {
    let rows: Vec<Row> = match language {
        Some(language) => {
            sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND name = $2 AND language = $3"
        ))
            .bind(account_id)
            .bind(name)
            .bind(language)
            .fetch_all(conn)
            .await?
        }
        None => {
            sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM templates WHERE account_id = $1 AND name = $2 ORDER BY language"
        ))
            .bind(account_id)
            .bind(name)
            .fetch_all(conn)
            .await?
        }
    };
    let mut templates: Vec<Template> = rows.into_iter().map(from_row).collect();
    match templates.len() {
        0 => Err(ApiError::unprocessable(
            "template_not_found",
            match language {
                Some(language) => format!("no template named {name:?} in language {language:?}"),
                None => format!("no template named {name:?}"),
            },
        )),
        1 => Ok(templates.remove(0)),
        _ => Err(ApiError::unprocessable(
            "template_language_required",
            format!(
                "template {name:?} exists in several languages ({}); give template.language",
                templates
                    .iter()
                    .map(|t| t.language.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn duplicate(name: &str, language: &str) -> ApiError {
    ApiError::conflict(
        "template_exists",
        format!("a template named {name:?} in language {language:?} already exists"),
    )
}

/// Inserts a validated template; 409 `template_exists` on a duplicate name + language.
pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    language: &str,
    body: &str,
) -> Result<Template, ApiError> {
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
    if inserted == 0 {
        return Err(duplicate(name, language));
    }
    Ok(template)
}

/// Saves a changed template; 409 if the new name + language belong to another template.
pub async fn update(conn: &mut AnyConnection, template: &Template) -> Result<(), ApiError> {
    let taken: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM templates WHERE account_id = $1 AND name = $2 AND language = $3 AND id <> $4",
    )
    .bind(&template.account_id)
    .bind(&template.name)
    .bind(&template.language)
    .bind(&template.id)
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Err(duplicate(&template.name, &template.language));
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
    Ok(())
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
