//! A rule of the domain saying no: an input that fails its check, a bound reached, a state that
//! forbids the change. Services return it (inside their own error enums) without knowing about
//! HTTP; the `code` is the one clients see in SPEC §4's error object, and `kind` says which sort
//! of "no" it is. The HTTP edge alone picks the status (`From<Refusal> for ApiError`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The input is malformed or a field fails its check (400).
    Invalid,
    /// Well-formed, but it cannot be acted on as things stand (422): an unknown template, an
    /// opted-out contact, a bound reached.
    Unacceptable,
    /// It contradicts what is stored (409): a duplicate, a state that no longer allows it.
    Conflict,
    /// The account may not do this (403): its plan, its role.
    NotAllowed,
    /// Too much of it right now; worth retrying after the given seconds (429).
    Busy { retry_after_secs: u64 },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(kind: RefusalKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Invalid, code, message)
    }

    pub fn unacceptable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Unacceptable, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Conflict, code, message)
    }

    pub fn not_allowed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::NotAllowed, code, message)
    }

    pub fn busy(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(RefusalKind::Busy { retry_after_secs }, code, message)
    }
}
