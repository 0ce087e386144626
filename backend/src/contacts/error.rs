//! What can go wrong with a contact, in the domain's terms. The HTTP edge
//! (`routes/v1/contacts.rs`) alone turns it into an answer.

use crate::refusal::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// The account has no contact with this id.
    #[error("contact not found")]
    NotFound,
    /// An input failed its check, or the change contradicts what is stored (`invalid_phone`,
    /// `contact_exists`, `contact_in_use`, ...).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A concurrent creator of the same number won the race, yet its contact cannot be read.
    #[error("contact vanished during creation")]
    Vanished,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
