//! What every account starts with: example templates and a demo chatbot flow. Seeded once per
//! account (a marker row in `messaging_seeds`), lazily the first time the account lists or uses
//! templates or flows, so accounts created by any path get them and deleting the examples does
//! not bring them back.

use serde_json::json;
use sqlx::AnyConnection;

use crate::{chatbot, db::Db, error::ApiError, ids::now_ms, templates};

/// (name, language, body)
pub const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "order_update",
        "en",
        "Hi {{name}}, order {{order}} has shipped",
    ),
    (
        "order_update",
        "es",
        "Hola {{name}}, tu pedido {{order}} ha sido enviado",
    ),
    (
        "appointment_reminder",
        "en",
        "Hi {{name}}, a reminder of your appointment on {{date}} at {{time}}. Reply C to cancel.",
    ),
    (
        "verification_code",
        "en",
        "Your verification code is {{code}}. It expires in 10 minutes.",
    ),
    (
        "welcome",
        "en",
        "Welcome to {{company}}, {{name}}! Reply HELP any time for assistance.",
    ),
];

/// The demo flow: a support menu with buttons, an order lookup that records the order number
/// on the contact, and a handover to a human.
pub fn demo_flow() -> (&'static str, chatbot::Definition) {
    let definition = serde_json::from_value(json!({
        "keywords": ["help", "support"],
        "start": "menu",
        "steps": [
            {
                "id": "menu",
                "message": {
                    "text": "Hi {{name}}! How can we help?",
                    "buttons": [
                        {"id": "track", "title": "Track my order"},
                        {"id": "human", "title": "Talk to a human"}
                    ]
                },
                "actions": [{"type": "set_tag", "tag": "chatbot"}],
                "transitions": [
                    {"button": "track", "next": "ask_order"},
                    {"button": "human", "next": "handover"},
                    {"keyword": "order", "next": "ask_order"},
                    {"keyword": "agent", "next": "handover"}
                ],
                "fallback": "menu"
            },
            {
                "id": "ask_order",
                "message": {"text": "Please send your order number."},
                "fallback": "order_received"
            },
            {
                "id": "order_received",
                "message": {"text": "Thanks! Order {{reply}} is on its way. Anything else? Reply HELP."},
                "actions": [{"type": "set_attribute", "key": "last_order", "value": "{{reply}}"}],
                "end": "complete"
            },
            {
                "id": "handover",
                "message": {"text": "Connecting you with a teammate. They will reply here shortly."},
                "end": "handover"
            }
        ]
    }))
    .expect("the demo flow is well-formed");
    ("Support demo", definition)
}

/// Seeds the account's examples once, in a transaction of its own (so the marker and the
/// examples commit together). Cheap when already done: one primary-key read. Call it before
/// taking a connection or beginning a transaction (the SQLite pool has one connection).
pub async fn ensure_seeded(db: &Db, account_id: &str) -> Result<(), ApiError> {
    let done: Option<(String,)> =
        sqlx::query_as("SELECT account_id FROM messaging_seeds WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(db)
            .await?;
    if done.is_some() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    seed(&mut tx, account_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Seeds on the caller's transaction unless the account was seeded already.
pub async fn seed(conn: &mut AnyConnection, account_id: &str) -> Result<(), ApiError> {
    let first = sqlx::query(
        "INSERT INTO messaging_seeds (account_id, seeded_at) VALUES ($1, $2) \
         ON CONFLICT (account_id) DO NOTHING",
    )
    .bind(account_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(());
    }
    for (name, language, body) in TEMPLATES {
        match templates::store::insert(conn, account_id, name, language, body).await {
            Ok(_) => {}
            // The account made its own template of that name first: keep theirs.
            Err(ApiError::Conflict { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    let (name, definition) = demo_flow();
    chatbot::store::insert(conn, account_id, name, definition).await?;
    Ok(())
}
