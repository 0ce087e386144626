//! What can go wrong with a flow or a contact's run, in the domain's terms. The HTTP edge
//! (`routes/v1/chatbot.rs`) alone turns it into an answer.

use crate::{contacts::ContactError, refusal::Refusal};

#[derive(Debug, thiserror::Error)]
pub enum ChatbotError {
    /// The account has no flow with this id.
    #[error("the account has no such flow")]
    FlowNotFound,
    /// A flow fails its check, or the contact's state does not allow the change
    /// (`invalid_flow`, `chatbot_paused`, `chatbot_not_active`, `contact_opted_out`).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A contact change the bot made failed for a reason other than the contact's own rules.
    #[error(transparent)]
    Contact(#[from] ContactError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}
