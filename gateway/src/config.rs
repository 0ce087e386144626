//! Gateway configuration: YAML file + `WIZ_GATEWAY__*` overrides → `GatewayConfig` (every field
//! has a default) → `validate()` → `RuntimeConfig`, the compiled form the proxy reads through an
//! `ArcSwap`. Each section checks and compiles itself, and the compiled form keeps the sections
//! and names of the file (`config.sync.retry_max` is `sync.retry_max_seconds`), so a consumer reads
//! the names an operator writes. The backend's `config` module is written the same way, except
//! for durations: the backend reads `15s` through `humantime-serde`, while the gateway's duration
//! fields carry their unit in the key (`window_seconds: 10`, `flush_interval_ms: 1000`), the names
//! operators' files and `WIZ_GATEWAY__*_SECONDS` variables already use; they compile to `Duration`s.
//!
//! This module never reads the process environment: `main` captures the variables once and hands
//! them over in a `ConfigSource`, so a hot reload re-applies the same overrides and tests stay
//! hermetic.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Deserializer};

use crate::client_ip::TrustedProxies;
use crate::keys::parse_net;
use crate::limits::redis::redact_url;
use crate::throttle::ThrottleSettings;

pub const ENV_PREFIX: &str = "WIZ_GATEWAY__";
pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.yaml";
pub const MIN_INTERNAL_TOKEN_LEN: usize = 32;

/// The configuration as written by operators. Every field has a default except
/// `internal_token`, which `validate` insists on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: String,
    pub metrics_listen: String,
    pub backend_url: String,
    /// Several backends, load-balanced; when set, `backend_url` is ignored.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub backends: Vec<String>,
    /// PEM file of the CA that signs `https://` backends; `None` = the system roots.
    pub backend_ca: Option<String>,
    pub internal_token: Option<Secret>,
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
    pub threads: usize,
    /// Whether the proxy's threads share one work-stealing runtime (`true`) or each run their
    /// own and keep the connections they accepted (`false`, nginx's model; cheaper per request).
    pub work_stealing: bool,
    pub shutdown_grace_seconds: u64,
    pub max_body_bytes: u64,
    /// Unix socket over which a new process started with `--upgrade` takes over the listeners.
    pub upgrade_sock: String,
    pub tls: TlsConfig,
    pub clients: ClientsConfig,
    pub limits: LimitsConfig,
    pub auth_throttle: AuthThrottleConfig,
    pub sync: SyncConfig,
    pub usage: UsageConfig,
    pub log: LogConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "0.0.0.0:8080".into(),
            metrics_listen: "127.0.0.1:9091".into(),
            backend_url: "http://127.0.0.1:8081".into(),
            backends: Vec::new(),
            backend_ca: None,
            internal_token: None,
            trusted_proxies: Vec::new(),
            threads: 2,
            work_stealing: true,
            shutdown_grace_seconds: 5,
            max_body_bytes: 4 * 1024 * 1024,
            upgrade_sock: "/tmp/wiz-gateway-upgrade.sock".into(),
            tls: TlsConfig::default(),
            clients: ClientsConfig::default(),
            limits: LimitsConfig::default(),
            auth_throttle: AuthThrottleConfig::default(),
            sync: SyncConfig::default(),
            usage: UsageConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Checks every field and compiles the runtime form; all problems are reported at once.
    pub fn validate(&self) -> Result<RuntimeConfig, ConfigError> {
        let mut problems = Problems::default();
        let p = &mut problems;
        let listen = p.socket_addr("listen", &self.listen);
        let metrics_listen = p.socket_addr("metrics_listen", &self.metrics_listen);
        let backends = self.compile_backends(p);
        if let Some(ca) = &self.backend_ca {
            if let Err(reason) = crate::tls::read_ca_file(Path::new(ca)) {
                p.add("backend_ca", reason);
            }
        }
        let internal_token = self.compile_internal_token(p);
        let trusted_proxies = self.compile_trusted_proxies(p);
        p.range("threads", self.threads, 1..=256);
        if self.shutdown_grace_seconds > 600 {
            p.add("shutdown_grace_seconds", "must be at most 600");
        }
        if self.max_body_bytes < 1024 {
            p.add("max_body_bytes", "must be at least 1024");
        }
        if self.upgrade_sock.trim().is_empty() {
            p.add("upgrade_sock", "must be a path for a Unix socket");
        }
        let tls = p.section("tls", |p| self.tls.compile(p));
        let clients = p.section("clients", |p| self.clients.compile(p));
        let limits = p.section("limits", |p| self.limits.compile(p));
        let auth_throttle = p.section("auth_throttle", |p| self.auth_throttle.compile(p));
        let sync = p.section("sync", |p| self.sync.compile(p));
        let usage = p.section("usage", |p| self.usage.compile(p));
        p.section("log", |p| self.log.check(p));
        if !problems.found.is_empty() {
            return Err(ConfigError::Invalid(problems.found));
        }
        let (Some(listen), Some(metrics_listen), Some(internal_token)) =
            (listen, metrics_listen, internal_token)
        else {
            return Err(ConfigError::Invalid(Vec::new())); // each `None` added a problem above
        };
        Ok(RuntimeConfig {
            listen,
            metrics_listen,
            backends,
            backend_ca: self.backend_ca.as_deref().map(|p| PathBuf::from(p.trim())),
            proof_key: crate::backend_auth::ProofKey::derive(internal_token.expose()),
            internal_token,
            trusted_proxies,
            threads: self.threads,
            work_stealing: self.work_stealing,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            max_body_bytes: self.max_body_bytes,
            upgrade_sock: PathBuf::from(self.upgrade_sock.trim()),
            tls,
            clients,
            limits,
            auth_throttle,
            sync,
            usage,
            log: self.log.clone(),
        })
    }

    /// `backends`, or else the one `backend_url`.
    fn compile_backends(&self, p: &mut Problems) -> Vec<Backend> {
        let mut backends = Vec::new();
        if self.backends.is_empty() {
            match parse_backend_url(&self.backend_url, 0) {
                Ok(b) => backends.push(b),
                Err(reason) => p.add("backend_url", reason),
            }
        }
        for (i, raw) in self.backends.iter().enumerate() {
            let field = format!("backends[{i}]");
            match parse_backend_url(raw, i) {
                Ok(b) if backends.iter().any(|o: &Backend| o.addr == b.addr) => {
                    p.add(&field, format!("`{}` is listed twice", b.base_url))
                }
                Ok(b) => backends.push(b),
                Err(reason) => p.add(&field, reason),
            }
        }
        backends
    }

    fn compile_internal_token(&self, p: &mut Problems) -> Option<Secret> {
        let reason = match &self.internal_token {
            None => "is required (shared with the backend; set `internal_token` or \
                     WIZ_GATEWAY__INTERNAL_TOKEN)"
                .to_owned(),
            Some(t) if t.expose().chars().count() < MIN_INTERNAL_TOKEN_LEN => {
                format!("must be at least {MIN_INTERNAL_TOKEN_LEN} characters")
            }
            Some(t)
                if t.expose()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()) =>
            {
                "must not contain whitespace or control characters".to_owned()
            }
            Some(t) => return Some(t.clone()),
        };
        p.add("internal_token", reason);
        None
    }

    fn compile_trusted_proxies(&self, p: &mut Problems) -> TrustedProxies {
        let mut nets = Vec::new();
        for (i, raw) in self.trusted_proxies.iter().enumerate() {
            match parse_net(raw) {
                Some(n) => nets.push(n),
                None => p.add(
                    &format!("trusted_proxies[{i}]"),
                    format!("`{raw}` is not an IP address or CIDR"),
                ),
            }
        }
        TrustedProxies::new(nets)
    }
}

/// The HTTPS listener; opened only when both `cert` and `key` are set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: String,
    /// PEM certificate chain, leaf first.
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
    /// `max-age` of `Strict-Transport-Security` on TLS responses; 0 leaves the header out.
    pub hsts_max_age_seconds: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: "0.0.0.0:8443".into(),
            cert: None,
            key: None,
            hsts_max_age_seconds: 31_536_000,
        }
    }
}

impl TlsConfig {
    fn compile(&self, p: &mut Problems) -> Option<TlsListener> {
        let listen = p.socket_addr("listen", &self.listen);
        // An empty value is the same as none (handy to switch an inherited variable off).
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        match (set(&self.cert), set(&self.key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => listen.map(|listen| TlsListener {
                listen,
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                hsts: (self.hsts_max_age_seconds > 0)
                    .then(|| format!("max-age={}", self.hsts_max_age_seconds)),
            }),
            (cert, _) => {
                p.add(
                    if cert.is_none() { "cert" } else { "key" },
                    "tls.cert and tls.key must be set together (PEM files) to open the HTTPS \
                     listener",
                );
                None
            }
        }
    }
}

/// Bounds on what one downstream connection may hold, so that slow or greedy clients cannot
/// starve the others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// Open client connections (both listeners together); more are closed on accept.
    pub max_connections: usize,
    /// A TLS handshake must finish within this.
    pub handshake_timeout_seconds: u64,
    /// A request header must arrive complete within this of its first byte (or of the
    /// connection opening), however it is trickled.
    pub header_timeout_seconds: u64,
    /// Longest pause between two reads of a request body.
    pub body_timeout_seconds: u64,
    /// Request line + headers; larger is answered 431.
    pub max_header_bytes: usize,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout_seconds: u64,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            max_connections: 10_000,
            handshake_timeout_seconds: 10,
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            max_header_bytes: 32 * 1024,
            keepalive_timeout_seconds: 60,
        }
    }
}

impl ClientsConfig {
    fn compile(&self, p: &mut Problems) -> ClientLimits {
        p.range("max_connections", self.max_connections, 1..=1_000_000);
        for (field, value) in [
            ("handshake_timeout_seconds", self.handshake_timeout_seconds),
            ("header_timeout_seconds", self.header_timeout_seconds),
            ("body_timeout_seconds", self.body_timeout_seconds),
            ("keepalive_timeout_seconds", self.keepalive_timeout_seconds),
        ] {
            p.range(field, value, 1..=3600);
        }
        p.range(
            "max_header_bytes",
            self.max_header_bytes,
            1024..=1024 * 1024,
        );
        ClientLimits {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            body_timeout: Duration::from_secs(self.body_timeout_seconds),
            max_header_bytes: self.max_header_bytes,
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_seconds),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

/// What the gateway does while the shared limit store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Answer `503 limiter_unavailable` (the daily cap stays exact).
    #[default]
    Refuse,
    /// Keep serving on per-gateway counters, each gateway admitting its share of what was left.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub store: StoreKind,
    /// A `Secret` because the URL may carry a password.
    pub redis_url: Option<Secret>,
    pub on_store_error: OnStoreError,
}

impl LimitsConfig {
    fn compile(&self, p: &mut Problems) -> LimitsSettings {
        if self.store == StoreKind::Redis {
            // The messages show the URL with its password masked.
            match self.redis_url.as_ref().map(Secret::expose) {
                None => p.add("redis_url", "is required when limits.store is `redis`"),
                Some(u) if !(u.starts_with("redis://") || u.starts_with("rediss://")) => p.add(
                    "redis_url",
                    format!("`{}` must start with redis:// or rediss://", redact_url(u)),
                ),
                Some(u) => {
                    if let Err(e) = crate::limits::RedisStore::open(u) {
                        p.add(
                            "redis_url",
                            format!("`{}` is not a valid Redis URL: {e}", redact_url(u)),
                        );
                    }
                }
            }
        }
        LimitsSettings {
            store: self.store,
            redis_url: self.redis_url.clone(),
            on_store_error: self.on_store_error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthThrottleConfig {
    pub max_failures: u32,
    pub window_seconds: u64,
    /// IPs (IPv6: /64s) tracked at once; bounds the throttle's memory (~100 bytes each).
    pub tracked_ips: usize,
}

impl Default for AuthThrottleConfig {
    fn default() -> Self {
        AuthThrottleConfig {
            max_failures: 20,
            window_seconds: 10,
            tracked_ips: 100_000,
        }
    }
}

impl AuthThrottleConfig {
    fn compile(&self, p: &mut Problems) -> ThrottleSettings {
        if self.max_failures == 0 {
            p.add("max_failures", "must be at least 1");
        }
        p.range("window_seconds", self.window_seconds, 1..=3600);
        p.range("tracked_ips", self.tracked_ips, 1..=10_000_000);
        ThrottleSettings {
            max_failures: self.max_failures,
            window: Duration::from_secs(self.window_seconds),
            tracked_ips: NonZeroUsize::new(self.tracked_ips).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub long_poll_seconds: u64,
    pub retry_max_seconds: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            long_poll_seconds: 25,
            retry_max_seconds: 5,
        }
    }
}

impl SyncConfig {
    fn compile(&self, p: &mut Problems) -> SyncSettings {
        if !(1..=30).contains(&self.long_poll_seconds) {
            p.add(
                "long_poll_seconds",
                "must be between 1 and 30 (the backend holds a poll at most 30 s)",
            );
        }
        p.range("retry_max_seconds", self.retry_max_seconds, 1..=300);
        SyncSettings {
            long_poll: Duration::from_secs(self.long_poll_seconds),
            retry_max: Duration::from_secs(self.retry_max_seconds),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    pub flush_interval_ms: u64,
    /// With the memory store: where accepted requests not yet reported survive a SIGKILL
    /// (`usage_journal`); relative to the working directory; `null` turns it off.
    pub journal: Option<String>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            flush_interval_ms: 1000,
            journal: Some("data/gateway-usage.journal".to_owned()),
        }
    }
}

impl UsageConfig {
    fn compile(&self, p: &mut Problems) -> UsageSettings {
        p.range("flush_interval_ms", self.flush_interval_ms, 50..=60_000);
        UsageSettings {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            journal: self
                .journal
                .as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    fn check(&self, p: &mut Problems) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            p.add(
                "level",
                format!("`{}` is not a valid level or filter: {e}", self.level),
            );
        }
    }
}

/// A string that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(v) => v,
        Form::Text(s) => s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|p| p.trim().trim_matches('"').to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
    })
}

/// What is wrong with a configuration. Each problem is a `figment::Error`: its `path` is the full
/// key path (`limits.redis_url`, `backends[1]`), its `kind` the reason, and its `metadata`, when
/// known, where the value came from (the file, or the variable's own provider). figment fills these in
/// for what it cannot parse; [`ConfigSource::load_runtime`] for what the checks refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{}", .0.iter().map(describe).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<figment::Error>),
}

/// figment's chain of errors, all `extract_lossy` found.
impl From<figment::Error> for ConfigError {
    fn from(errors: figment::Error) -> ConfigError {
        ConfigError::Invalid(errors.into_iter().collect())
    }
}

impl ConfigError {
    /// The fields named in this error (empty for read errors).
    pub fn fields(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Invalid(found) => found.iter().map(field).collect(),
        }
    }
}

fn field(problem: &figment::Error) -> String {
    match problem.path.is_empty() {
        true => "(top level)".to_owned(),
        false => problem.path.join("."),
    }
}

/// `limits.redis_url: <reason> (from environment variable WIZ_GATEWAY__LIMITS__REDIS_URL)`.
fn describe(problem: &figment::Error) -> String {
    match origin(problem) {
        Some(origin) => format!("{}: {} (from {origin})", field(problem), problem.kind),
        None => format!("{}: {}", field(problem), problem.kind),
    }
}

/// `config file <path>` or `environment variable <name>`; `None` for a default value.
fn origin(problem: &figment::Error) -> Option<String> {
    let metadata = problem.metadata.as_ref()?;
    Some(match &metadata.source {
        Some(Source::File(path)) => format!("config file {}", path.display()),
        _ => metadata.name.to_string(),
    })
}

/// What the checks found wrong, every field at once. Each section checks its own fields under
/// [`Problems::section`], which puts the section's name before theirs.
#[derive(Debug, Default)]
struct Problems {
    section: Vec<String>,
    found: Vec<figment::Error>,
}

impl Problems {
    fn add(&mut self, field: &str, reason: impl Into<String>) {
        let mut problem = figment::Error::from(reason.into());
        problem.path = self.section.clone();
        self.found.push(problem.with_path(field));
    }

    /// Runs `compile` with field names relative to the section `name`.
    fn section<T>(&mut self, name: &str, compile: impl FnOnce(&mut Problems) -> T) -> T {
        self.section.push(name.to_owned());
        let compiled = compile(self);
        self.section.pop();
        compiled
    }

    /// Adds "must be between …" unless `value` lies in `range`.
    fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        field: &str,
        value: T,
        range: RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            let reason = format!("must be between {} and {}", range.start(), range.end());
            self.add(field, reason);
        }
    }

    fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        let parsed = value.trim().parse().ok();
        if parsed.is_none() {
            self.add(
                field,
                format!("`{value}` is not an IP:port socket address (e.g. 0.0.0.0:8080)"),
            );
        }
        parsed
    }
}

/// Where the configuration comes from: a file (optional when it is the default path) and the
/// `WIZ_GATEWAY__*` variables `main` captured.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    /// A missing file is an error only when the operator named it explicitly.
    pub file_required: bool,
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    pub fn file(path: impl Into<PathBuf>) -> ConfigSource {
        ConfigSource {
            path: Some(path.into()),
            file_required: true,
            env: Vec::new(),
        }
    }

    /// Keeps only the `WIZ_GATEWAY__*` variables of `vars`.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> ConfigSource {
        self.env = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        self
    }

    /// Reads and parses (no validation): the file, then the variables on top.
    pub fn load(&self) -> Result<GatewayConfig, ConfigError> {
        Ok(self.figment()?.extract_lossy()?)
    }

    /// Reads, parses, validates and compiles. A refused value is traced to the file or variable
    /// that set it.
    pub fn load_runtime(&self) -> Result<RuntimeConfig, ConfigError> {
        let figment = self.figment()?;
        figment
            .extract_lossy::<GatewayConfig>()?
            .validate()
            .map_err(|err| match err {
                ConfigError::Invalid(mut found) => {
                    for problem in &mut found {
                        let key = problem.path.join(".");
                        let key = key.split('[').next().unwrap_or_default();
                        problem.metadata = figment.find_metadata(key).cloned();
                    }
                    ConfigError::Invalid(found)
                }
                read => read,
            })
    }

    fn figment(&self) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = &self.path {
            // Tried here first: a missing default file is no file, an unreadable one a `Read`
            // error rather than a problem of its values. figment reads it again, as the source
            // its metadata names.
            match std::fs::read(path) {
                Ok(_) => figment = figment.merge(Yaml::file_exact(path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.file_required => {}
                Err(e) => {
                    return Err(ConfigError::Read {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        let vars = self.env.iter().filter_map(|(k, v)| EnvVar::prefixed(k, v));
        Ok(vars.fold(figment, Figment::merge))
    }
}

/// One captured `WIZ_GATEWAY__A__B=value` variable as a figment provider, under the key
/// figment's `Env::prefixed(ENV_PREFIX).split("__")` gives it (`a.b`). Not `Env` itself, which
/// (0.10) reads the process environment — library code does not: a reload re-applies what `main`
/// captured, tests hand theirs over — and parses values on its own (`1234` a number, `"x"`
/// unquoted), so a digits-only token would be refused as a string. Here the value stays a string
/// that `extract_lossy` reads as the field's type (`true`, `8`, `a,b`), and each variable is its
/// own provider, so its metadata names it.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn prefixed(name: &str, value: &str) -> Option<EnvVar> {
        let key = name.strip_prefix(ENV_PREFIX)?.replace("__", ".");
        let key = key.to_ascii_lowercase();
        (!key.split('.').any(str::is_empty)).then(|| EnvVar {
            name: name.to_owned(),
            key,
            value: value.to_owned(),
        })
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}

/// One backend: where forwarded requests and sync calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its position in `backends` (0 for `backend_url`): the `backend` label of its metrics,
    /// which never carry the URL (it may hold credentials).
    pub index: usize,
    /// `scheme://host:port` without a trailing slash, for the sync client.
    pub base_url: String,
    /// The host as written, for the `Host` header of health checks, SNI and the name its
    /// certificate is verified against.
    pub host: String,
    /// Resolved once at load time, for the proxy's peer.
    pub addr: SocketAddr,
    /// `https://`: the hop is TLS, verified against `backend_ca` (or the system roots).
    pub tls: bool,
}

/// The compiled `tls` section: present only when the HTTPS listener is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The whole `Strict-Transport-Security` value, if any.
    pub hsts: Option<String>,
}

/// The compiled `clients` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub keepalive_timeout: Duration,
}

/// The validated, compiled configuration. Only this form is shared with the running gateway.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// At least one; `backends`, or else `backend_url`.
    pub backends: Vec<Backend>,
    pub backend_ca: Option<PathBuf>,
    pub internal_token: Secret,
    /// Derived from `internal_token` once, for the proof on every forwarded request.
    pub proof_key: crate::backend_auth::ProofKey,
    pub trusted_proxies: TrustedProxies,
    pub threads: usize,
    pub work_stealing: bool,
    pub shutdown_grace: Duration,
    pub max_body_bytes: u64,
    pub upgrade_sock: PathBuf,
    pub tls: Option<TlsListener>,
    pub clients: ClientLimits,
    pub limits: LimitsSettings,
    pub auth_throttle: ThrottleSettings,
    pub sync: SyncSettings,
    pub usage: UsageSettings,
    pub log: LogConfig,
}

/// The compiled `limits` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSettings {
    pub store: StoreKind,
    pub redis_url: Option<Secret>,
    pub on_store_error: OnStoreError,
}

/// The compiled `sync` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    pub long_poll: Duration,
    pub retry_max: Duration,
}

/// The compiled `usage` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSettings {
    pub flush_interval: Duration,
    /// `None`: no journal (set to `null` or empty).
    pub journal: Option<PathBuf>,
}

impl RuntimeConfig {
    /// Fields that only take effect at start-up; a reload that changes them is applied for the
    /// rest and warns about these.
    pub fn restart_only_changes(&self, new: &RuntimeConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.metrics_listen != new.metrics_listen {
            changed.push("metrics_listen");
        }
        if self.threads != new.threads {
            changed.push("threads");
        }
        if self.work_stealing != new.work_stealing {
            changed.push("work_stealing");
        }
        if self.backends != new.backends {
            changed.push("backends");
        }
        if self.tls.as_ref().map(|t| (t.listen, &t.cert, &t.key))
            != new.tls.as_ref().map(|t| (t.listen, &t.cert, &t.key))
        {
            changed.push("tls");
        }
        if self.backend_ca != new.backend_ca {
            changed.push("backend_ca");
        }
        if self.upgrade_sock != new.upgrade_sock {
            changed.push("upgrade_sock");
        }
        if self.usage.journal != new.usage.journal {
            changed.push("usage.journal");
        }
        if self.clients.max_connections != new.clients.max_connections {
            changed.push("clients.max_connections");
        }
        if self.limits != new.limits {
            changed.push("limits");
        }
        if self.log != new.log {
            changed.push("log");
        }
        changed
    }
}

fn parse_backend_url(raw: &str, index: usize) -> Result<Backend, String> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(format!("`{raw}` must start with http:// or https://")),
    };
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Err(format!("`{raw}` must not have a path or query"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{raw}` has no host"))?;
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host_for_lookup, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    Ok(Backend {
        index,
        base_url: format!("{}://{}:{}", url.scheme(), host, port),
        addr,
        tls,
        host: host_for_lookup.to_owned(),
    })
}

/// `config/gateway.yaml` relative to the working directory, as operators run it.
pub fn default_path() -> &'static Path {
    Path::new(DEFAULT_CONFIG_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn env(vars: &[(&str, &str)]) -> ConfigSource {
        ConfigSource::default().with_env(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(std::iter::once(("OTHER_VAR".to_string(), "x".to_string()))),
        )
    }

    fn yaml(text: &str) -> (tempfile::TempDir, ConfigSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, ConfigSource::file(path))
    }

    #[test]
    fn defaults_need_only_a_token() {
        let err = env(&[]).load_runtime().unwrap_err();
        assert_eq!(err.fields(), vec!["internal_token"]);
        let rt = env(&[("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN)])
            .load_runtime()
            .unwrap();
        assert_eq!(rt.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(rt.metrics_listen, "127.0.0.1:9091".parse().unwrap());
        assert_eq!(rt.backends.len(), 1);
        assert_eq!(rt.backends[0].addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(rt.backends[0].base_url, "http://127.0.0.1:8081");
        assert_eq!(rt.limits.on_store_error, OnStoreError::Refuse);
        assert_eq!(rt.threads, 2);
        assert_eq!(rt.limits.store, StoreKind::Memory);
        assert_eq!(rt.auth_throttle.max_failures, 20);
        assert!(
            !format!("{rt:?}").contains(TOKEN),
            "token must not be printed"
        );
    }

    #[test]
    fn spec_env_variables_override_the_file() {
        let (_d, src) =
            yaml("listen: 0.0.0.0:1\ninternal_token: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
        let src = src.with_env(
            [
                ("WIZ_GATEWAY__LISTEN", "127.0.0.1:18080"),
                ("WIZ_GATEWAY__METRICS_LISTEN", "127.0.0.1:19091"),
                ("WIZ_GATEWAY__BACKEND_URL", "http://localhost:18081"),
                ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
                ("WIZ_GATEWAY__LIMITS__STORE", "memory"),
                ("WIZ_GATEWAY__LIMITS__REDIS_URL", "redis://127.0.0.1:6379/0"),
                ("WIZ_GATEWAY__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1/32"),
                ("WIZ_GATEWAY__AUTH_THROTTLE__MAX_FAILURES", "7"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let rt = src.load_runtime().unwrap();
        assert_eq!(rt.listen, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(rt.metrics_listen, "127.0.0.1:19091".parse().unwrap());
        assert_eq!(rt.backends[0].addr.port(), 18081);
        assert!(rt.backends[0].addr.ip().is_loopback());
        assert_eq!(rt.internal_token.expose(), TOKEN);
        assert_eq!(
            rt.limits.redis_url.as_ref().map(Secret::expose),
            Some("redis://127.0.0.1:6379/0")
        );
        assert!(rt.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
        assert!(rt.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
        assert!(!rt.trusted_proxies.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(rt.auth_throttle.max_failures, 7);
    }

    #[test]
    fn redis_store_is_accepted_and_its_password_never_printed() {
        let url = "redis://:hunter2-password@127.0.0.1:6379/0";
        let rt = env(&[
            ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
            ("WIZ_GATEWAY__LIMITS__STORE", "redis"),
            ("WIZ_GATEWAY__LIMITS__REDIS_URL", url),
        ])
        .load_runtime()
        .unwrap();
        assert_eq!(rt.limits.store, StoreKind::Redis);
        assert_eq!(rt.limits.redis_url.as_ref().map(Secret::expose), Some(url));
        assert!(!format!("{rt:?}").contains("hunter2"));

        let err = env(&[
            ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
            ("WIZ_GATEWAY__LIMITS__STORE", "redis"),
            ("WIZ_GATEWAY__LIMITS__REDIS_URL", "http://:hunter2@x/0"),
        ])
        .load_runtime()
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.redis_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("listen: nowhere\n", "listen"),
            ("backend_url: ftp://x\n", "backend_url"),
            ("backends: [http://127.0.0.1:1, ftp://x]\n", "backends[1]"),
            (
                "backends: [http://127.0.0.1:1, http://127.0.0.1:1]\n",
                "backends[1]",
            ),
            (
                "limits:\n  on_store_error: panic\n",
                "limits.on_store_error",
            ),
            ("internal_token: short\n", "internal_token"),
            (
                "trusted_proxies: [10.0.0.0/8, bogus]\n",
                "trusted_proxies[1]",
            ),
            ("limits:\n  store: etcd\n", "limits.store"),
            ("limits:\n  store: redis\n", "limits.redis_url"),
            ("limits:\n  bogus: 1\n", "limits"),
            (
                "auth_throttle:\n  window_seconds: 0\n",
                "auth_throttle.window_seconds",
            ),
            ("sync:\n  long_poll_seconds: 99\n", "sync.long_poll_seconds"),
            (
                "usage:\n  flush_interval_ms: 1\n",
                "usage.flush_interval_ms",
            ),
            ("log:\n  format: xml\n", "log.format"),
            ("log:\n  level: 'info,=='\n", "log.level"),
            ("threads: 0\n", "threads"),
            ("threads: many\n", "threads"),
            ("max_body_bytes: 10\n", "max_body_bytes"),
            ("unknown_field: 1\n", "unknown_field"),
        ];
        for (text, field) in cases {
            let (_d, src) = yaml(text);
            let src = if field == &"internal_token" {
                src
            } else {
                src.with_env([("WIZ_GATEWAY__INTERNAL_TOKEN".to_string(), TOKEN.to_string())])
            };
            let err = src.load_runtime().unwrap_err();
            let msg = err.to_string();
            assert!(
                err.fields().iter().any(|f| f == field) || msg.contains(field),
                "{text:?}: expected field {field} in {msg}"
            );
        }
    }

    #[test]
    fn backends_list_wins_over_backend_url() {
        let rt = env(&[
            ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
            ("WIZ_GATEWAY__BACKEND_URL", "http://127.0.0.1:1"),
            (
                "WIZ_GATEWAY__BACKENDS",
                "http://127.0.0.1:18081, http://localhost:18082",
            ),
            ("WIZ_GATEWAY__LIMITS__ON_STORE_ERROR", "local"),
        ])
        .load_runtime()
        .unwrap();
        let ports: Vec<(usize, u16)> = rt
            .backends
            .iter()
            .map(|b| (b.index, b.addr.port()))
            .collect();
        assert_eq!(ports, vec![(0, 18081), (1, 18082)]);
        assert_eq!(rt.backends[1].host, "localhost");
        assert_eq!(rt.limits.on_store_error, OnStoreError::Local);

        let (_d, src) = yaml("backends:\n  - http://127.0.0.1:18083\n");
        let rt = src
            .with_env([("WIZ_GATEWAY__INTERNAL_TOKEN".to_string(), TOKEN.to_string())])
            .load_runtime()
            .unwrap();
        assert_eq!(rt.backends.len(), 1);
        assert_eq!(rt.backends[0].base_url, "http://127.0.0.1:18083");
    }

    #[test]
    fn bad_env_variable_is_named() {
        let err = env(&[
            ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
            ("WIZ_GATEWAY__LIMITS__STORE", "etcd"),
        ])
        .load_runtime()
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("limits.store"), "{msg}");
        assert!(msg.contains("WIZ_GATEWAY__LIMITS__STORE"), "{msg}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_default_is_not() {
        let src = ConfigSource::file("/nonexistent/gateway.yaml");
        assert!(matches!(src.load(), Err(ConfigError::Read { .. })));
        let src = ConfigSource {
            path: Some("/nonexistent/gateway.yaml".into()),
            file_required: false,
            env: vec![],
        };
        assert_eq!(src.load().unwrap(), GatewayConfig::default());
    }

    #[test]
    fn shipped_config_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let gateway = dir.join("gateway.yaml");
        let cfg = ConfigSource::file(&gateway).load().unwrap();
        // The shipped file documents defaults; it must not drift from them, except for the
        // token, which has no default.
        let expected = GatewayConfig {
            internal_token: cfg.internal_token.clone(),
            ..GatewayConfig::default()
        };
        assert_eq!(cfg, expected);
        ConfigSource::file(&gateway)
            .with_env([("WIZ_GATEWAY__INTERNAL_TOKEN".to_string(), TOKEN.to_string())])
            .load_runtime()
            .unwrap();
    }

    #[test]
    fn env_values_are_read_as_the_field_type() {
        // A token of digits only stays a string; `false`, numbers and lists become what the
        // field asks for.
        let digits = "01234567890123456789012345678901234";
        let rt = env(&[
            ("WIZ_GATEWAY__INTERNAL_TOKEN", digits),
            ("WIZ_GATEWAY__WORK_STEALING", "false"),
            ("WIZ_GATEWAY__THREADS", "4"),
            ("WIZ_GATEWAY__SYNC__RETRY_MAX_SECONDS", "9"),
            ("WIZ_GATEWAY__TRUSTED_PROXIES", "[10.0.0.0/8, 192.168.0.1]"),
            ("WIZ_GATEWAY__TLS__CERT", ""),
        ])
        .load_runtime()
        .unwrap();
        assert_eq!(rt.internal_token.expose(), digits);
        assert!(!rt.work_stealing);
        assert_eq!(rt.threads, 4);
        assert_eq!(rt.sync.retry_max, Duration::from_secs(9));
        assert!(rt.trusted_proxies.contains("192.168.0.1".parse().unwrap()));
        assert!(
            rt.tls.is_none(),
            "an empty variable switches the listener off"
        );

        let msg = env(&[
            ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
            ("WIZ_GATEWAY__CLIENTS__MAX_CONNECTIONS", "lots"),
        ])
        .load_runtime()
        .unwrap_err()
        .to_string();
        assert!(msg.contains("clients.max_connections"), "{msg}");
        assert!(
            msg.contains("WIZ_GATEWAY__CLIENTS__MAX_CONNECTIONS"),
            "{msg}"
        );
    }

    #[test]
    fn every_problem_is_reported_under_its_full_key_path() {
        let (_d, src) = yaml(
            "threads: 0\nclients:\n  max_header_bytes: 1\ntls:\n  cert: c.pem\n\
             sync:\n  retry_max_seconds: 0\nlimits:\n  store: redis\n",
        );
        let err = src.load_runtime().unwrap_err();
        assert_eq!(
            err.fields(),
            vec![
                "internal_token",
                "threads",
                "tls.key",
                "clients.max_header_bytes",
                "limits.redis_url",
                "sync.retry_max_seconds",
            ]
        );
        let msg = err.to_string();
        assert!(
            msg.contains("clients.max_header_bytes: must be between 1024 and 1048576"),
            "{msg}"
        );
    }

    #[test]
    fn compiled_form_keeps_the_sections_and_the_documented_defaults() {
        let rt = env(&[("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN)])
            .load_runtime()
            .unwrap();
        assert_eq!(rt.sync.long_poll, Duration::from_secs(25));
        assert_eq!(rt.sync.retry_max, Duration::from_secs(5));
        assert_eq!(rt.usage.flush_interval, Duration::from_millis(1000));
        assert_eq!(
            rt.usage.journal.as_deref(),
            Some(Path::new("data/gateway-usage.journal"))
        );
        assert_eq!(rt.auth_throttle.window, Duration::from_secs(10));
        assert_eq!(rt.auth_throttle.tracked_ips.get(), 100_000);
        assert_eq!(rt.clients.body_timeout, Duration::from_secs(30));
        assert_eq!(rt.clients.max_header_bytes, 32 * 1024);
        assert_eq!(rt.shutdown_grace, Duration::from_secs(5));
        assert_eq!(rt.max_body_bytes, 4 * 1024 * 1024);
        assert!(rt.tls.is_none());
        assert_eq!(rt.limits.redis_url, None);
    }

    #[test]
    fn checks_name_where_the_bad_value_came_from() {
        let (_d, src) = yaml("threads: 0\n");
        let err = src
            .with_env(
                [
                    ("WIZ_GATEWAY__INTERNAL_TOKEN", TOKEN),
                    ("WIZ_GATEWAY__SYNC__LONG_POLL_SECONDS", "99"),
                    ("WIZ_GATEWAY__LIMITS__STORE", "redis"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .load_runtime()
            .unwrap_err();
        let ConfigError::Invalid(found) = err else {
            panic!("{err}")
        };
        let found: Vec<(String, Option<String>)> =
            found.iter().map(|f| (field(f), origin(f))).collect();
        let origins: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|(field, origin)| (field.as_str(), origin.as_deref()))
            .collect();
        assert_eq!(origins.len(), 3, "{origins:?}");
        assert_eq!(origins[0].0, "threads");
        assert!(
            origins[0].1.unwrap().starts_with("config file "),
            "{origins:?}"
        );
        // Required but absent: no source to name.
        assert_eq!(origins[1], ("limits.redis_url", None));
        assert_eq!(
            origins[2],
            (
                "sync.long_poll_seconds",
                Some("environment variable WIZ_GATEWAY__SYNC__LONG_POLL_SECONDS")
            )
        );
    }
}
