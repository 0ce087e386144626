//! Backend configuration: YAML file, then `WIZ_BACKEND__*` environment variables on top
//! (`__` between nesting levels; `WIZ_ADMIN_EMAIL` / `WIZ_ADMIN_PASSWORD` last), then each
//! section checks itself, errors naming the full key path. Library code never reads the
//! environment: `main` passes it in, so tests can hand over exactly what they want.
//!
//! Written the same way as the gateway's `config` module. The backend keeps no separate compiled
//! form: its sections already hold typed values (`Duration`s, a `SocketAddr`), and consumers read
//! them under the file's names (`config.webhooks.lease`).

use std::{fmt, net::SocketAddr, ops::RangeInclusive, path::Path, time::Duration};

use figment::{
    providers::{Format, Yaml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

pub const ENV_PREFIX: &str = "WIZ_BACKEND__";

/// Older names kept working, applied after the `WIZ_BACKEND__*` variables.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("WIZ_ADMIN_EMAIL", "admin.email"),
    ("WIZ_ADMIN_PASSWORD", "admin.password"),
];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Private listener; only the gateway talks to it.
    pub listen: SocketAddr,
    /// With `cert` and `key` set, `listen` serves HTTPS (for gateways on other hosts).
    pub listen_tls: ListenTlsConfig,
    /// `sqlite://data/wiz.db` (default) or `postgres://...`.
    pub database_url: String,
    /// Shared secret with the gateway (docs/internal-api.md); at least 32 characters.
    pub internal_token: String,
    /// Key material (at least 32 characters) for secrets stored encrypted (webhook secrets).
    /// Empty: read from `secrets_key_file`, generated there on first start. Several backends
    /// sharing one database need the same key.
    pub secrets_key: String,
    /// Where the generated key lives when `secrets_key` is empty (mode 0600).
    pub secrets_key_file: std::path::PathBuf,
    /// Requests with a larger body get 413.
    pub max_body_bytes: usize,
    pub log: LogConfig,
    pub session: SessionConfig,
    pub login_throttle: LoginThrottleConfig,
    pub password_hashing: PasswordHashingConfig,
    pub webhooks: WebhooksConfig,
    /// What one account (tenant) may hold, so that no tenant can grow the database, the gateways'
    /// key tables or the webhook outbox without bound.
    pub account_limits: AccountLimitsConfig,
    pub channel: ChannelConfig,
    pub playground: PlaygroundConfig,
    /// The first admin user, created on first start (`WIZ_ADMIN_EMAIL`, `WIZ_ADMIN_PASSWORD`).
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".parse().expect("static address"),
            listen_tls: ListenTlsConfig::default(),
            database_url: "sqlite://data/wiz.db".into(),
            internal_token: String::new(),
            secrets_key: String::new(),
            secrets_key_file: "data/secrets-key".into(),
            max_body_bytes: 4 * 1024 * 1024,
            log: LogConfig::default(),
            session: SessionConfig::default(),
            login_throttle: LoginThrottleConfig::default(),
            password_hashing: PasswordHashingConfig::default(),
            webhooks: WebhooksConfig::default(),
            account_limits: AccountLimitsConfig::default(),
            channel: ChannelConfig::default(),
            playground: PlaygroundConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

impl Config {
    /// File (if present) → `WIZ_BACKEND__*` variables → `WIZ_ADMIN_*` → validation.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        let mut file = None;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                file = Some(format!("config file {}", path.display()));
                figment = figment.merge(Yaml::string(&text));
            }
            // A missing file means "all defaults".
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        }
        let mut aliases = Vec::new();
        for (name, value) in env {
            if let Some(var) = EnvVar::prefixed(ENV_PREFIX, &name, &value) {
                figment = figment.merge(var);
            } else if let Some(var) = EnvVar::alias(&name, &value) {
                aliases.push(var);
            }
        }
        for var in aliases {
            figment = figment.merge(var);
        }
        let sources = Sources { figment, file };
        let config: Config = sources.extract()?;
        config.validate().map_err(|e| sources.attribute(e))?;
        Ok(config)
    }

    /// Checks every section; all problems are reported at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        let p = &mut problems;
        if self.internal_token.len() < 32 {
            p.add(
                "internal_token",
                "must be set (WIZ_BACKEND__INTERNAL_TOKEN), at least 32 characters",
            );
        }
        if !self.secrets_key.is_empty() && self.secrets_key.len() < crate::secrets::MIN_KEY_LEN {
            p.add(
                "secrets_key",
                "at least 32 characters (or empty: generated into secrets_key_file)",
            );
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            p.add("database_url", "must start with sqlite: or postgres://");
        }
        if self.max_body_bytes < 1024 {
            p.add("max_body_bytes", "must be at least 1024");
        }
        p.section("listen_tls", |p| self.listen_tls.check(p));
        p.section("session", |p| self.session.check(p));
        p.section("login_throttle", |p| self.login_throttle.check(p));
        p.section("password_hashing", |p| self.password_hashing.check(p));
        p.section("webhooks", |p| self.webhooks.check(p));
        p.section("account_limits", |p| self.account_limits.check(p));
        p.section("channel", |p| self.channel.check(p));
        p.section("playground", |p| self.playground.check(p));
        p.section("admin", |p| self.admin.check(p));
        problems.into_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
}

impl ListenTlsConfig {
    fn check(&self, p: &mut Problems) {
        match (&self.cert, &self.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                if let Err(reason) = crate::tls::server_config(Path::new(cert), Path::new(key)) {
                    p.add("", reason);
                }
            }
            (None, Some(_)) => p.add("cert", "must be set with listen_tls.key"),
            (Some(_), None) => p.add("key", "must be set with listen_tls.cert"),
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
    /// A tracing `EnvFilter` directive, e.g. `info` or `wiz_backend=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a console session lives without use (sliding: each use extends it).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a console session lives at most after the login, however much it is used.
    #[serde(with = "humantime_serde")]
    pub absolute_lifetime: Duration,
    /// Mark the session cookie `Secure` (set when the console is served over HTTPS).
    pub cookie_secure: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(12 * 3600),
            absolute_lifetime: Duration::from_secs(12 * 3600),
            cookie_secure: false,
        }
    }
}

impl SessionConfig {
    fn check(&self, p: &mut Problems) {
        p.at_least("ttl", self.ttl, Duration::from_secs(1), "1s");
        p.at_least(
            "absolute_lifetime",
            self.absolute_lifetime,
            Duration::from_secs(1),
            "1s",
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaygroundConfig {
    /// Lifetime of a Playground credential (`POST /admin/keys/{id}/playground-credential`).
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
}

impl Default for PlaygroundConfig {
    fn default() -> Self {
        Self {
            credential_ttl: Duration::from_secs(600),
        }
    }
}

impl PlaygroundConfig {
    fn check(&self, p: &mut Problems) {
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.credential_ttl) {
            p.add("credential_ttl", "must be from 1s to 1h");
        }
    }
}

/// The console login throttle (`accounts::login_throttle` explains the design).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginThrottleConfig {
    /// Failed logins allowed per (email, client IP) within `window`; then 429 for that pair only.
    pub max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Failures of one email, across all IPs, within `window` after which its attempts are
    /// spaced `slowdown_interval` apart (slowed, never refused).
    pub email_slowdown_after: u32,
    /// Failures from one client IP (IPv6: one /64), across all emails, within `window` after
    /// which its attempts are spaced `slowdown_interval` apart (slowed, never refused).
    pub ip_slowdown_after: u32,
    #[serde(with = "humantime_serde")]
    pub slowdown_interval: Duration,
    /// The longest a slowed attempt waits for its turn; then it goes ahead.
    #[serde(with = "humantime_serde")]
    pub max_slowdown: Duration,
    /// Entries kept per counter ((email, IP) pairs, emails, IPs); the least recently used
    /// entry is forgotten beyond. Each costs about 100 bytes.
    pub capacity: usize,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(300),
            email_slowdown_after: 20,
            ip_slowdown_after: 50,
            slowdown_interval: Duration::from_secs(1),
            max_slowdown: Duration::from_secs(5),
            capacity: 50_000,
        }
    }
}

impl LoginThrottleConfig {
    fn check(&self, p: &mut Problems) {
        for (field, value) in [
            ("max_failures", self.max_failures),
            ("email_slowdown_after", self.email_slowdown_after),
            ("ip_slowdown_after", self.ip_slowdown_after),
        ] {
            if value == 0 {
                p.add(field, "must be positive");
            }
        }
        if self.window.is_zero() {
            p.add("window", "must be positive");
        }
        p.range("capacity", self.capacity, 1_000..=10_000_000);
    }
}

/// Argon2 is ~19 MiB and tens of milliseconds of one core per hash: how many run at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashingConfig {
    /// Password hashes and checks running at once; 0 means one per CPU core.
    pub max_concurrent: usize,
    /// How long an attempt waits for a turn before it is refused with 503 `server_busy`.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for PasswordHashingConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 0,
            max_wait: Duration::from_secs(2),
        }
    }
}

impl PasswordHashingConfig {
    fn check(&self, p: &mut Problems) {
        if self.max_concurrent > 1024 {
            p.add("max_concurrent", "at most 1024 (0: one per core)");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Let webhook URLs reach loopback/private/link-local hosts (development and tests only);
    /// off, every special-purpose address (`webhooks::ssrf::SPECIAL`) is refused.
    pub allow_private_targets: bool,
    /// Delays after the first attempt; one retry per entry.
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// Whole-request timeout of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deliveries in flight across all endpoints, per backend process.
    pub max_in_flight: usize,
    /// Deliveries in flight to any one endpoint.
    pub max_in_flight_per_endpoint: usize,
    /// How long the previous secret keeps signing after a rotation.
    #[serde(with = "humantime_serde")]
    pub rotation_overlap: Duration,
    /// An endpoint failing without a single success for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// How long a claimed delivery stays reserved for the backend that claimed it; if that
    /// backend dies, the delivery is attempted again after this. Longer than `timeout`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Finished deliveries (with their attempts) and endpoint log lines older than this are
    /// deleted, so the delivery log does not grow without bound.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry_schedule: ["5s", "5m", "30m", "2h", "5h"]
                .iter()
                .map(|s| humantime::parse_duration(s).expect("static duration"))
                .collect(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            max_in_flight_per_endpoint: 8,
            rotation_overlap: Duration::from_secs(24 * 3600),
            disable_after: Duration::from_secs(3 * 24 * 3600),
            lease: Duration::from_secs(60),
            history_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl WebhooksConfig {
    fn check(&self, p: &mut Problems) {
        if self.retry_schedule.len() > 20 {
            p.add("retry_schedule", "at most 20 retries");
        }
        for (field, value) in [
            ("max_in_flight", self.max_in_flight),
            (
                "max_in_flight_per_endpoint",
                self.max_in_flight_per_endpoint,
            ),
        ] {
            if value == 0 {
                p.add(field, "must be positive");
            }
        }
        if self.lease <= self.timeout {
            p.add("lease", "must be longer than webhooks.timeout");
        }
        p.at_least(
            "history_retention",
            self.history_retention,
            Duration::from_secs(3600),
            "1h",
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountLimitsConfig {
    /// API keys not revoked (revoking one frees its place); over it, `POST /admin/keys` is 422
    /// `too_many_api_keys`.
    pub max_api_keys: u32,
    /// Webhook endpoints (deleting one frees its place); over it, `POST /admin/webhooks` is 422
    /// `too_many_webhook_endpoints`.
    pub max_webhook_endpoints: u32,
    /// Pending deliveries one endpoint may have. An event for an endpoint at the bound gets no
    /// delivery to that endpoint (counted in `wiz_webhook_deliveries_refused_total`, logged with
    /// the endpoint, noted in its log); other endpoints get theirs as usual.
    pub max_pending_deliveries_per_endpoint: u32,
}

impl Default for AccountLimitsConfig {
    fn default() -> Self {
        Self {
            max_api_keys: 100,
            max_webhook_endpoints: 20,
            max_pending_deliveries_per_endpoint: 10_000,
        }
    }
}

impl AccountLimitsConfig {
    fn check(&self, p: &mut Problems) {
        for (field, value) in [
            ("max_api_keys", self.max_api_keys),
            ("max_webhook_endpoints", self.max_webhook_endpoints),
            (
                "max_pending_deliveries_per_endpoint",
                self.max_pending_deliveries_per_endpoint,
            ),
        ] {
            if value == 0 {
                p.add(field, "must be at least 1");
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Delays of the simulated channel's `sent`, `delivered` and `read` after the send.
    #[serde(deserialize_with = "duration_list")]
    pub timeline: Vec<Duration>,
    /// Messages per second per account, like WhatsApp's per-number default.
    pub rate_per_second: u32,
    /// The WhatsApp Business Cloud API channel (accounts choose it in their channel settings).
    pub whatsapp: WhatsAppConfig,
}

/// Where and how the Cloud API channel talks to Meta's Graph API. Tests point `graph_base_url`
/// at a local fake; nothing else in the code names Meta's host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// Scheme and host of the Graph API, without a trailing slash.
    pub graph_base_url: String,
    /// Graph API version in request paths, e.g. `v23.0`.
    pub api_version: String,
    /// Whole-request timeout of one send. A send that times out after the request went out is
    /// failed (`send_outcome_unknown`), never repeated: Meta may have accepted it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First pause of a phone number after Meta answered 429 / `130429`; doubles per repeated
    /// refusal (up to 5 minutes), or Meta's `Retry-After` when it says more.
    #[serde(with = "humantime_serde")]
    pub throttle_backoff: Duration,
    /// Throughput refusals a message may get before it fails with `throughput_limited`.
    pub max_throttle_retries: u32,
    /// Largest webhook callback body accepted from Meta (413 above).
    pub webhook_max_body_bytes: usize,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            graph_base_url: "https://graph.facebook.com".into(),
            api_version: "v23.0".into(),
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            throttle_backoff: Duration::from_secs(1),
            max_throttle_retries: 8,
            webhook_max_body_bytes: 1024 * 1024,
        }
    }
}

impl WhatsAppConfig {
    fn check(&self, p: &mut Problems) {
        let base = self.graph_base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.ends_with('/') {
            p.add(
                "graph_base_url",
                "must be an http(s) URL without a trailing slash",
            );
        }
        let version_ok = self
            .api_version
            .strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !version_ok {
            p.add("api_version", "like v23.0");
        }
        for (field, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                p.add(field, "must be positive");
            }
        }
        p.range(
            "webhook_max_body_bytes",
            self.webhook_max_body_bytes,
            1024..=16 * 1024 * 1024,
        );
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            timeline: vec![
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_secs(1),
            ],
            rate_per_second: 80,
            whatsapp: WhatsAppConfig::default(),
        }
    }
}

impl ChannelConfig {
    fn check(&self, p: &mut Problems) {
        if self.timeline.len() != 3 {
            p.add(
                "timeline",
                "needs exactly three delays: sent, delivered, read",
            );
        }
        if self.rate_per_second == 0 {
            p.add("rate_per_second", "must be positive");
        }
        p.section("whatsapp", |p| self.whatsapp.check(p));
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub email: String,
    /// Empty: a password is generated and printed once on first start.
    pub password: String,
}

impl AdminConfig {
    fn check(&self, p: &mut Problems) {
        if !self.email.is_empty() && !self.email.contains('@') {
            p.add("email", "not an email address");
        }
    }
}

/// One invalid field: its full key path (`limits.redis_url`, `backends[1]`), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
    /// Where the bad value came from (file or variable), when known.
    pub origin: Option<String>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The fields named in this error (empty for read errors).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Invalid(v) => v.iter().map(|e| e.field.as_str()).collect(),
        }
    }
}

/// What one validation found wrong, every field at once. Each section checks its own fields
/// under [`Problems::section`], which prefixes their names into full key paths.
#[derive(Debug, Default)]
struct Problems {
    prefix: String,
    found: Vec<FieldError>,
}

impl Problems {
    /// `field` is relative to the current section; empty names the section itself.
    fn add(&mut self, field: &str, reason: impl Into<String>) {
        let field = match (self.prefix.is_empty(), field.is_empty()) {
            (true, _) => field.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{field}", self.prefix),
        };
        self.found.push(FieldError {
            field,
            reason: reason.into(),
            origin: None,
        });
    }

    /// Runs `check` with field names relative to the section `name`.
    fn section<T>(&mut self, name: &str, check: impl FnOnce(&mut Problems) -> T) -> T {
        let inner = if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let outer = std::mem::replace(&mut self.prefix, inner);
        let compiled = check(self);
        self.prefix = outer;
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

    /// Adds "must be at least `shown`" when `value` is below `min`.
    fn at_least(&mut self, field: &str, value: Duration, min: Duration, shown: &str) {
        if value < min {
            self.add(field, format!("must be at least {shown}"));
        }
    }

    fn into_result(self) -> Result<(), ConfigError> {
        match self.found.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Invalid(self.found)),
        }
    }
}

/// The file and the variables merged, and the file's name for messages.
struct Sources {
    figment: Figment,
    file: Option<String>,
}

impl Sources {
    /// Parses; each error names its key path and the file or variable it came from.
    fn extract<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.figment.extract_lossy().map_err(|err| {
            ConfigError::Invalid(
                err.into_iter()
                    .map(|e| FieldError {
                        field: if e.path.is_empty() {
                            "(top level)".into()
                        } else {
                            e.path.join(".")
                        },
                        reason: e.kind.to_string(),
                        origin: self
                            .origin(e.metadata.as_ref())
                            .or_else(|| self.file.clone()),
                    })
                    .collect(),
            )
        })
    }

    /// Adds to each problem the checks found where its value came from (nothing for a default).
    fn attribute(&self, err: ConfigError) -> ConfigError {
        match err {
            ConfigError::Invalid(mut found) => {
                for problem in &mut found {
                    let key = problem.field.split('[').next().unwrap_or_default();
                    problem.origin = self.origin(self.figment.find_metadata(key));
                }
                ConfigError::Invalid(found)
            }
            read => read,
        }
    }

    fn origin(&self, metadata: Option<&Metadata>) -> Option<String> {
        match metadata {
            Some(m) if m.name.starts_with(ENV_SOURCE) => Some(m.name.to_string()),
            Some(_) => self.file.clone(),
            None => None,
        }
    }
}

const ENV_SOURCE: &str = "environment variable";

/// One `PREFIX` + `A__B=value` variable as a figment provider. The rule is figment's
/// `Env::prefixed(PREFIX).split("__")` — the rest of the name lowercased, `__` between nesting
/// levels — applied to the variables `main` captured: `Env` reads the process environment
/// itself, which library code does not (a reload re-applies the same variables, tests hand
/// theirs over). The value stays a string and `extract_lossy` reads it as the field's type
/// (`true`, `8`, `15s`, `5s,5m`), so a digits-only token stays a string. One provider per variable, so
/// that an error names the variable.
struct EnvVar {
    var: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn prefixed(prefix: &str, name: &str, value: &str) -> Option<EnvVar> {
        let key = name
            .strip_prefix(prefix)?
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>();
        if key.iter().any(String::is_empty) {
            return None;
        }
        Some(EnvVar {
            var: name.to_owned(),
            key: key.join("."),
            value: value.to_owned(),
        })
    }

    /// One of the [`ENV_ALIASES`].
    fn alias(name: &str, value: &str) -> Option<EnvVar> {
        let (_, key) = ENV_ALIASES.iter().find(|(alias, _)| *alias == name)?;
        Some(EnvVar {
            var: name.to_owned(),
            key: (*key).to_owned(),
            value: value.to_owned(),
        })
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_SOURCE} {}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = figment::util::nest(&self.key, Value::from(self.value.clone()))
            .into_dict()
            .unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

/// A list of durations, either as a YAML list or as one comma-separated string (the form an
/// environment variable takes: `5s,5m,30m,2h,5h`). Each item is read as `humantime_serde` reads a
/// single duration; `humantime_serde` has no comma-separated form.
fn duration_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        List(Vec<String>),
    }
    let items = match Form::deserialize(d)? {
        Form::Text(text) => text.split(',').map(str::to_owned).collect(),
        Form::List(list) => list,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn shipped_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/backend.yaml");
        let config = Config::load(&path, env(&[("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN)]))
            .expect("config/backend.yaml must be valid");
        assert_eq!(config.listen.port(), 8081);
        assert_eq!(
            config.webhooks.history_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
    }

    #[test]
    fn env_overrides_nested_fields() {
        let config = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
                ("WIZ_BACKEND__WEBHOOKS__RETRY_SCHEDULE", "1s, 2s,3s"),
                ("WIZ_BACKEND__CHANNEL__TIMELINE", "10ms,20ms,30ms"),
                ("WIZ_BACKEND__LISTEN", "127.0.0.1:9999"),
                ("WIZ_ADMIN_EMAIL", "ops@example.com"),
            ]),
        )
        .unwrap();
        assert!(config.webhooks.allow_private_targets);
        assert_eq!(
            config.webhooks.retry_schedule,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3)
            ]
        );
        assert_eq!(config.channel.timeline[2], Duration::from_millis(30));
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.admin.email, "ops@example.com");
    }

    #[test]
    fn account_limits_default_and_refuse_zero() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/backend.yaml");
        let config = Config::load(&path, env(&[("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN)])).unwrap();
        let limits = &config.account_limits;
        assert_eq!(
            (
                limits.max_api_keys,
                limits.max_webhook_endpoints,
                limits.max_pending_deliveries_per_endpoint
            ),
            (100, 20, 10_000)
        );
        let config = Config::load(
            &path,
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__ACCOUNT_LIMITS__MAX_API_KEYS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(config.account_limits.max_api_keys, 3);
        let err = Config::load(
            &path,
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__ACCOUNT_LIMITS__MAX_WEBHOOK_ENDPOINTS", "0"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("account_limits.max_webhook_endpoints"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__WEBHOOKS__RETRY_SCHEDULE", "5s,soon"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retry_schedule"), "{err}");

        let err = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__NO_SUCH_FIELD", "1"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no_such_field"), "{err}");

        let err = Config::load(Path::new("/nonexistent.yaml"), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("internal_token"), "{err}");
    }

    #[test]
    fn shipped_config_file_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/backend.yaml");
        let shipped = Config::load(&path, env(&[("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN)])).unwrap();
        let defaults = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN)]),
        )
        .unwrap();
        // The file spells out the address the first admin gets when none is configured.
        let expected = Config {
            admin: AdminConfig {
                email: "admin@wizmessage.local".into(),
                ..defaults.admin.clone()
            },
            ..defaults
        };
        assert_eq!(shipped, expected);
    }

    #[test]
    fn env_values_are_read_as_the_field_type() {
        let digits = "01234567890123456789012345678901234";
        let config = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", digits),
                ("WIZ_BACKEND__WEBHOOKS__TIMEOUT", "15s"),
                ("WIZ_BACKEND__WEBHOOKS__LEASE", "2m 30s"),
                ("WIZ_BACKEND__WEBHOOKS__MAX_IN_FLIGHT", "12"),
                ("WIZ_BACKEND__SESSION__COOKIE_SECURE", "true"),
                ("WIZ_BACKEND__ADMIN__EMAIL", "env@example.com"),
                ("WIZ_BACKEND__ADMIN__PASSWORD", "1234567890"),
                ("WIZ_ADMIN_EMAIL", "alias@example.com"),
            ]),
        )
        .unwrap();
        assert_eq!(config.internal_token, digits);
        assert_eq!(config.webhooks.timeout, Duration::from_secs(15));
        assert_eq!(config.webhooks.lease, Duration::from_secs(150));
        assert_eq!(config.webhooks.max_in_flight, 12);
        assert!(config.session.cookie_secure);
        assert_eq!(
            config.admin.email, "alias@example.com",
            "the older name wins"
        );
        assert_eq!(config.admin.password, "1234567890");

        let err = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__WEBHOOKS__TIMEOUT", "soon"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("webhooks.timeout"), "{err}");
        assert!(err.contains("WIZ_BACKEND__WEBHOOKS__TIMEOUT"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_under_its_full_key_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backend.yaml");
        std::fs::write(
            &path,
            "login_throttle:\n  capacity: 1\nwebhooks:\n  lease: 1s\n\
             channel:\n  whatsapp:\n    api_version: latest\nlisten_tls:\n  key: k.pem\n",
        )
        .unwrap();
        let err = Config::load(&path, env(&[("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN)]))
            .unwrap_err()
            .to_string();
        let problems: Vec<&str> = err.split("; ").collect();
        let expected = [
            "listen_tls.cert: must be set with listen_tls.key",
            "login_throttle.capacity: must be between 1000 and 10000000 (from config file ",
            "webhooks.lease: must be longer than webhooks.timeout (from config file ",
            "channel.whatsapp.api_version: like v23.0 (from config file ",
        ];
        assert_eq!(problems.len(), expected.len(), "{err}");
        for (problem, start) in problems.iter().zip(expected) {
            assert!(problem.starts_with(start), "{err}");
        }
    }

    #[test]
    fn checks_name_where_the_bad_value_came_from() {
        let err = Config::load(
            Path::new("/nonexistent.yaml"),
            env(&[
                ("WIZ_BACKEND__INTERNAL_TOKEN", TOKEN),
                ("WIZ_BACKEND__WEBHOOKS__LEASE", "1s"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "webhooks.lease: must be longer than webhooks.timeout \
             (from environment variable WIZ_BACKEND__WEBHOOKS__LEASE)"
        );
    }
}
