//! What the console and the messaging API do with an account's templates, with the rules that go
//! with them: name, language and body are checked on every save, a name is unique per language,
//! and a message names its template by name (and language, where the name has several). The
//! HTTP edge turns [`TemplateError`] into its answer.

use sqlx::AnyConnection;

use super::{store, Template};
use crate::{
    clock::now_ms,
    db::{Db, Page},
    refusal::Refusal,
};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the account has no such template")]
    NotFound,
    #[error("a template named {name:?} in language {language:?} already exists")]
    Exists { name: String, language: String },
    /// A field fails its check (`invalid_template`), or a message names a template that cannot
    /// be picked (`template_not_found`, `template_language_required`).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A new template as the console sent it.
#[derive(Debug)]
pub struct NewTemplate {
    pub name: String,
    pub language: String,
    pub body: String,
}

/// A change to a template; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct TemplateChanges {
    pub name: Option<String>,
    pub language: Option<String>,
    pub body: Option<String>,
}

/// The account's templates.
pub struct Templates<'a> {
    pub db: &'a Db,
}

impl Templates<'_> {
    /// One page in creation order, and the cursor of the next.
    pub async fn list(
        &self,
        account_id: &str,
        page: &Page,
    ) -> Result<(Vec<Template>, Option<String>), TemplateError> {
        let mut conn = self.db.acquire().await?;
        Ok(store::list(&mut conn, account_id, page.cursor.as_deref(), page.limit).await?)
    }

    #[tracing::instrument(skip_all, fields(template_id = %id))]
    pub async fn get(&self, account_id: &str, id: &str) -> Result<Template, TemplateError> {
        let mut conn = self.db.acquire().await?;
        store::get(&mut conn, account_id, id)
            .await?
            .ok_or(TemplateError::NotFound)
    }

    /// Checks name, language and body, then stores the template unless the account has one
    /// with this name and language.
    #[tracing::instrument(skip_all, fields(template_id = tracing::field::Empty))]
    pub async fn create(
        &self,
        account_id: &str,
        new: NewTemplate,
    ) -> Result<Template, TemplateError> {
        super::validate_name(&new.name)?;
        super::validate_language(&new.language)?;
        super::validate_body(&new.body)?;
        let mut tx = self.db.begin().await?;
        let template = store::insert(&mut tx, account_id, &new.name, &new.language, &new.body)
            .await?
            .ok_or(TemplateError::Exists {
                name: new.name,
                language: new.language,
            })?;
        tx.commit().await?;
        tracing::Span::current().record("template_id", template.id.as_str());
        Ok(template)
    }

    /// Applies the checked `changes`; the name and language must stay unique. Messages already
    /// accepted keep the text they were rendered with.
    #[tracing::instrument(skip_all, fields(template_id = %id))]
    pub async fn update(
        &self,
        account_id: &str,
        id: &str,
        changes: TemplateChanges,
    ) -> Result<Template, TemplateError> {
        let mut tx = self.db.begin().await?;
        let mut template = store::get(&mut tx, account_id, id)
            .await?
            .ok_or(TemplateError::NotFound)?;
        if let Some(name) = changes.name {
            super::validate_name(&name)?;
            template.name = name;
        }
        if let Some(language) = changes.language {
            super::validate_language(&language)?;
            template.language = language;
        }
        if let Some(body) = changes.body {
            super::validate_body(&body)?;
            template.body = body;
        }
        template.updated_at = now_ms().max(template.updated_at);
        if !store::update(&mut tx, &template).await? {
            return Err(TemplateError::Exists {
                name: template.name,
                language: template.language,
            });
        }
        tx.commit().await?;
        Ok(template)
    }

    #[tracing::instrument(skip_all, fields(template_id = %id))]
    pub async fn delete(&self, account_id: &str, id: &str) -> Result<(), TemplateError> {
        let mut conn = self.db.acquire().await?;
        if store::delete(&mut conn, account_id, id).await? {
            Ok(())
        } else {
            Err(TemplateError::NotFound)
        }
    }
}

/// The template a message names, on the caller's connection: the one with this name in
/// `language`; without a language, the only one with this name (refused, listing the languages,
/// when there are several).
pub async fn find(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    language: Option<&str>,
) -> Result<Template, TemplateError> {
    let mut templates = store::named(conn, account_id, name, language).await?;
    match templates.len() {
        0 => Err(Refusal::unacceptable(
            "template_not_found",
            match language {
                Some(language) => format!("no template named {name:?} in language {language:?}"),
                None => format!("no template named {name:?}"),
            },
        )
        .into()),
        1 => Ok(templates.remove(0)),
        _ => Err(Refusal::unacceptable(
            "template_language_required",
            format!(
                "template {name:?} exists in several languages ({}); give template.language",
                templates
                    .iter()
                    .map(|t| t.language.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into()),
    }
}
