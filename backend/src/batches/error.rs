//! What goes wrong with a bulk send or a batch, in the domain's terms. The HTTP edge
//! (`routes/v1/batches.rs`) alone turns it into an answer.

use crate::{messages::MessageError, refusal::Refusal, templates::service::TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The account has no batch with this id.
    #[error("batch not found")]
    NotFound,
    /// The request or the batch's state says no (`no_recipients`, `no_valid_recipients`,
    /// `batch_completed`, ...).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Picking the template the bulk names failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Preparing the messages' content failed.
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
