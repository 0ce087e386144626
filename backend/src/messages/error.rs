//! The error of messaging work that runs outside a request (the dispatcher, the report worker,
//! housekeeping, provider reports). It names what went wrong in the domain's terms; the HTTP edge
//! alone turns it into an `ApiError` (the `From` impl below), so background code never builds an
//! HTTP answer.

use crate::{contacts::ContactError, error::ApiError};

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored message's contact could not be found or created (its number was valid when the
    /// message was accepted, so this is a fault, not a customer's mistake).
    #[error("linking message {message_id} to its contact: {reason}")]
    Contact { message_id: String, reason: String },
}

impl MessagingError {
    /// A contacts operation failed for `message_id`.
    pub fn contact(message_id: &str, err: ContactError) -> Self {
        match err {
            ContactError::Db(e) => Self::Database(e),
            other => Self::Contact {
                message_id: message_id.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

impl From<MessagingError> for ApiError {
    fn from(err: MessagingError) -> Self {
        match err {
            MessagingError::Database(e) => ApiError::Database(e),
            other => ApiError::Internal(other.into()),
        }
    }
}
