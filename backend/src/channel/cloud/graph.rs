//! The Graph API's shapes for sending, as Meta documents them, and the mapping of its error
//! objects onto a message's `error.code` / `error.message`. Pure functions, unit-tested here and
//! exercised end to end against the fake Graph API in `tests/it/whatsapp.rs`.
//!
//! - Send: `POST /{version}/{phone-number-id}/messages` with `messaging_product: "whatsapp"`,
//!   `recipient_type: "individual"`, `to`, `type` and the type's object
//!   (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages — text with
//!   `body`/`preview_url`; template with `name`, `language.code` and `components[].parameters[]`;
//!   image/document/video/audio by `link` with `caption` where allowed; interactive `button` with
//!   `action.buttons[].reply.{id,title}`).
//! - Success: `{"messaging_product":"whatsapp","contacts":[{"input","wa_id"}],
//!   "messages":[{"id":"wamid...."}]}`.
//! - Failure: Graph's error object `{"error":{"message","type","code","error_data":
//!   {"messaging_product","details"},"fbtrace_id"}}`
//!   (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::messages::{Content, ErrorInfo, MediaKind};

/// The `to` of a send: Meta takes the number with its country code; we drop E.164's `+`.
pub fn recipient(phone: &str) -> &str {
    phone.strip_prefix('+').unwrap_or(phone)
}

/// Meta caps a reply button's title at 20 characters.
const BUTTON_TITLE_CHARS: usize = 20;

/// The request body for one message, or why this content cannot go through the Cloud API.
pub fn message_body(to: &str, content: &Content) -> Result<Value, ErrorInfo> {
    let (kind, object) = match content {
        Content::Text(text) => ("text", json!({ "preview_url": false, "body": text.body })),
        Content::Template(template) => {
            // Our templates name their variables (`{{name}}`), so they are registered with Meta
            // as named-parameter templates and each body parameter carries its `parameter_name`.
            let parameters: Vec<Value> = template
                .variables
                .iter()
                .map(|(name, value)| json!({ "type": "text", "parameter_name": name, "text": value }))
                .collect();
            let mut object = json!({
                "name": template.name,
                "language": { "code": template.language },
            });
            if !parameters.is_empty() {
                object["components"] = json!([{ "type": "body", "parameters": parameters }]);
            }
            ("template", object)
        }
        Content::Media(media) => {
            let kind = match media.kind {
                MediaKind::Image => "image",
                MediaKind::Document => "document",
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
            };
            let mut object = json!({ "link": media.url });
            if let Some(caption) = &media.caption {
                object["caption"] = json!(caption);
            }
            (kind, object)
        }
        Content::Interactive(interactive) if interactive.buttons.is_empty() => (
            "text",
            json!({ "preview_url": false, "body": interactive.body }),
        ),
        Content::Interactive(interactive) => {
            let buttons: Vec<Value> = interactive
                .buttons
                .iter()
                .map(|b| {
                    let title: String = b.title.chars().take(BUTTON_TITLE_CHARS).collect();
                    json!({ "type": "reply", "reply": { "id": b.id, "title": title } })
                })
                .collect();
            (
                "interactive",
                json!({
                    "type": "button",
                    "body": { "text": interactive.body },
                    "action": { "buttons": buttons },
                }),
            )
        }
        Content::Button(_) => {
            return Err(ErrorInfo {
                code: "unsupported_content".into(),
                message: "a button reply is something a customer sends, not a business".into(),
            })
        }
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": recipient(to),
        "type": kind,
    });
    body[kind] = object;
    Ok(body)
}

#[derive(Debug, Deserialize)]
pub struct SendResponse {
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

#[derive(Debug, Deserialize)]
pub struct SentMessage {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    pub error: GraphError,
}

/// Graph's error object. Webhook status errors (`statuses[].errors[]`) have the same `code` and
/// `message`, with `title` and `error_data.details`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GraphError {
    pub code: i64,
    pub message: String,
    pub title: String,
    pub error_data: ErrorData,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorData {
    pub details: String,
}

/// Graph codes meaning "too many requests now": the send was refused, not accepted, so sending
/// it again later is safe. `130429` Cloud API throughput, `131056` pair rate limit (too many
/// messages to one recipient), `4` app call rate, `80007` WABA rate limit.
pub fn is_throttle(code: i64) -> bool {
    matches!(code, 130429 | 131056 | 4 | 80007)
}

/// Our `error.code` for a Graph error code: the documented codes a sender acts on get a name;
/// any other keeps Meta's number (`whatsapp_<code>`), so nothing is lost.
pub fn error_code(code: i64) -> String {
    let name = match code {
        131026 => "recipient_unreachable",
        131047 => "reengagement_window_closed",
        130429 => "throughput_limited",
        131056 => "pair_rate_limited",
        4 | 80007 => "provider_rate_limited",
        190 => "access_token_expired",
        0 => "provider_auth_failed",
        10 | 200..=299 => "provider_permission_denied",
        100 => "invalid_parameter",
        131008 | 131009 => "invalid_parameter",
        131021 => "recipient_is_sender",
        131031 => "business_account_locked",
        131042 => "payment_issue",
        131048 => "spam_rate_limited",
        131049 => "not_delivered_by_meta",
        131050 => "recipient_stopped_marketing",
        131051 => "unsupported_message_type",
        131052 | 131053 => "media_error",
        132000 => "template_parameter_mismatch",
        132001 => "template_not_found",
        132005 => "template_text_too_long",
        132007 => "template_policy_violation",
        132012 => "template_parameter_format_mismatch",
        132015 | 132016 => "template_paused",
        133010 => "phone_number_not_registered",
        368 => "policy_blocked",
        1 | 2 | 131000 => "provider_error",
        _ => return format!("whatsapp_{code}"),
    };
    name.to_string()
}

/// A Graph error as a message's error: our code, and Meta's own words with its number.
pub fn error_info(error: &GraphError) -> ErrorInfo {
    let mut message = format!("WhatsApp error {}", error.code);
    let title = if error.title.is_empty() {
        &error.message
    } else {
        &error.title
    };
    if !title.is_empty() {
        message.push_str(": ");
        message.push_str(title);
    }
    if !error.error_data.details.is_empty() && error.error_data.details != *title {
        message.push_str(" (");
        message.push_str(&error.error_data.details);
        message.push(')');
    }
    ErrorInfo {
        code: error_code(error.code),
        message: message.chars().take(1000).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::messages::{
        InteractiveContent, MediaContent, ReplyButton, TemplateContent, TextContent,
    };

    #[test]
    fn bodies_follow_the_documented_shapes() {
        let text = message_body(
            "+14155550101",
            &Content::Text(TextContent { body: "hi".into() }),
        )
        .unwrap();
        assert_eq!(
            text,
            json!({"messaging_product":"whatsapp","recipient_type":"individual",
                   "to":"14155550101","type":"text","text":{"preview_url":false,"body":"hi"}})
        );
        let mut variables = BTreeMap::new();
        variables.insert("name".to_string(), "Ada".to_string());
        let template = message_body(
            "+14155550101",
            &Content::Template(TemplateContent {
                name: "order_update".into(),
                language: "en".into(),
                variables,
                body: "Hi Ada".into(),
            }),
        )
        .unwrap();
        assert_eq!(template["template"]["language"]["code"], "en");
        assert_eq!(
            template["template"]["components"][0]["parameters"][0],
            json!({"type":"text","parameter_name":"name","text":"Ada"})
        );
        let audio = message_body(
            "+1",
            &Content::Media(MediaContent {
                kind: MediaKind::Audio,
                url: "https://x.test/a.ogg".into(),
                caption: None,
            }),
        )
        .unwrap();
        assert_eq!(audio["type"], "audio");
        assert_eq!(audio["audio"], json!({"link":"https://x.test/a.ogg"}));
        let buttons = message_body(
            "+1",
            &Content::Interactive(InteractiveContent {
                body: "Pick".into(),
                buttons: vec![ReplyButton {
                    id: "yes".into(),
                    title: "A very long title over twenty".into(),
                }],
            }),
        )
        .unwrap();
        assert_eq!(buttons["interactive"]["type"], "button");
        let reply = &buttons["interactive"]["action"]["buttons"][0]["reply"];
        assert_eq!(reply["id"], "yes");
        assert_eq!(reply["title"].as_str().unwrap().chars().count(), 20);
    }

    #[test]
    fn errors_map_to_named_codes() {
        let e = GraphError {
            code: 131047,
            message: "Re-engagement message".into(),
            title: String::new(),
            error_data: ErrorData {
                details: "More than 24 hours have passed".into(),
            },
        };
        let info = error_info(&e);
        assert_eq!(info.code, "reengagement_window_closed");
        assert!(info.message.contains("131047") && info.message.contains("24 hours"));
        assert_eq!(error_code(190), "access_token_expired");
        assert_eq!(error_code(131026), "recipient_unreachable");
        assert_eq!(error_code(130429), "throughput_limited");
        assert_eq!(error_code(999_999), "whatsapp_999999");
        assert!(is_throttle(130429) && !is_throttle(131026));
    }
}
