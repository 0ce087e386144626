//! Two backends on one PostgreSQL share every background job (SPEC §10): a 2,000-recipient bulk
//! completes exactly as with one backend, without faults and with each backend SIGKILLed once
//! mid-run. Checked in the database itself: every message final, the batch counts adding up,
//! every contracted event written exactly once, no recipient messaged twice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    harness::{eventually, Api, Options, Stack},
    postgres::{stack_on, ExtraBackend, Postgres},
};

const RECIPIENTS: usize = 2000;

/// The simulated channel's special numbers (see backend `channel::simulated`), one each.
const UNREACHABLE: &str = "+15550000001";
const NEVER_READ: &str = "+15550000002";
const NOT_ON_WHATSAPP: &str = "+15550000003";

async fn bulk(api: &Api, run: usize) -> String {
    let mut recipients: Vec<Value> = (0..RECIPIENTS - 3)
        .map(|i| json!({"to": format!("+1415{run}{i:06}")}))
        .collect();
    for special in [UNREACHABLE, NEVER_READ, NOT_ON_WHATSAPP] {
        recipients.push(json!({"to": special}));
    }
    let reply = api
        .post(
            "/v1/messages/bulk",
            json!({"type": "text", "text": {"body": "shared"}, "recipients": recipients}),
        )
        .await;
    reply.expect(202)["batch_id"].as_str().unwrap().to_string()
}

fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.query(sql)
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Messages of the batch the channel has taken (no longer waiting to be sent).
fn handed_over(pg: &Postgres, batch: &str) -> i64 {
    count(
        pg,
        &format!(
            "SELECT COUNT(*) FROM messages WHERE batch_id = '{batch}' AND dispatched_at IS NOT NULL"
        ),
    )
}

/// Waits for the batch to settle, then checks it the way an operator would in the database.
async fn assert_settled(pg: &Postgres, api: &Api, batch: &str, logs: impl Fn() -> String) {
    let started = Instant::now();
    eventually(
        "every message of the batch final",
        Duration::from_secs(120),
        || async {
            let open = count(
                pg,
                &format!(
                    "SELECT COUNT(*) FROM messages WHERE batch_id = '{batch}' AND \
                     (status IN ('queued', 'sent') OR next_report_at IS NOT NULL \
                      OR (status = 'delivered' AND phone <> '{NEVER_READ}'))"
                ),
            );
            (open == 0).then_some(())
        },
    )
    .await;
    let settled_in = started.elapsed();
    let b = api.get(&format!("/v1/batches/{batch}")).await;
    let b = b.expect(200);
    assert_eq!(b["status"], "completed", "{b}\n{}", logs());
    assert_eq!(b["total"], RECIPIENTS, "{b}");
    let c = &b["counts"];
    assert_eq!(
        (c["queued"].as_i64(), c["sent"].as_i64()),
        (Some(0), Some(0)),
        "{b}"
    );
    assert_eq!(c["read"], RECIPIENTS - 3, "{b}");
    assert_eq!(c["delivered"], 1, "{b}");
    assert_eq!(c["failed"], 2, "{b}");

    // No recipient got two messages: one row per phone, and each message handed over once
    // (one `message.sent` or, for the two that fail at once, one `message.failed`).
    let phones = count(
        pg,
        &format!("SELECT COUNT(DISTINCT phone) FROM messages WHERE batch_id = '{batch}'"),
    );
    assert_eq!(phones, RECIPIENTS as i64);

    // Every contracted event exactly once per message and status.
    let per_type = pg.query(&format!(
        "SELECT e.type, COUNT(*), COUNT(DISTINCT m.id) FROM events e \
         JOIN messages m ON m.id = (e.data::json->>'id') \
         WHERE m.batch_id = '{batch}' GROUP BY e.type ORDER BY e.type"
    ));
    let n = RECIPIENTS - 2;
    assert_eq!(
        per_type,
        format!(
            "message.delivered|{n}|{n}\nmessage.failed|2|2\nmessage.read|{r}|{r}\n\
             message.sent|{n}|{n}",
            r = n - 1
        ),
        "events per type (count, distinct messages)\n{}",
        logs()
    );
    let completed = count(
        pg,
        &format!(
            "SELECT COUNT(*) FROM events WHERE type = 'batch.completed' \
             AND data::json->>'id' = '{batch}'"
        ),
    );
    assert_eq!(completed, 1, "batch.completed events");
    eprintln!(
        "batch {batch}: {RECIPIENTS} messages final, events exact; settled {settled_in:?} after \
         the last check started"
    );
}

#[tokio::test]
async fn two_backends_share_the_messaging_work_and_survive_sigkill() {
    let pg = Postgres::start().await;
    let options = Options::default()
        .backend("WIZ_BACKEND__CHANNEL__RATE_PER_SECOND", "1000")
        .backend("WIZ_BACKEND__CHANNEL__TIMELINE", "50ms,150ms,300ms");
    let mut stack: Stack = stack_on(&pg, options).await;
    let mut second: ExtraBackend = stack.start_extra_backend().await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"name": "shared", "rate_limit_per_minute": 10000,
                           "daily_limit": 100000}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    // Without faults.
    let t = Instant::now();
    let batch = bulk(&api, 1).await;
    assert_settled(&pg, &api, &batch, || stack.logs()).await;
    eprintln!(
        "no faults: {RECIPIENTS} recipients settled in {:?}",
        t.elapsed()
    );

    // Each backend SIGKILLed once mid-run, and started again.
    let t = Instant::now();
    let batch = bulk(&api, 2).await;
    eventually("a fifth handed over", Duration::from_secs(60), || async {
        (handed_over(&pg, &batch) >= RECIPIENTS as i64 / 5).then_some(())
    })
    .await;
    stack.kill_backend();
    let at = handed_over(&pg, &batch);
    stack.start_backend().await;
    eventually(
        "three fifths handed over",
        Duration::from_secs(60),
        || async { (handed_over(&pg, &batch) >= 3 * RECIPIENTS as i64 / 5).then_some(()) },
    )
    .await;
    drop(second);
    let at2 = handed_over(&pg, &batch);
    second = stack.start_extra_backend().await;
    eprintln!("killed the first backend at {at} handed over, the second at {at2}");
    assert!(
        at2 < RECIPIENTS as i64,
        "the second kill came after the whole batch was handed over"
    );
    stack.wait_synced().await;
    assert_settled(&pg, &api, &batch, || stack.logs()).await;
    eprintln!(
        "with kills: {RECIPIENTS} recipients settled in {:?}",
        t.elapsed()
    );

    // Both took part, and neither logged a failed round (a deadlock would say so).
    let all = stack.logs();
    for bad in ["deadlock", "round failed"] {
        assert!(!all.contains(bad), "{bad} in the logs:\n{all}");
    }
    drop(second);
}
