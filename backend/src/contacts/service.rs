//! What the API does with an account's contacts, with the rules that go with it: a new contact
//! is checked as a whole and opted in unless told otherwise, a list filters by a non-empty tag
//! and a search text, a delete of an unknown contact is `not_found`. The SQL is `store`'s; the
//! operation's transaction is the caller's.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::{
    store::{self, ListFilter, NewContact},
    validate_attributes, validate_name, validate_phone, validate_tags, Contact, ContactList,
    ContactPatch,
};
use crate::{db::Page, error::ApiError, unit_of_work::UnitOfWork};

/// A contact to create, as the client sent it.
#[derive(Debug, Default)]
pub struct ContactInput {
    pub phone: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub attributes: Map<String, Value>,
    pub opted_in: Option<bool>,
}

impl ContactInput {
    /// The contact to store, or the first rule it breaks (`invalid_phone`, `invalid_attributes`,
    /// `invalid_name`, `invalid_tags`, in that order). Checked before any transaction starts.
    pub fn check(self) -> Result<NewContact, ApiError> {
        validate_phone(&self.phone)?;
        validate_attributes(&self.attributes, false)?;
        Ok(NewContact {
            name: validate_name(self.name)?,
            tags: validate_tags(self.tags)?,
            attributes: self.attributes,
            opted_in: self.opted_in.unwrap_or(true),
            phone: self.phone,
        })
    }
}

/// Creates a checked contact (`contact.created` is emitted in `work`); 409 `contact_exists`
/// when the account has this number.
pub async fn create(
    work: &mut UnitOfWork,
    account_id: &str,
    new: NewContact,
) -> Result<Contact, ApiError> {
    store::create(work, account_id, new).await
}

/// The contact, or `not_found`.
pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Contact, ApiError> {
    store::get(conn, account_id, id)
        .await?
        .ok_or(ApiError::not_found("contact"))
}

/// Applies a patch, and a new phone number if one is given (`contact.updated` if anything
/// changed).
pub async fn update(
    work: &mut UnitOfWork,
    account_id: &str,
    id: &str,
    patch: ContactPatch,
    phone: Option<String>,
) -> Result<Contact, ApiError> {
    store::update_with_phone(work, account_id, id, patch, phone).await
}

/// Deletes a contact: `not_found` if the account has none with this id, 409 `contact_in_use`
/// while messages refer to it.
pub async fn delete(conn: &mut AnyConnection, account_id: &str, id: &str) -> Result<(), ApiError> {
    if store::delete(conn, account_id, id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("contact"))
    }
}

/// One page in creation order; an empty `tag` filters nothing.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    tag: Option<String>,
    q: Option<String>,
    page: Page,
) -> Result<ContactList, ApiError> {
    let filter = ListFilter {
        tag: tag.filter(|t| !t.is_empty()),
        q,
        cursor: page.cursor,
        limit: page.limit,
    };
    let (data, next_cursor) = store::list(conn, account_id, &filter).await?;
    Ok(ContactList { data, next_cursor })
}
