//! What the API and the other modules do with an account's contacts, with the rules that go
//! with it: a new contact is checked as a whole and opted in unless told otherwise, a number is
//! one contact per account, a patch is checked field by field and changes nothing (no event)
//! when it changes nothing, a list filters by a non-empty tag and a search text, a contact that
//! messages refer to cannot be deleted. The SQL is `store`'s; the operation's transaction is the
//! caller's.

use serde_json::{Map, Value};
use sqlx::AnyConnection;

use super::{
    merge_attributes,
    store::{self, Deletion, ListFilter, NewContact},
    validate_attributes, validate_name, validate_phone, validate_tags, Contact, ContactError,
    ContactList, ContactPatch,
};
use crate::{clock::now_ms, db::Page, refusal::Refusal, unit_of_work::UnitOfWork};

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
    pub fn check(self) -> Result<NewContact, Refusal> {
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

fn number_taken() -> ContactError {
    Refusal::conflict(
        "contact_exists",
        "phone: a contact with this number already exists",
    )
    .into()
}

/// Creates a checked contact (`contact.created` is emitted in `work`); `contact_exists` when the
/// account has this number.
pub async fn create(
    work: &mut UnitOfWork,
    account_id: &str,
    new: NewContact,
) -> Result<Contact, ContactError> {
    store::insert(work, account_id, &new)
        .await?
        .ok_or_else(number_taken)
}

/// The contact with this number, created (opted in, nothing else known) if there is none.
/// `true` when it was created; `contact.created` is then emitted in `work`.
pub async fn find_or_create(
    work: &mut UnitOfWork,
    account_id: &str,
    phone: &str,
) -> Result<(Contact, bool), ContactError> {
    validate_phone(phone)?;
    if let Some(contact) = store::find_by_phone(work, account_id, phone).await? {
        return Ok((contact, false));
    }
    if let Some(contact) = store::insert(work, account_id, &NewContact::with_phone(phone)).await? {
        return Ok((contact, true));
    }
    // Lost a race with a concurrent creator; theirs has committed by now.
    let contact = store::find_by_phone(work, account_id, phone)
        .await?
        .ok_or(ContactError::Vanished)?;
    Ok((contact, false))
}

/// The contact, or `NotFound`.
pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Contact, ContactError> {
    store::get(conn, account_id, id)
        .await?
        .ok_or(ContactError::NotFound)
}

/// Applies a patch (`contact.updated` only if something changed); `NotFound` if absent.
pub async fn update(
    work: &mut UnitOfWork,
    account_id: &str,
    id: &str,
    patch: ContactPatch,
) -> Result<Contact, ContactError> {
    update_with_phone(work, account_id, id, patch, None).await
}

/// `update`, plus an optional new phone number (the HTTP PATCH allows fixing a number):
/// `contact_exists` if another contact of the account has it.
pub async fn update_with_phone(
    work: &mut UnitOfWork,
    account_id: &str,
    id: &str,
    patch: ContactPatch,
    phone: Option<String>,
) -> Result<Contact, ContactError> {
    let current = get(work, account_id, id).await?;
    let mut next = current.clone();
    if let Some(phone) = phone {
        validate_phone(&phone)?;
        if phone != current.phone {
            if store::find_by_phone(work, account_id, &phone)
                .await?
                .is_some()
            {
                return Err(number_taken());
            }
            next.phone = phone;
        }
    }
    if let Some(name) = patch.name {
        next.name = validate_name(name)?;
    }
    if let Some(tags) = patch.tags {
        next.tags = validate_tags(tags)?;
    }
    if let Some(attributes) = &patch.attributes {
        next.attributes = merge_attributes(&current.attributes, attributes)?;
    }
    if let Some(opted_in) = patch.opted_in {
        next.opted_in = opted_in;
    }
    if next == current {
        return Ok(current);
    }
    next.updated_at = now_ms().max(current.updated_at);
    if !store::write(work, account_id, &current, &next).await? {
        return Err(number_taken());
    }
    Ok(next)
}

/// Deletes a contact: `NotFound` if the account has none with this id, `contact_in_use` while
/// messages refer to it.
pub async fn delete(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<(), ContactError> {
    match store::delete(conn, account_id, id).await? {
        Deletion::Deleted => Ok(()),
        Deletion::Missing => Err(ContactError::NotFound),
        Deletion::InUse => Err(Refusal::conflict(
            "contact_in_use",
            "the contact has messages and cannot be deleted; opt it out instead",
        )
        .into()),
    }
}

/// One page in creation order; an empty `tag` filters nothing.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    tag: Option<String>,
    q: Option<String>,
    page: Page,
) -> Result<ContactList, ContactError> {
    let filter = ListFilter {
        tag: tag.filter(|t| !t.is_empty()),
        q,
        cursor: page.cursor,
        limit: page.limit,
    };
    let (data, next_cursor) = store::list(conn, account_id, &filter).await?;
    Ok(ContactList { data, next_cursor })
}
