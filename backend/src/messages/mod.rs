//! Messages in both directions: their content, their status lifecycle and their public JSON
//! shape. `store` holds the SQL; the channel workers (`channel::worker`) move outbound messages
//! along; `routes/v1/messages.rs` is the HTTP surface.
//!
//! Lifecycle of an outbound message: `queued → sent → delivered → read`, or `failed` from
//! `queued`/`sent`. A status never moves backwards: every transition is one conditional UPDATE
//! that only matches the statuses it may come from, so a late `delivered` after `read` changes
//! nothing (and emits nothing). Inbound messages are `received` and stay so.

#[cfg(test)]
mod api_tests;
pub mod error;
pub mod inbound;
pub mod render;
pub mod service;
pub mod store;
#[cfg(test)]
pub(crate) mod testkit;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use error::{MessageError, MessagingError};

use crate::{clock::rfc3339, refusal::Refusal};

/// WhatsApp's limits: a text body up to 4096 characters, a media caption up to 1024.
pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_CAPTION_CHARS: usize = 1024;
pub const MAX_URL_CHARS: usize = 2048;
pub const MAX_REFERENCE_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    /// Inbound messages.
    Received,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Sent,
        Status::Delivered,
        Status::Read,
        Status::Failed,
        Status::Received,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
            Status::Received => "received",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Position in the lifecycle; a transition must go to a higher rank. `failed` ranks above
    /// everything but may only be reached from `queued` or `sent` (see `predecessors`).
    pub fn rank(self) -> u8 {
        match self {
            Status::Queued | Status::Received => 0,
            Status::Sent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Failed => 4,
        }
    }

    /// The statuses this one may be reached from, as a SQL list (constants only).
    pub fn predecessors_sql(self) -> &'static str {
        match self {
            Status::Sent => "('queued')",
            Status::Delivered => "('queued', 'sent')",
            // A read receipt may arrive without a delivery receipt (SPEC §7).
            Status::Read => "('queued', 'sent', 'delivered')",
            Status::Failed => "('queued', 'sent')",
            Status::Queued | Status::Received => "()",
        }
    }

    /// Whether a message in `from` may move to this status (the rule `predecessors_sql` encodes).
    pub fn may_follow(self, from: Status) -> bool {
        match self {
            Status::Sent => from == Status::Queued,
            Status::Delivered => matches!(from, Status::Queued | Status::Sent),
            Status::Read => matches!(from, Status::Queued | Status::Sent | Status::Delivered),
            Status::Failed => matches!(from, Status::Queued | Status::Sent),
            Status::Queued | Status::Received => false,
        }
    }

    /// The column holding the time this status was reached.
    pub fn time_column(self) -> &'static str {
        match self {
            Status::Queued | Status::Received => "created_at",
            Status::Sent => "sent_at",
            Status::Delivered => "delivered_at",
            Status::Read => "read_at",
            Status::Failed => "failed_at",
        }
    }

    /// The event a transition into this status emits.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Status::Queued => None,
            Status::Sent => Some("message.sent"),
            Status::Delivered => Some("message.delivered"),
            Status::Read => Some("message.read"),
            Status::Failed => Some("message.failed"),
            Status::Received => Some("message.received"),
        }
    }

    /// Still waiting for the channel: a batch is not done while any of its messages is.
    pub fn in_flight(self) -> bool {
        matches!(self, Status::Queued | Status::Sent)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "outbound" => Some(Direction::Outbound),
            "inbound" => Some(Direction::Inbound),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextContent {
    /// 1 to 4096 characters.
    pub body: String,
}

/// A template message as sent: the template's name and language, the variables given, and the
/// body rendered from them when the message was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateContent {
    pub name: String,
    pub language: String,
    pub variables: BTreeMap<String, String>,
    /// The rendered text.
    pub body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Document,
    Video,
    Audio,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaContent {
    pub kind: MediaKind,
    /// An http(s) URL the channel fetches the media from.
    pub url: String,
    /// Up to 1024 characters; not allowed on audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplyButton {
    pub id: String,
    pub title: String,
}

/// A chatbot message: text with up to three reply buttons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InteractiveContent {
    pub body: String,
    pub buttons: Vec<ReplyButton>,
}

/// An inbound tap on a reply button: its id and/or its title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What a message carries, keyed by its type: `{"text":{...}}`, `{"template":{...}}`, ...
/// Stored as this JSON, rendered and fixed when the message is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    Text(TextContent),
    Template(TemplateContent),
    Media(MediaContent),
    Interactive(InteractiveContent),
    Button(ButtonReply),
}

impl Content {
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text(_) => "text",
            Content::Template(_) => "template",
            Content::Media(_) => "media",
            Content::Interactive(_) => "interactive",
            Content::Button(_) => "button",
        }
    }

    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).expect("content serializes")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// e.g. `recipient_unreachable`, `not_on_whatsapp`, `contact_opted_out`, `batch_cancelled`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub status: Status,
    /// RFC 3339.
    pub at: String,
}

/// A message as stored (one row of `messages`).
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub account_id: String,
    pub direction: Direction,
    pub contact_id: Option<String>,
    pub phone: String,
    pub content: Content,
    pub status: Status,
    pub error: Option<ErrorInfo>,
    pub batch_id: Option<String>,
    pub batch_index: Option<i64>,
    pub reference: Option<String>,
    pub flow_id: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub updated_at: i64,
    /// The channel that sends it (`whatsapp_simulated`, `whatsapp_cloud`), fixed at acceptance.
    pub channel: String,
}

/// The public JSON of a message (`GET /v1/messages/{id}`), also the `data` of `message.*` events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    #[schema(example = "msg_01jd7k2v8m3q4r5s6t7u8v9w0x")]
    pub id: String,
    pub direction: Direction,
    /// `text`, `template`, `media`, `interactive` (chatbot) or `button` (inbound reply).
    #[serde(rename = "type")]
    pub kind: String,
    /// Recipient of an outbound message (E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Sender of an inbound message (E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Bulk recipients are linked to their contact when the message is sent.
    pub contact_id: Option<String>,
    pub batch_id: Option<String>,
    /// The recipient's index in the bulk request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    pub reference: Option<String>,
    /// Set on messages the chatbot sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(flatten)]
    pub content: Content,
    pub status: Status,
    /// Present when `status` is `failed`.
    pub error: Option<ErrorInfo>,
    /// Every status reached, oldest first.
    pub history: Vec<HistoryEntry>,
    pub created_at: String,
    pub updated_at: String,
}

impl Message {
    /// Each status reached and when, in lifecycle order.
    pub fn history(&self) -> Vec<HistoryEntry> {
        let first = match self.direction {
            Direction::Outbound => Status::Queued,
            Direction::Inbound => Status::Received,
        };
        let mut entries = vec![(first, self.created_at)];
        for (status, at) in [
            (Status::Sent, self.sent_at),
            (Status::Delivered, self.delivered_at),
            (Status::Read, self.read_at),
            (Status::Failed, self.failed_at),
        ] {
            if let Some(at) = at {
                entries.push((status, at));
            }
        }
        // Lifecycle order (a status never moves backwards), then time.
        entries.sort_by_key(|(status, at)| (status.rank(), *at));
        entries
            .into_iter()
            .map(|(status, at)| HistoryEntry {
                status,
                at: rfc3339(at),
            })
            .collect()
    }

    pub fn view(&self) -> MessageView {
        let (to, from) = match self.direction {
            Direction::Outbound => (Some(self.phone.clone()), None),
            Direction::Inbound => (None, Some(self.phone.clone())),
        };
        MessageView {
            id: self.id.clone(),
            direction: self.direction,
            kind: self.content.kind().to_string(),
            to,
            from,
            contact_id: self.contact_id.clone(),
            batch_id: self.batch_id.clone(),
            index: self.batch_index,
            reference: self.reference.clone(),
            flow_id: self.flow_id.clone(),
            content: self.content.clone(),
            status: self.status,
            error: self.error.clone(),
            history: self.history(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).expect("a message serializes")
    }

    /// Applies a transition in memory (after the database accepted it), for the event's data.
    pub fn apply(&mut self, status: Status, at: i64, error: Option<&ErrorInfo>) {
        self.status = status;
        match status {
            Status::Sent => self.sent_at = Some(at),
            Status::Delivered => self.delivered_at = Some(at),
            Status::Read => self.read_at = Some(at),
            Status::Failed => {
                self.failed_at = Some(at);
                self.error = error.cloned();
            }
            Status::Queued | Status::Received => {}
        }
        self.updated_at = self.updated_at.max(at);
    }
}

fn unprocessable(code: &'static str, message: String) -> Refusal {
    Refusal::unacceptable(code, message)
}

/// A text body: 1 to 4096 characters, not blank.
pub fn validate_text(field: &str, body: &str) -> Result<(), Refusal> {
    if body.trim().is_empty() {
        return Err(unprocessable(
            "invalid_text",
            format!("{field}: must not be empty"),
        ));
    }
    if body.chars().count() > MAX_TEXT_CHARS {
        return Err(unprocessable(
            "text_too_long",
            format!("{field}: at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

pub fn validate_media(media: &MediaContent) -> Result<(), Refusal> {
    let url = media.url.as_str();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    let host_ok = host.is_some_and(|h| {
        !h.is_empty() && !h.contains(char::is_whitespace) && !h.starts_with(':') && !h.contains('@')
    });
    if !host_ok || url.chars().count() > MAX_URL_CHARS || url.contains(char::is_whitespace) {
        return Err(unprocessable(
            "invalid_media_url",
            format!(
                "media.url: must be an http(s) URL with a host, at most {MAX_URL_CHARS} characters"
            ),
        ));
    }
    if let Some(caption) = &media.caption {
        if media.kind == MediaKind::Audio {
            return Err(unprocessable(
                "invalid_caption",
                "media.caption: audio messages have no caption".into(),
            ));
        }
        if caption.chars().count() > MAX_CAPTION_CHARS {
            return Err(unprocessable(
                "invalid_caption",
                format!("media.caption: at most {MAX_CAPTION_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// A client reference: 1 to 128 characters.
pub fn validate_reference(field: &str, reference: &str) -> Result<(), Refusal> {
    let len = reference.chars().count();
    if len == 0 || len > MAX_REFERENCE_CHARS {
        return Err(unprocessable(
            "invalid_reference",
            format!("{field}: 1 to {MAX_REFERENCE_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn view_shape_and_history_order() {
        let mut m = Message {
            id: "msg_1".into(),
            account_id: "acc_1".into(),
            direction: Direction::Outbound,
            contact_id: Some("con_1".into()),
            phone: "+14155550101".into(),
            content: Content::Text(TextContent { body: "hi".into() }),
            status: Status::Queued,
            error: None,
            batch_id: None,
            batch_index: None,
            reference: None,
            flow_id: None,
            created_at: 1000,
            sent_at: None,
            delivered_at: None,
            read_at: None,
            failed_at: None,
            updated_at: 1000,
            channel: "whatsapp_simulated".into(),
        };
        m.apply(Status::Sent, 1100, None);
        m.apply(Status::Read, 2000, None);
        let v = m.to_json();
        assert_eq!(v["type"], "text");
        assert_eq!(v["text"], json!({"body": "hi"}));
        assert_eq!(v["to"], "+14155550101");
        assert!(v.get("from").is_none());
        assert_eq!(v["status"], "read");
        let statuses: Vec<_> = v["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(statuses, ["queued", "sent", "read"]);
    }

    #[test]
    fn media_urls() {
        let media = |url: &str| MediaContent {
            kind: MediaKind::Image,
            url: url.into(),
            caption: None,
        };
        assert!(validate_media(&media("https://cdn.example.com/a.png")).is_ok());
        assert!(validate_media(&media("http://example.com")).is_ok());
        for bad in [
            "ftp://x/a.png",
            "https://",
            "example.com/a.png",
            "https:// x",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                validate_media(&media(bad)).unwrap_err().code,
                "invalid_media_url",
                "{bad}"
            );
        }
        let audio = MediaContent {
            kind: MediaKind::Audio,
            url: "https://x.example/a.ogg".into(),
            caption: Some("c".into()),
        };
        assert_eq!(validate_media(&audio).unwrap_err().code, "invalid_caption");
    }

    #[test]
    fn transitions_only_move_forward() {
        for to in [
            Status::Sent,
            Status::Delivered,
            Status::Read,
            Status::Failed,
        ] {
            for from in Status::ALL {
                let allowed = to
                    .predecessors_sql()
                    .contains(&format!("'{}'", from.as_str()));
                assert_eq!(allowed, to.may_follow(from), "{from:?} -> {to:?}");
                if allowed {
                    assert!(to.rank() > from.rank(), "{from:?} -> {to:?}");
                }
            }
        }
        assert!(!Status::Delivered.predecessors_sql().contains("'read'"));
    }
}
