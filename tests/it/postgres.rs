//! The backend on PostgreSQL (SPEC §2: by config alone), across the real binaries: a throwaway
//! PostgreSQL server per test, the console and public API through the gateway, the accounts CLI,
//! and two backends sharing one database and splitting the webhook work.
//!
//! The server comes from Debian's `postgresql` package (`scripts/test` installs it); without it
//! these tests fail with a message saying so, they do not skip.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use futures::future::join_all;
use serde_json::{json, Value};

use crate::harness::{eventually, free_port, Options, Stack};

/// A PostgreSQL server on 127.0.0.1:<free port> with a fresh database `wiz`, in a temp directory.
/// Stopped (immediate mode) and deleted on drop.
pub struct Postgres {
    pub url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// Newest `/usr/lib/postgresql/<version>/bin` (Debian keeps the server binaries off PATH).
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install the \
             Debian package `postgresql` (scripts/test does)"
        )
    })
}

/// The server refuses to run as root; as root, its tools run as the `postgres` OS user.
fn as_server_user(program: PathBuf) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    pub async fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres"]).arg(dir.path());
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
        {
            run(chown, "chown the PostgreSQL temp dir to `postgres`");
        }
        let mut initdb = as_server_user(bin.join("initdb"));
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data);
        run(initdb, "initdb");

        let port = free_port();
        // Loopback TCP only, the socket in our own directory; durability is not the point here.
        let options = format!(
            "-h 127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            dir.path().display()
        );
        let mut start = as_server_user(bin.join("pg_ctl"));
        start
            .args(["-D"])
            .arg(&data)
            .args(["-l"])
            .arg(dir.path().join("postgres.log"))
            .args(["-o", &options, "-W", "start"]);
        run(start, "pg_ctl start");
        let server = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/wiz"),
            port,
            bin: bin.clone(),
            data,
            _dir: dir,
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(server._dir.path().join("postgres.log"))
                    .unwrap_or_default();
                panic!("PostgreSQL did not become ready on port {port}; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut createdb = Command::new(bin.join("createdb"));
        createdb.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "wiz",
        ]);
        run(createdb, "createdb wiz");
        server
    }
}

impl Postgres {
    /// Runs one SQL statement with `psql` and returns its rows, one per line, columns joined by
    /// `|` (unaligned, tuples only): what a test reads from the database directly.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "wiz", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql (Debian package postgresql-client, installed with postgresql)");
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_server_user(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A second `wiz-backend` on the stack's database (see `Stack::start_extra_backend`).
pub struct ExtraBackend {
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl ExtraBackend {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url()))
            .await
            .expect("extra backend metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExtraBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    /// One more `wiz-backend` with this stack's settings, so on the same database (meaningful
    /// with a PostgreSQL `WIZ_BACKEND__DATABASE_URL`), on its own port and log file. The gateway
    /// keeps talking to the first backend; this one shares the background work.
    pub async fn start_extra_backend(&self) -> ExtraBackend {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_name = format!("wiz-backend-{}", addr.port());
        let log = self.dir.path().join(format!("{log_name}.log"));
        let mut env = self.backend_env();
        env.push(("WIZ_BACKEND__LISTEN".into(), addr.to_string()));
        let mut child = self.spawn_logged("wiz-backend", &log_name, env);
        self.wait_healthy(&mut child, &log_name, &format!("http://{addr}/healthz"))
            .await;
        ExtraBackend { addr, log, child }
    }
}

/// A stack whose backend runs on `pg` (plus `options`).
pub async fn stack_on(pg: &Postgres, options: Options) -> Stack {
    let stack = Stack::start_with(options.backend("WIZ_BACKEND__DATABASE_URL", &pg.url)).await;
    let env = stack.backend_env();
    let url = env
        .iter()
        .rev()
        .find(|(k, _)| k == "WIZ_BACKEND__DATABASE_URL")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        url,
        Some(pg.url.as_str()),
        "the option overrides the default"
    );
    stack
}

/// Requests a webhook receiver on 127.0.0.1:0 answered, each after `delay`.
#[derive(Default)]
struct Inbox {
    delivered: Mutex<Vec<(BTreeMap<String, String>, String)>>,
}

async fn receiver(delay: Duration) -> (String, Arc<Inbox>) {
    async fn receive(
        State((inbox, delay)): State<(Arc<Inbox>, Duration)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        tokio::time::sleep(delay).await;
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = String::from_utf8_lossy(&body).into_owned();
        inbox.delivered.lock().unwrap().push((headers, body));
        "ok"
    }
    let inbox = Arc::new(Inbox::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state((inbox.clone(), delay));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), inbox)
}

fn successes(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wiz_webhook_attempts_total{outcome=\"success\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn roomy_key() -> Value {
    json!({"name": "pg", "rate_limit_per_minute": 10000, "daily_limit": 100000})
}

#[tokio::test]
async fn the_backend_runs_on_postgresql() {
    let pg = Postgres::start().await;
    let stack = stack_on(&pg, Options::default()).await;
    let admin = stack.admin().await;
    let (hook_url, inbox) = receiver(Duration::ZERO).await;
    let hook = admin
        .post("/admin/webhooks", json!({"url": hook_url, "events": ["*"]}))
        .await
        .expect(201)
        .clone();
    let secret = hook["secret"].as_str().unwrap().to_string();
    let key = admin.create_key(roomy_key()).await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    // Contacts CRUD and list filters.
    let a = api
        .post(
            "/v1/contacts",
            json!({"phone": "+14155550201", "name": "Ada Lovelace", "tags": ["vip", "b"],
                   "attributes": {"n": 1, "ok": true}}),
        )
        .await
        .expect(201)
        .clone();
    assert_eq!(a["opted_in"], true, "{a}");
    assert_eq!(a["attributes"]["ok"], true, "{a}");
    let b = api
        .post(
            "/v1/contacts",
            json!({"phone": "+14155550202", "name": "Bob_%"}),
        )
        .await
        .expect(201)
        .clone();
    api.post("/v1/contacts", json!({"phone": "+14155550201"}))
        .await
        .expect_error(409, "contact_exists");
    let ids = |r: &Value| -> Vec<String> {
        r["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let a_id = a["id"].as_str().unwrap().to_string();
    let b_id = b["id"].as_str().unwrap().to_string();
    assert_eq!(
        ids(api.get("/v1/contacts?tag=vip").await.expect(200)),
        [a_id.as_str()]
    );
    assert_eq!(
        ids(api.get("/v1/contacts?q=ADA").await.expect(200)),
        [a_id.as_str()]
    );
    // `%` and `_` are literal in the search, on both engines.
    assert_eq!(
        ids(api.get("/v1/contacts?q=b_%25").await.expect(200)),
        [b_id.as_str()]
    );
    assert!(ids(api.get("/v1/contacts?q=x%25").await.expect(200)).is_empty());
    let page = api.get("/v1/contacts?limit=1").await.expect(200).clone();
    assert_eq!(ids(&page), [a_id.as_str()]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("next_cursor")
        .to_string();
    let next = api
        .get(&format!("/v1/contacts?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(next.expect(200)), [b_id.as_str()]);
    let patched = api
        .patch(
            &format!("/v1/contacts/{b_id}"),
            json!({"opted_in": false, "tags": ["vip"]}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(patched["opted_in"], false, "{patched}");
    assert_eq!(
        ids(api.get("/v1/contacts?tag=vip").await.expect(200)).len(),
        2
    );
    api.delete(&format!("/v1/contacts/{b_id}"))
        .await
        .expect(204);
    api.get(&format!("/v1/contacts/{b_id}"))
        .await
        .expect_error(404, "not_found");

    // A message to `read`.
    let sent = api
        .post(
            "/v1/messages",
            json!({"to": "+14155550201", "type": "text", "text": {"body": "hi"}}),
        )
        .await
        .expect(202)
        .clone();
    let message_path = format!("/v1/messages/{}", sent["id"].as_str().unwrap());
    eventually(
        "the message to be read",
        Duration::from_secs(20),
        || async {
            let m = api.get(&message_path).await;
            (m.body["status"] == "read").then_some(())
        },
    )
    .await;

    // Idempotent retries, concurrent: one message, the same answer for all.
    let body = json!({"to": "+14155550203", "type": "text", "text": {"body": "once"}});
    let replies = join_all((0..8).map(|_| {
        let request = api
            .request(
                reqwest::Method::POST,
                "/v1/messages",
                crate::harness::Auth::Bearer,
            )
            .header("idempotency-key", "pg-once")
            .json(&body);
        crate::harness::Api::send(request)
    }))
    .await;
    let first = replies[0].body["id"].clone();
    for r in &replies {
        assert!(r.status == 202 || r.status == 409, "{:?}", r.body);
        if r.status == 202 {
            assert_eq!(r.body["id"], first, "{}", r.body);
        }
    }
    let again = api
        .request(
            reqwest::Method::POST,
            "/v1/messages",
            crate::harness::Auth::Bearer,
        )
        .header("idempotency-key", "pg-once")
        .json(&body);
    let again = crate::harness::Api::send(again).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], first);

    // A small bulk completes, announced exactly once.
    let recipients: Vec<Value> = (0..25)
        .map(|i| json!({"to": format!("+1415555{:04}", 3000 + i)}))
        .collect();
    let bulk = api
        .post(
            "/v1/messages/bulk",
            json!({"type": "text", "text": {"body": "bulk"}, "recipients": recipients}),
        )
        .await
        .expect(202)
        .clone();
    let batch_id = bulk["batch_id"].as_str().unwrap().to_string();
    let batch = eventually("the batch to complete", Duration::from_secs(30), || async {
        let b = api.get(&format!("/v1/batches/{batch_id}")).await;
        (b.body["status"] == "completed").then_some(b.body)
    })
    .await;
    assert_eq!(batch["total"], 25, "{batch}");
    let completed = eventually(
        "the batch.completed webhook",
        Duration::from_secs(20),
        || async {
            let got = inbox.delivered.lock().unwrap().clone();
            let n = got
                .iter()
                .filter(|(_, body)| {
                    let e: Value = serde_json::from_str(body).unwrap();
                    e["type"] == "batch.completed" && e["data"]["id"] == batch_id.as_str()
                })
                .count();
            (n > 0).then_some(got)
        },
    )
    .await;

    // Webhooks arrive signed (the same check as tests/it/webhooks.rs, with the official
    // library) and each event once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let delivered = inbox.delivered.lock().unwrap().clone();
    assert!(delivered.len() >= completed.len());
    let mut seen = BTreeSet::new();
    for (headers, body) in &delivered {
        assert!(
            seen.insert(headers["webhook-id"].clone()),
            "delivered twice: {body}"
        );
        assert!(headers["webhook-signature"].starts_with("v1,"));
    }
    let (headers, body) = &delivered[0];
    verify(&secret, headers, body);

    // The accounts CLI against the same database.
    let out = stack.backend_cli(&[
        "accounts",
        "create",
        "--name",
        "Pg Co",
        "--plan",
        "free",
        "--admin-email",
        "pg@example.test",
        "--admin-password",
        "pg-password-123",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().last().unwrap().trim().to_string();
    assert!(id.starts_with("acc_"), "{stdout}");
    let listing = stack.backend_cli(&["accounts", "list"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("Pg Co"));
    let out = stack.backend_cli(&["accounts", "set-plan", &id, "wiz_bot"]);
    assert!(out.status.success());
    crate::harness::Admin::login(&stack.gateway_url(), "pg@example.test", "pg-password-123").await;
}

fn verify(secret: &str, headers: &BTreeMap<String, String>, body: &str) {
    use std::io::Write;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_verify.py");
    let input = json!({"secret": secret, "headers": headers, "body": body});
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to verify webhooks (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks rejected {body}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn two_backends_on_one_database_split_the_webhook_work() {
    let pg = Postgres::start().await;
    // A small per-endpoint cap and a slow receiver, so one backend cannot take everything.
    let stack = stack_on(
        &pg,
        Options::default().backend("WIZ_BACKEND__WEBHOOKS__MAX_IN_FLIGHT_PER_ENDPOINT", "2"),
    )
    .await;
    let second = stack.start_extra_backend().await;
    // The first start's bootstrap ran once: one account, and the second start found it.
    let listing = stack.backend_cli(&["accounts", "list"]);
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(
        listing.lines().filter(|l| l.contains("acc_")).count(),
        1,
        "{listing}"
    );
    assert!(
        !second.logs().contains("created demo account"),
        "{}",
        second.logs()
    );

    let admin = stack.admin().await;
    let (hook_url, inbox) = receiver(Duration::from_millis(100)).await;
    admin
        .post(
            "/admin/webhooks",
            json!({"url": hook_url, "events": ["contact.created"]}),
        )
        .await
        .expect(201);
    let key = admin.create_key(roomy_key()).await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    let total = 60;
    let mut wanted = BTreeSet::new();
    for i in 0..total {
        let c = api
            .post(
                "/v1/contacts",
                json!({"phone": format!("+1415556{:04}", i)}),
            )
            .await;
        wanted.insert(c.expect(201)["id"].as_str().unwrap().to_string());
    }
    eventually("every event delivered", Duration::from_secs(60), || async {
        let got = inbox.delivered.lock().unwrap();
        let ids: BTreeSet<String> = got
            .iter()
            .map(|(_, body)| {
                let e: Value = serde_json::from_str(body).unwrap();
                e["data"]["id"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        (ids == wanted).then_some(())
    })
    .await;
    // Nothing more arrives later, and nothing arrived twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = inbox.delivered.lock().unwrap().clone();
    let ids: BTreeSet<&String> = delivered.iter().map(|(h, _)| &h["webhook-id"]).collect();
    assert_eq!(
        ids.len(),
        delivered.len(),
        "a webhook-id was delivered twice"
    );
    assert_eq!(delivered.len(), total);

    let first = successes(&stack.backend_metrics().await);
    let other = successes(&second.metrics().await);
    assert_eq!(first + other, total as f64, "first {first}, second {other}");
    assert!(
        first > 0.0 && other > 0.0,
        "both backends delivered: first {first}, second {other}"
    );
}

/// Fair delivery with two backends claiming from one PostgreSQL outbox (SPEC §10).
#[tokio::test]
async fn two_backends_keep_a_healthy_endpoint_fast_beside_dead_ones() {
    let pg = Postgres::start().await;
    let stack = stack_on(&pg, Options::default()).await;
    let _second = stack.start_extra_backend().await;
    crate::webhooks::healthy_endpoint_beside_dead_ones(&stack, "PostgreSQL, two backends").await;
}
