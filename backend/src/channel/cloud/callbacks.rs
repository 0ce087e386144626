//! Meta's webhook callbacks for the Cloud API channel: the signature check, the payload shapes
//! and what each part does here.
//!
//! - Verification handshake and signatures follow Meta's "Getting started with webhooks"
//!   (https://developers.facebook.com/docs/graph-api/webhooks/getting-started): `GET` with
//!   `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge` (answer the challenge), and every
//!   `POST` signed in `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.
//! - Payloads follow the `messages` webhook reference
//!   (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages
//!   and `.../messages/status`): `{"object":"whatsapp_business_account","entry":[{"id":WABA,
//!   "changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":
//!   {"display_phone_number","phone_number_id"},"contacts":[..],"messages":[..],
//!   "statuses":[{"id":wamid,"status":"sent|delivered|read|failed","timestamp":"<unix s>",
//!   "recipient_id","errors":[{"code","title","message","error_data":{"details"}}]}]}}]}]}`.
//!   Inbound `messages[]` carry `from`, `id`, `timestamp`, `type` and the type's object: `text`
//!   (`body`), `button` (a template's quick reply: `payload`, `text`), `interactive`
//!   (`button_reply` / `list_reply`: `id`, `title`), `image`/`video`/`audio`/`document`/`sticker`
//!   (`id` of the media, `mime_type`, `caption`).
//!
//! Fields are read leniently (`serde(default)`, unknown fields ignored): Meta adds fields
//! without notice and a callback refused for an unknown field would be retried for days.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use sqlx::AnyConnection;

use super::graph;
use crate::{
    channel::settings::CloudSettings,
    clock::now_ms,
    contacts,
    ids::new_id,
    messages::{
        inbound::{self, Inbound},
        store, ButtonReply, Content, ErrorInfo, MediaContent, MediaKind, MessageError, Status,
        TextContent, MAX_CAPTION_CHARS, MAX_TEXT_CHARS,
    },
    state::AppState,
    unit_of_work::UnitOfWork,
};

/// Reports waiting for their wamid are dropped after this long.
const PENDING_TTL_MS: i64 = 24 * 3600 * 1000;

/// Checks `X-Hub-Signature-256` against the raw body, in constant time (`Mac::verify_slice`).
pub fn signature_valid(app_secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    pub object: String,
    pub entry: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Entry {
    pub id: String,
    pub changes: Vec<Change>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Change {
    pub field: String,
    pub value: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Value {
    pub metadata: Metadata,
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub phone_number_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StatusUpdate {
    pub id: String,
    pub status: String,
    pub timestamp: String,
    pub errors: Vec<graph::GraphError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InboundMessage {
    pub from: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<TextBody>,
    pub button: Option<TemplateButton>,
    pub interactive: Option<Interactive>,
    pub image: Option<Media>,
    pub video: Option<Media>,
    pub audio: Option<Media>,
    pub document: Option<Media>,
    pub sticker: Option<Media>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TextBody {
    pub body: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TemplateButton {
    pub payload: String,
    pub text: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Interactive {
    pub button_reply: Option<Reply>,
    pub list_reply: Option<Reply>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reply {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Media {
    pub id: String,
    pub caption: Option<String>,
}

fn status_of(s: &str) -> Option<Status> {
    match s {
        "sent" => Some(Status::Sent),
        "delivered" => Some(Status::Delivered),
        "read" => Some(Status::Read),
        "failed" => Some(Status::Failed),
        // `deleted`, `warning`, `played`, ...: nothing in our lifecycle.
        _ => None,
    }
}

/// Meta's unix-seconds string; now when missing or odd.
fn time_of(timestamp: &str) -> i64 {
    timestamp
        .parse::<i64>()
        .ok()
        .filter(|s| *s > 0)
        .map_or_else(now_ms, |s| s.saturating_mul(1000))
}

fn non_empty(s: &str, max: usize) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.chars().take(max).collect())
}

/// Our content for an inbound message; `None` for kinds we do not keep (reactions, locations,
/// system messages, ...).
fn content_of(message: &InboundMessage, media_url: impl Fn(&str) -> String) -> Option<Content> {
    let button = |id: &str, text: &str| {
        let reply = ButtonReply {
            id: non_empty(id, 256),
            text: non_empty(text, 256),
        };
        (reply.id.is_some() || reply.text.is_some()).then_some(Content::Button(reply))
    };
    let media = |kind: MediaKind, m: &Option<Media>| {
        let m = m.as_ref()?;
        let id = non_empty(&m.id, 256)?;
        Some(Content::Media(MediaContent {
            kind,
            // Meta sends a media id, not a file: its Graph URL answers the download link.
            url: media_url(&id),
            caption: m
                .caption
                .as_deref()
                .and_then(|c| non_empty(c, MAX_CAPTION_CHARS)),
        }))
    };
    match message.kind.as_str() {
        "text" => {
            let body = non_empty(&message.text.as_ref()?.body, MAX_TEXT_CHARS)?;
            Some(Content::Text(TextContent { body }))
        }
        "button" => {
            let b = message.button.as_ref()?;
            button(&b.payload, &b.text)
        }
        "interactive" => {
            let i = message.interactive.as_ref()?;
            let r = i.button_reply.as_ref().or(i.list_reply.as_ref())?;
            button(&r.id, &r.title)
        }
        "image" => media(MediaKind::Image, &message.image),
        "sticker" => media(MediaKind::Image, &message.sticker),
        "video" => media(MediaKind::Video, &message.video),
        "audio" => media(MediaKind::Audio, &message.audio),
        "document" => media(MediaKind::Document, &message.document),
        _ => None,
    }
}

/// What one callback did, for the logs and the answer.
#[derive(Debug, Default)]
pub struct Applied {
    pub statuses_applied: usize,
    pub statuses_pending: usize,
    pub messages_received: usize,
    pub ignored: usize,
}

/// Applies a verified callback in one transaction: status reports to the account's messages
/// (forward only; duplicates and late ones change nothing), inbound messages stored once each
/// (by wamid) and fed to the chatbot.
pub async fn apply(
    state: &AppState,
    settings: &CloudSettings,
    payload: &Payload,
) -> Result<Applied, MessageError> {
    let account_id = settings.account_id.as_str();
    let mut applied = Applied::default();
    let mut tx = UnitOfWork::begin(state).await?;
    for change in payload.entry.iter().flat_map(|e| &e.changes) {
        let value = &change.value;
        // A change for another of the app's numbers is not this account's.
        if change.field != "messages" || value.metadata.phone_number_id != settings.phone_number_id
        {
            applied.ignored += value.statuses.len() + value.messages.len();
            continue;
        }
        for update in &value.statuses {
            let Some(status) = status_of(&update.status).filter(|_| !update.id.is_empty()) else {
                applied.ignored += 1;
                continue;
            };
            let error = (status == Status::Failed).then(|| {
                update
                    .errors
                    .first()
                    .map(graph::error_info)
                    .unwrap_or(ErrorInfo {
                        code: "provider_error".into(),
                        message: "WhatsApp reported the message failed without a reason".into(),
                    })
            });
            let at = time_of(&update.timestamp);
            match store::apply_provider_report(
                &mut tx,
                account_id,
                &update.id,
                status,
                at,
                error.as_ref(),
            )
            .await?
            {
                Some(_) => applied.statuses_applied += 1,
                None => {
                    store_pending(&mut tx, account_id, &update.id, status, at, error.as_ref())
                        .await?;
                    applied.statuses_pending += 1;
                }
            }
        }
        for message in &value.messages {
            let from = format!("+{}", message.from.trim_start_matches('+'));
            let content = content_of(message, |id| state.messaging.cloud.media_url(id));
            let (Some(content), true, false) = (
                content,
                contacts::validate_phone_field("from", &from).is_ok(),
                message.id.is_empty(),
            ) else {
                applied.ignored += 1;
                continue;
            };
            // Meta delivers a callback at least once: a wamid seen before is not a new message.
            if store::provider_id_known(&mut tx, account_id, &message.id).await? {
                applied.ignored += 1;
                continue;
            }
            inbound::receive(
                &mut tx,
                Inbound {
                    account_id,
                    channel: super::NAME,
                    from: &from,
                    content,
                    provider_message_id: Some(&message.id),
                },
            )
            .await?;
            applied.messages_received += 1;
        }
    }
    tx.commit().await?;
    Ok(applied)
}

async fn store_pending(
    conn: &mut AnyConnection,
    account_id: &str,
    provider_message_id: &str,
    status: Status,
    at: i64,
    error: Option<&ErrorInfo>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channel_pending_reports (id, account_id, provider_message_id, status, at, \
         error_code, error_message, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id("rpt"))
    .bind(account_id)
    .bind(provider_message_id)
    .bind(status.as_str())
    .bind(at)
    .bind(error.map(|e| e.code.clone()))
    .bind(error.map(|e| e.message.clone()))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct PendingReportRow {
    id: String,
    status: String,
    at: i64,
    error_code: Option<String>,
    error_message: Option<String>,
}

/// Applies (and removes) the reports that waited for this wamid, in lifecycle order so that
/// each status reached keeps its time. Returns the statuses reached.
pub async fn apply_pending(
    conn: &mut UnitOfWork,
    account_id: &str,
    provider_message_id: &str,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query_as::<_, PendingReportRow>(
        "SELECT id, status, at, error_code, error_message FROM channel_pending_reports \
         WHERE account_id = $1 AND provider_message_id = $2",
    )
    .bind(account_id)
    .bind(provider_message_id)
    .fetch_all(&mut **conn)
    .await?;
    let mut reports = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(status) = Status::parse(&row.status) else {
            continue;
        };
        reports.push((
            status,
            row.at,
            row.error_code.map(|code| ErrorInfo {
                code,
                message: row.error_message.unwrap_or_default(),
            }),
            row.id,
        ));
    }
    reports.sort_by_key(|(status, at, _, _)| (status.rank(), *at));
    for (status, at, error, id) in reports {
        store::apply_provider_report(
            conn,
            account_id,
            provider_message_id,
            status,
            at,
            error.as_ref(),
        )
        .await?;
        sqlx::query("DELETE FROM channel_pending_reports WHERE id = $1")
            .bind(id)
            .execute(&mut **conn)
            .await?;
    }
    Ok(())
}

/// Housekeeping: applies waiting reports whose wamid is now known and drops those older than a
/// day (a wamid of another system, or of a send that failed as `send_outcome_unknown`).
pub async fn sweep_pending(conn: &mut UnitOfWork, now: i64) -> Result<(), sqlx::Error> {
    let known: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT p.account_id, p.provider_message_id FROM channel_pending_reports p \
         JOIN messages m ON m.account_id = p.account_id \
         AND m.provider_message_id = p.provider_message_id LIMIT 200",
    )
    .fetch_all(&mut **conn)
    .await?;
    let mut seen = BTreeSet::new();
    for (account_id, wamid) in known {
        if seen.insert((account_id.clone(), wamid.clone())) {
            apply_pending(conn, &account_id, &wamid).await?;
        }
    }
    sqlx::query("DELETE FROM channel_pending_reports WHERE created_at < $1")
        .bind(now - PENDING_TTL_MS)
        .execute(&mut **conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = sign("app-secret-1", body);
        assert!(signature_valid("app-secret-1", body, Some(&good)));
        assert!(!signature_valid("app-secret-2", body, Some(&good)));
        assert!(!signature_valid("app-secret-1", b"{}", Some(&good)));
        assert!(!signature_valid("app-secret-1", body, None));
        assert!(!signature_valid("app-secret-1", body, Some("sha256=zz")));
        assert!(!signature_valid("app-secret-1", body, Some(&good[7..])));
    }

    #[test]
    fn inbound_kinds() {
        let parse = |v: serde_json::Value| -> InboundMessage { serde_json::from_value(v).unwrap() };
        let url = |id: &str| format!("https://graph.test/v1/{id}");
        let text =
            parse(serde_json::json!({"from":"1","id":"w","type":"text","text":{"body":"hi"}}));
        assert_eq!(
            content_of(&text, url),
            Some(Content::Text(TextContent { body: "hi".into() }))
        );
        let tap = parse(serde_json::json!({"type":"interactive",
            "interactive":{"type":"button_reply","button_reply":{"id":"yes","title":"Yes"}}}));
        assert_eq!(
            content_of(&tap, url),
            Some(Content::Button(ButtonReply {
                id: Some("yes".into()),
                text: Some("Yes".into())
            }))
        );
        let image = parse(serde_json::json!({"type":"image",
            "image":{"id":"m1","mime_type":"image/jpeg","caption":"look"}}));
        let Some(Content::Media(m)) = content_of(&image, url) else {
            panic!("media")
        };
        assert_eq!(m.url, "https://graph.test/v1/m1");
        assert_eq!(m.caption.as_deref(), Some("look"));
        let reaction = parse(serde_json::json!({"type":"reaction","reaction":{"emoji":"👍"}}));
        assert_eq!(content_of(&reaction, url), None);
    }
}
