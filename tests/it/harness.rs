//! Starts the real `wiz-backend` and `wiz-gateway` binaries on free loopback ports with a
//! private temp directory, and gives tests clients for the admin API and the public API.
//!
//! Binaries are the ones cargo built next to this test binary (`cargo test --workspace` builds
//! every package's binaries). Readiness is polled with a deadline; nothing sleeps and hopes.

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_EMAIL: &str = "admin@example.test";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The target directory that holds the workspace binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/it-<hash> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so cargo builds it",
        path.display()
    );
    path
}

/// HKDF-SHA256(ikm = internal token, no salt, info = `label`), 32 bytes: how both programs derive
/// their keys from the internal token (docs/internal-api.md). Written from the document, not
/// from either program's code.
fn token_derivation(token: &str, label: &str) -> [u8; 32] {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, token.as_bytes())
        .expand(label.as_bytes(), &mut okm)
        .expect("32-byte output");
    okm
}

/// The `x-wiz-internal-token` value of `/internal` calls.
pub fn internal_bearer(token: &str) -> String {
    hex::encode(token_derivation(token, "wiz internal-api bearer v1"))
}

/// What a gateway proof binds (docs/internal-api.md, "Forwarded requests").
#[derive(Debug, Clone, Copy)]
pub struct ProofFields<'a> {
    pub unix_secs: i64,
    pub scheme: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub client_ip: &'a str,
    pub key_id: &'a str,
    pub account_id: &'a str,
    pub request_id: &'a str,
}

/// `x-wiz-gateway-proof` for `f`: `v2,<t>,<hex HMAC-SHA256(proof key, fields joined by \n)>`.
pub fn gateway_proof(token: &str, f: &ProofFields<'_>) -> String {
    use hmac::Mac;
    let key = token_derivation(token, "wiz gateway-proof v2");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    let t = f.unix_secs.to_string();
    let fields = [
        "v2",
        t.as_str(),
        f.scheme,
        f.method,
        f.path_and_query,
        f.client_ip,
        f.key_id,
        f.account_id,
        f.request_id,
    ];
    mac.update(fields.join("\n").as_bytes());
    format!("v2,{t},{}", hex::encode(mac.finalize().into_bytes()))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A loopback port for a program this suite starts, handed out once per run.
///
/// "Bind :0, read the port, release it" is not enough here: tests start their stacks
/// concurrently, and between the release and the child's own bind the kernel may give the same
/// ephemeral port to another test's probe, listener or outgoing connection. The child then fails
/// to bind while a stranger answers its health check. So ports come from below the kernel's
/// ephemeral range (which neither `bind(:0)` nor `connect` ever uses), from a counter this
/// process owns, starting at an offset taken from the pid so two suites on one machine rarely
/// meet; a port some other program already holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = port_pool();
    let span = high - low;
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919) % span));
    for _ in 0..span {
        let port = (low + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// The pool `free_port` draws from: from 10000 up to the start of the kernel's ephemeral range.
fn port_pool() -> (u32, u32) {
    const LOW: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    // A machine whose ephemeral range starts low leaves no room below it; use the range above.
    if ephemeral_start >= LOW + 2_000 {
        (LOW, ephemeral_start)
    } else {
        (61_000, 65_000)
    }
}

/// Polls `check` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Extra settings for one test's stack.
#[derive(Default, Clone)]
pub struct Options {
    pub backend_env: Vec<(String, String)>,
    pub gateway_env: Vec<(String, String)>,
    /// The backend serves HTTPS with a certificate for `localhost` signed by this CA (PEM);
    /// the gateway gets `https://localhost:<port>` and this CA as `backend_ca`.
    pub backend_ca: Option<PathBuf>,
}

impl Options {
    pub fn backend(mut self, name: &str, value: &str) -> Self {
        self.backend_env.push((name.into(), value.into()));
        self
    }

    pub fn gateway(mut self, name: &str, value: &str) -> Self {
        self.gateway_env.push((name.into(), value.into()));
        self
    }

    /// The backend on HTTPS with `cert`/`key` (for `localhost`), signed by `ca`.
    pub fn backend_https(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self = self
            .backend("WIZ_BACKEND__LISTEN_TLS__CERT", &cert.display().to_string())
            .backend("WIZ_BACKEND__LISTEN_TLS__KEY", &key.display().to_string())
            .gateway("WIZ_GATEWAY__BACKEND_CA", &ca.display().to_string());
        self.backend_ca = Some(ca.to_path_buf());
        self
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub backend_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    options: Options,
    backend: Option<Child>,
    gateway: Option<Child>,
    http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        // Unique per stack, so a gateway can never be talking to another stack's backend.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("test-internal-token-{}-{nanos}", std::process::id()) + &"x".repeat(32);
        let mut stack = Stack {
            backend_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            token,
            options: options.clone(),
            backend: None,
            gateway: None,
            http: match &options.backend_ca {
                None => reqwest::Client::new(),
                Some(ca) => {
                    let pem = std::fs::read(ca).expect("backend CA file");
                    reqwest::Client::builder()
                        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
                        .build()
                        .expect("client")
                }
            },
        };
        stack.start_backend().await;
        stack.start_gateway().await;
        stack
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    pub fn backend_url(&self) -> String {
        match self.options.backend_ca {
            // The certificate names `localhost`.
            Some(_) => format!("https://localhost:{}", self.backend_addr.port()),
            None => format!("http://{}", self.backend_addr),
        }
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics_addr)
    }

    /// The stack's private directory: the backend's working directory and database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The shared gateway↔backend secret of this stack.
    pub fn internal_token(&self) -> &str {
        &self.token
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}/wiz.db", self.dir.path().display())
    }

    /// Environment of the backend process, also used for CLI runs against the same database.
    pub fn backend_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("WIZ_BACKEND__LISTEN".into(), self.backend_addr.to_string()),
            ("WIZ_BACKEND__DATABASE_URL".into(), self.database_url()),
            ("WIZ_BACKEND__INTERNAL_TOKEN".into(), self.token.clone()),
            (
                "WIZ_BACKEND__WEBHOOKS__ALLOW_PRIVATE_TARGETS".into(),
                "true".into(),
            ),
            (
                "WIZ_BACKEND__CHANNEL__TIMELINE".into(),
                "20ms,40ms,60ms".into(),
            ),
            ("WIZ_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("WIZ_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ];
        env.extend(self.options.backend_env.iter().cloned());
        env
    }

    pub(crate) fn gateway_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("WIZ_GATEWAY__LISTEN".into(), self.gateway_addr.to_string()),
            (
                "WIZ_GATEWAY__METRICS_LISTEN".into(),
                self.metrics_addr.to_string(),
            ),
            ("WIZ_GATEWAY__BACKEND_URL".into(), self.backend_url()),
            ("WIZ_GATEWAY__INTERNAL_TOKEN".into(), self.token.clone()),
        ];
        env.extend(self.options.gateway_env.iter().cloned());
        env
    }

    fn spawn(&self, name: &str, env: Vec<(String, String)>) -> Child {
        self.spawn_logged(name, name, env)
    }

    /// Starts binary `name`, logging to `<log_name>.log` in the stack's directory.
    pub(crate) fn spawn_logged(
        &self,
        name: &str,
        log_name: &str,
        env: Vec<(String, String)>,
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{log_name}.log")))
            .expect("log file");
        // Both programs look for config/<name>.yaml relative to the working directory; the
        // temp dir has none, so they run on defaults plus the environment given here.
        Command::new(bin(name))
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_BACKTRACE", "1")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"))
    }

    pub async fn start_backend(&mut self) {
        assert!(self.backend.is_none(), "backend already running");
        let mut child = self.spawn("wiz-backend", self.backend_env());
        let url = format!("{}/healthz", self.backend_url());
        self.wait_healthy(&mut child, "wiz-backend", &url).await;
        self.backend = Some(child);
    }

    pub async fn start_gateway(&mut self) {
        assert!(self.gateway.is_none(), "gateway already running");
        let mut child = self.spawn("wiz-gateway", self.gateway_env());
        let url = format!("{}/healthz", self.gateway_url());
        self.wait_healthy(&mut child, "wiz-gateway", &url).await;
        let metrics = format!("{}/healthz", self.metrics_url());
        self.wait_healthy(&mut child, "wiz-gateway metrics", &metrics)
            .await;
        self.gateway = Some(child);
    }

    /// Polls `url` until it answers 2xx. The child must still be running afterwards: if it died
    /// (say it could not bind its port), whoever answered was somebody else.
    pub(crate) async fn wait_healthy(&self, child: &mut Child, what: &str, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what} exited ({status}) while starting; logs:\n{}",
                    self.logs()
                );
            }
            if let Ok(r) = self.http.get(url).send().await {
                if r.status().is_success() {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("{what} exited ({status}); {url} was answered by another process");
                    }
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{what} did not become healthy at {url}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, so the process shuts down gracefully (flushes usage, finishes requests).
    pub async fn stop_backend(&mut self) {
        if let Some(child) = self.backend.take() {
            terminate(child).await;
        }
    }

    pub async fn stop_gateway(&mut self) {
        if let Some(child) = self.gateway.take() {
            terminate(child).await;
        }
    }

    /// Puts `child` in the running gateway's place (an upgrade's new process) and hands back the
    /// one it replaces.
    pub(crate) fn replace_gateway(&mut self, child: Child) -> Option<Child> {
        self.gateway.replace(child)
    }

    /// Sends a signal (e.g. `HUP`) to the running gateway.
    pub fn signal_gateway(&self, signal: &str) {
        let pid = self.gateway.as_ref().expect("gateway running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// The running backend's process id (to read its memory from /proc).
    pub fn backend_pid(&self) -> u32 {
        self.backend.as_ref().expect("backend running").id()
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill_backend(&mut self) {
        if let Some(mut child) = self.backend.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL of the gateway: nothing flushed, no shutdown step.
    pub fn kill_gateway(&mut self) {
        if let Some(mut child) = self.gateway.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart_backend(&mut self) {
        self.stop_backend().await;
        self.start_backend().await;
    }

    pub async fn restart_gateway(&mut self) {
        self.stop_gateway().await;
        self.start_gateway().await;
    }

    /// Runs `wiz-backend <args>` (e.g. the accounts CLI) against this stack's database.
    pub fn backend_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("wiz-backend"))
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.backend_env())
            .args(args)
            .output()
            .expect("running wiz-backend CLI")
    }

    /// Starts one more `wiz-gateway` against this stack's backend, with the same token and
    /// gateway options plus `env`, on new ports (scale-out tests). It logs to
    /// `wiz-gateway-<n>.log` next to the others and is killed when dropped.
    pub async fn start_extra_gateway(&self, env: &[(&str, &str)]) -> ExtraGateway {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut full = self.gateway_env();
        full.extend([
            ("WIZ_GATEWAY__LISTEN".into(), addr.to_string()),
            (
                "WIZ_GATEWAY__METRICS_LISTEN".into(),
                metrics_addr.to_string(),
            ),
        ]);
        full.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log_name = format!("wiz-gateway-{}", addr.port());
        let mut child = self.spawn_logged("wiz-gateway", &log_name, full);
        for url in [addr, metrics_addr].map(|a| format!("http://{a}/healthz")) {
            self.wait_healthy(&mut child, &log_name, &url).await;
        }
        ExtraGateway {
            child: Some(child),
            addr,
            metrics_addr,
        }
    }

    /// Everything the processes logged so far (extra gateways and backends included).
    pub fn logs(&self) -> String {
        let mut names = vec!["wiz-backend".to_string(), "wiz-gateway".to_string()];
        let mut extra: Vec<String> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".log").map(str::to_owned))
            .filter(|n| n.starts_with("wiz-gateway-") || n.starts_with("wiz-backend-"))
            .collect();
        extra.sort();
        names.extend(extra);
        names
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                format!("--- {name}.log ---\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn gateway_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_url()))
            .send()
            .await
            .expect("gateway metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn backend_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.backend_url()))
            .send()
            .await
            .expect("backend metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits until the gateway's key table has caught up with every key change the backend has
    /// made so far (compares the backend's key version with the gateway's
    /// `wiz_gateway_key_table_version` gauge), without spending any key's quota.
    pub async fn wait_synced(&self) {
        self.wait_synced_at(&self.metrics_url()).await;
    }

    /// `wait_synced` for the gateway whose metrics listener is at `metrics_url`.
    pub async fn wait_synced_at(&self, metrics_url: &str) {
        let version = self.backend_key_version().await;
        let what = format!("gateway at {metrics_url} to reach key version {version}");
        eventually(&what, Duration::from_secs(5), || async {
            let metrics = self
                .http
                .get(format!("{metrics_url}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let seen = metric_value(&metrics, "wiz_gateway_key_table_version").unwrap_or(-1.0);
            (seen >= version as f64).then_some(())
        })
        .await;
    }

    pub async fn backend_key_version(&self) -> i64 {
        let body: Value = self
            .http
            .get(format!("{}/internal/keys", self.backend_url()))
            .header("x-wiz-internal-token", internal_bearer(&self.token))
            .send()
            .await
            .expect("internal keys")
            .json()
            .await
            .expect("internal keys json");
        body["version"].as_i64().expect("version")
    }

    /// A console client logged in as the demo account's admin, talking through the gateway.
    pub async fn admin(&self) -> Admin {
        Admin::login(&self.gateway_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// A public API client for `key`, talking through the gateway.
    pub fn api(&self, key: &ApiKey) -> Api {
        Api {
            base: self.gateway_url(),
            key: key.key.clone(),
            secret: key.secret.clone(),
            http: self.http.clone(),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [self.gateway.take(), self.backend.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A second (third, ...) gateway of a stack; see `Stack::start_extra_gateway`.
pub struct ExtraGateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

impl ExtraGateway {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics_addr)
    }

    /// A public API client for `key` through this gateway.
    pub fn api(&self, stack: &Stack, key: &ApiKey) -> Api {
        Api {
            base: self.url(),
            ..stack.api(key)
        }
    }

    /// SIGTERM, as `Stack::stop_gateway`.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child).await;
        }
    }
}

impl Drop for ExtraGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A throwaway `redis-server` (no persistence) on a free loopback port; killed on drop.
/// Fails, never skips, when `redis-server` is not installed: `scripts/test` installs it.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    pub url: String,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            url: String::new(),
        };
        server.url = format!("redis://127.0.0.1:{}/0", server.port);
        server.restart().await;
        server
    }

    /// Starts the server (again) on its port, empty: what a Redis without persistence is after a
    /// crash and restart.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let port = self.port;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "scale-out tests need `redis-server` on PATH (Debian package redis-server; \
                     scripts/test installs it): {e}"
                )
            });
        self.child = Some(child);
        // Redis answers a raw inline `PING` with `+PONG` once it is ready.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eventually(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
                conn.write_all(b"PING\r\n").await.ok()?;
                let mut reply = [0u8; 7];
                conn.read_exact(&mut reply).await.ok()?;
                (&reply == b"+PONG\r\n").then_some(())
            },
        )
        .await;
    }

    /// SIGKILL: every counter is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server holds its connections and data but answers nothing (a hung store).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

async fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of an unlabelled series (or the first series of that name) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A response as tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of a SPEC §4 error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and returns the body, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        &self.body
    }

    /// Asserts a SPEC §4 refusal: status, `error.code`, the full error object and request id.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "unexpected refusal; body: {}",
            self.body
        );
        let error = &self.body["error"];
        for field in ["type", "message", "request_id"] {
            assert!(
                error[field].as_str().is_some_and(|s| !s.is_empty()),
                "error.{field} missing in {}",
                self.body
            );
        }
        assert!(self.header("x-request-id").is_some(), "no X-Request-Id");
    }
}

/// A logged-in console session (cookie + CSRF token), as the browser would hold it.
pub struct Admin {
    pub base: String,
    pub http: reqwest::Client,
    pub csrf: String,
    pub session: Value,
}

impl Admin {
    pub async fn login(base: &str, email: &str, password: &str) -> Admin {
        Self::try_login(base, email, password)
            .await
            .unwrap_or_else(|r| panic!("login as {email} failed: {} {}", r.status, r.body))
    }

    pub async fn try_login(base: &str, email: &str, password: &str) -> Result<Admin, Reply> {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("client");
        let reply = Reply::from(
            http.post(format!("{base}/admin/session"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .expect("login request"),
        )
        .await;
        if reply.status != StatusCode::OK {
            return Err(reply);
        }
        Ok(Admin {
            base: base.to_string(),
            http,
            csrf: reply.body["csrf_token"].as_str().unwrap_or_default().into(),
            session: reply.body,
        })
    }

    pub fn account_id(&self) -> String {
        self.session["account"]["id"]
            .as_str()
            .unwrap_or_default()
            .into()
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await.expect("admin request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates an API key (defaults merged with `body`) and returns its one-time credentials.
    pub async fn create_key(&self, body: Value) -> ApiKey {
        let mut request = json!({"name": "test key"});
        if let (Some(target), Some(extra)) = (request.as_object_mut(), body.as_object()) {
            target.extend(extra.clone());
        }
        let reply = self.post("/admin/keys", request).await;
        let body = reply.expect(201);
        ApiKey {
            id: body["id"].as_str().expect("key id").into(),
            key: body["key"].as_str().expect("key").into(),
            secret: body["secret"].as_str().expect("secret").into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub key: String,
    pub secret: String,
}

/// A developer's client for the public API, authenticating with key + secret.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub secret: String,
    pub http: reqwest::Client,
}

/// How a request presents its credentials.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    /// `Authorization: Bearer <key>` + `X-Api-Secret: <secret>`.
    Bearer,
    /// `Authorization: Basic base64(key:secret)`.
    Basic,
    None,
}

impl Api {
    pub fn request(&self, method: Method, path: &str, auth: Auth) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match auth {
            Auth::Bearer => request
                .header("authorization", format!("Bearer {}", self.key))
                .header("x-api-secret", &self.secret),
            Auth::Basic => {
                let pair = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", self.key, self.secret));
                request.header("authorization", format!("Basic {pair}"))
            }
            Auth::None => request,
        }
    }

    pub async fn send(request: reqwest::RequestBuilder) -> Reply {
        Reply::from(request.send().await.expect("api request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::send(self.request(Method::GET, path, Auth::Bearer)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        Self::send(self.request(Method::POST, path, Auth::Bearer).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        Self::send(self.request(Method::PATCH, path, Auth::Bearer).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        Self::send(self.request(Method::DELETE, path, Auth::Bearer)).await
    }
}
