//! What goes wrong with messages, in the domain's terms: `MessageError` for the operations a
//! client asks for (send, receive, read), `MessagingError` for the work that runs outside a
//! request (the dispatcher, the report worker, housekeeping, provider reports). The HTTP edge
//! alone turns them into an `ApiError` (`routes/v1/messages.rs`), so no messaging code builds an
//! HTTP answer.

use crate::{
    chatbot::ChatbotError, contacts::ContactError, refusal::Refusal,
    templates::service::TemplateError,
};

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The account has no message with this id.
    #[error("message not found")]
    NotFound,
    /// The request breaks a rule of messaging (`invalid_text`, `contact_opted_out`,
    /// `outside_customer_service_window`, ...).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Finding or creating the recipient failed.
    #[error(transparent)]
    Contact(#[from] ContactError),
    /// Picking the template a message names failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A stored template body no longer compiles (it was checked when saved: our fault).
    #[error("stored template does not compile: {0}")]
    BrokenTemplate(String),
    /// The chatbot failed on an inbound message.
    #[error(transparent)]
    Chatbot(ChatbotError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

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
