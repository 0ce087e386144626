//! What every account starts with: example templates and a demo chatbot flow. Seeded once per
//! account (a marker row in `messaging_seeds`) in the transaction that creates the account
//! (`accounts::create`); accounts from before that are seeded once at start
//! (`seed_existing_accounts`). Deleting the examples does not bring them back.

use serde_json::json;
use sqlx::AnyConnection;

use crate::{chatbot, clock::now_ms, db::Db, templates};

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

/// Seeds the accounts that have no marker yet (created before seeding moved into account
/// creation), each in a transaction of its own. Safe with several backends starting at once:
/// the marker's insert decides which one seeds.
pub async fn seed_existing_accounts(db: &Db) -> Result<usize, sqlx::Error> {
    let missing: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM accounts a WHERE NOT EXISTS \
         (SELECT 1 FROM messaging_seeds s WHERE s.account_id = a.id)",
    )
    .fetch_all(db)
    .await?;
    for (account_id,) in &missing {
        let mut tx = db.begin().await?;
        seed(&mut tx, account_id).await?;
        tx.commit().await?;
    }
    Ok(missing.len())
}

/// Seeds on the caller's transaction unless the account was seeded already.
pub async fn seed(conn: &mut AnyConnection, account_id: &str) -> Result<(), sqlx::Error> {
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
        // `None`: the account made its own template of that name first; keep theirs.
        templates::store::insert(conn, account_id, name, language, body).await?;
    }
    let (name, definition) = demo_flow();
    chatbot::store::insert(conn, account_id, name, definition).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestApp;

    async fn counts(app: &TestApp, account_id: &str) -> (i64, i64) {
        let templates: (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM templates WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(&app.state.db)
                .await
                .unwrap();
        let flows: (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM flows WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(&app.state.db)
                .await
                .unwrap();
        (templates.0, flows.0)
    }

    #[tokio::test]
    async fn accounts_start_seeded_and_older_ones_are_seeded_once_at_start() {
        let app = TestApp::new().await;
        let demo = app.demo_console().await;
        assert_eq!(
            counts(&app, &demo.account_id).await,
            (super::TEMPLATES.len() as i64, 1)
        );
        // An account from before seeding moved into account creation: no marker, no examples.
        sqlx::query(
            "INSERT INTO accounts (id, name, plan, created_at) VALUES ($1, 'Old', 'free', 0)",
        )
        .bind("acc_old")
        .execute(&app.state.db)
        .await
        .unwrap();
        assert_eq!(counts(&app, "acc_old").await, (0, 0));
        assert_eq!(
            super::seed_existing_accounts(&app.state.db).await.unwrap(),
            1
        );
        assert_eq!(
            counts(&app, "acc_old").await,
            (super::TEMPLATES.len() as i64, 1)
        );
        // Once: deleted examples stay deleted.
        sqlx::query("DELETE FROM templates WHERE account_id = 'acc_old'")
            .execute(&app.state.db)
            .await
            .unwrap();
        assert_eq!(
            super::seed_existing_accounts(&app.state.db).await.unwrap(),
            0
        );
        assert_eq!(counts(&app, "acc_old").await, (0, 1));
    }
}
