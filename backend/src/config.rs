//! Backend configuration: YAML file, then `WIZ_BACKEND__*` environment variables on top
//! (`__` between nesting levels; `WIZ_ADMIN_EMAIL` / `WIZ_ADMIN_PASSWORD` last), then each
//! section checks itself, errors naming the full key path. Library code never reads the
//! environment: `main` passes it in, so tests can hand over exactly what they want.
//!
//! figment does the merging, the parsing and the bookkeeping of where each value came from; each
//! section's `check` returns its problems as `figment::Error`s too, so that one message format
//! serves both. The backend keeps no separate compiled form: its sections already hold typed
//! values (`Duration`s, a `SocketAddr`), and consumers read them under the file's names
//! (`config.webhooks.lease`).

use std::{fmt, net::SocketAddr, ops::RangeInclusive, path::Path, time::Duration};

use figment::{
    providers::{Format, Serialized, Yaml},
    value::{Dict, Map},
    Figment, Metadata, Profile, Provider, Source,
};
use serde::{Deserialize, Deserializer};

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
    /// File (if present) → `WIZ_BACKEND__*` variables → `WIZ_ADMIN_*` → checks. Every problem is
    /// reported, with the file or variable that set the refused value.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let figment = sources(path, env)?;
        let config: Config = figment.extract_lossy().map_err(ConfigError::invalid)?;
        let mut found = config.check();
        if found.is_empty() {
            return Ok(config);
        }
        for problem in &mut found {
            problem.metadata = figment.find_metadata(&problem.path.join(".")).cloned();
        }
        Err(ConfigError::invalid(found))
    }

    fn check(&self) -> Vec<Problem> {
        let mut found = Vec::new();
        if self.internal_token.len() < 32 {
            found.push(problem(
                "internal_token",
                "must be set (WIZ_BACKEND__INTERNAL_TOKEN), at least 32 characters",
            ));
        }
        if !self.secrets_key.is_empty() && self.secrets_key.len() < crate::secrets::MIN_KEY_LEN {
            found.push(problem(
                "secrets_key",
                "at least 32 characters (or empty: generated into secrets_key_file)",
            ));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            found.push(problem(
                "database_url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.max_body_bytes < 1024 {
            found.push(problem("max_body_bytes", "must be at least 1024"));
        }
        let sections = [
            within("listen_tls", self.listen_tls.check()),
            within("session", self.session.check()),
            within("login_throttle", self.login_throttle.check()),
            within("password_hashing", self.password_hashing.check()),
            within("webhooks", self.webhooks.check()),
            within("account_limits", self.account_limits.check()),
            within("channel", self.channel.check()),
            within("playground", self.playground.check()),
            within("admin", self.admin.check()),
        ];
        found.extend(sections.into_iter().flatten());
        found
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
    fn check(&self) -> Vec<Problem> {
        let found = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => crate::tls::server_config(Path::new(cert), Path::new(key))
                .err()
                .map(|reason| problem("", reason)),
            (None, Some(_)) => Some(problem("cert", "must be set with listen_tls.key")),
            (Some(_), None) => Some(problem("key", "must be set with listen_tls.cert")),
        };
        found.into_iter().collect()
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
    fn check(&self) -> Vec<Problem> {
        [
            ("ttl", self.ttl),
            ("absolute_lifetime", self.absolute_lifetime),
        ]
        .into_iter()
        .filter(|(_, value)| *value < Duration::from_secs(1))
        .map(|(field, _)| problem(field, "must be at least 1s"))
        .collect()
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
    fn check(&self) -> Vec<Problem> {
        let allowed = Duration::from_secs(1)..=Duration::from_secs(3600);
        (!allowed.contains(&self.credential_ttl))
            .then(|| problem("credential_ttl", "must be from 1s to 1h"))
            .into_iter()
            .collect()
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
    fn check(&self) -> Vec<Problem> {
        let mut found: Vec<Problem> = [
            ("max_failures", self.max_failures),
            ("email_slowdown_after", self.email_slowdown_after),
            ("ip_slowdown_after", self.ip_slowdown_after),
        ]
        .into_iter()
        .filter(|(_, value)| *value == 0)
        .map(|(field, _)| problem(field, "must be positive"))
        .collect();
        if self.window.is_zero() {
            found.push(problem("window", "must be positive"));
        }
        found.extend(between("capacity", self.capacity, 1_000..=10_000_000));
        found
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
    fn check(&self) -> Vec<Problem> {
        (self.max_concurrent > 1024)
            .then(|| problem("max_concurrent", "at most 1024 (0: one per core)"))
            .into_iter()
            .collect()
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
    fn check(&self) -> Vec<Problem> {
        let mut found = Vec::new();
        if self.retry_schedule.len() > 20 {
            found.push(problem("retry_schedule", "at most 20 retries"));
        }
        for (field, value) in [
            ("max_in_flight", self.max_in_flight),
            (
                "max_in_flight_per_endpoint",
                self.max_in_flight_per_endpoint,
            ),
        ] {
            if value == 0 {
                found.push(problem(field, "must be positive"));
            }
        }
        if self.lease <= self.timeout {
            found.push(problem("lease", "must be longer than webhooks.timeout"));
        }
        if self.history_retention < Duration::from_secs(3600) {
            found.push(problem("history_retention", "must be at least 1h"));
        }
        found
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
    fn check(&self) -> Vec<Problem> {
        [
            ("max_api_keys", self.max_api_keys),
            ("max_webhook_endpoints", self.max_webhook_endpoints),
            (
                "max_pending_deliveries_per_endpoint",
                self.max_pending_deliveries_per_endpoint,
            ),
        ]
        .into_iter()
        .filter(|(_, value)| *value == 0)
        .map(|(field, _)| problem(field, "must be at least 1"))
        .collect()
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
    fn check(&self) -> Vec<Problem> {
        let mut found = Vec::new();
        let base = self.graph_base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.ends_with('/') {
            found.push(problem(
                "graph_base_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        let version_ok = self
            .api_version
            .strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !version_ok {
            found.push(problem("api_version", "like v23.0"));
        }
        for (field, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                found.push(problem(field, "must be positive"));
            }
        }
        found.extend(between(
            "webhook_max_body_bytes",
            self.webhook_max_body_bytes,
            1024..=16 * 1024 * 1024,
        ));
        found
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
    fn check(&self) -> Vec<Problem> {
        let mut found = Vec::new();
        if self.timeline.len() != 3 {
            found.push(problem(
                "timeline",
                "needs exactly three delays: sent, delivered, read",
            ));
        }
        if self.rate_per_second == 0 {
            found.push(problem("rate_per_second", "must be positive"));
        }
        found.extend(within("whatsapp", self.whatsapp.check()));
        found
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
    fn check(&self) -> Vec<Problem> {
        (!self.email.is_empty() && !self.email.contains('@'))
            .then(|| problem("email", "not an email address"))
            .into_iter()
            .collect()
    }
}

/// A value the checks refuse, as figment reports one it cannot parse: `path` is its full key
/// path, `kind` why, and `metadata` — set by [`Config::load`] — where it came from.
type Problem = figment::Error;

/// `field` (relative to its section; `""` is the section itself) and why it is refused.
fn problem(field: &str, reason: impl Into<String>) -> Problem {
    Problem::from(reason.into()).with_path(field)
}

/// A section's problems under its name: `ttl` in `session` is `session.ttl`.
fn within(section: &str, found: Vec<Problem>) -> Vec<Problem> {
    let prefixed = |mut problem: Problem| {
        problem.path.insert(0, section.to_owned());
        problem
    };
    found.into_iter().map(prefixed).collect()
}

/// "must be between …" unless `value` lies in `range`.
fn between<T: PartialOrd + fmt::Display>(
    field: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Option<Problem> {
    let reason = format!("must be between {} and {}", range.start(), range.end());
    (!range.contains(&value)).then(|| problem(field, reason))
}

/// Why [`Config::load`] refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    /// Every problem found, each `key.path: reason (from <file or variable>)`.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// figment's errors (a chain from `extract_lossy`, or the checks' problems) as operators read
    /// them; a value with no metadata is a default, which came from nowhere to name.
    fn invalid(found: impl IntoIterator<Item = figment::Error>) -> ConfigError {
        let line = |problem: figment::Error| {
            let key = match problem.path.is_empty() {
                true => "(top level)".to_owned(),
                false => problem.path.join("."),
            };
            let from = problem.metadata.map(|m| match m.source {
                Some(Source::File(path)) => format!(" (from config file {})", path.display()),
                _ => format!(" (from {})", m.name),
            });
            format!("{key}: {}{}", problem.kind, from.unwrap_or_default())
        };
        ConfigError::Invalid(found.into_iter().map(line).collect())
    }
}

/// The file, when there is one, then the variables, the aliases last so that they win.
fn sources(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    // Tried here first, so that a missing file means "all defaults" and an unreadable one is a
    // `Read` error, not a problem of its (absent) values; figment reads it again, as the source
    // its metadata names.
    let figment = match std::fs::read(path) {
        Ok(_) => Figment::from(Yaml::file_exact(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Figment::new(),
        Err(e) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut vars: Vec<EnvVar> = env.into_iter().filter_map(EnvVar::captured).collect();
    vars.sort_by_key(|var| ENV_ALIASES.iter().any(|(alias, _)| *alias == var.name));
    Ok(vars.into_iter().fold(figment, Figment::merge))
}

/// One captured variable as a figment provider: `WIZ_BACKEND__A__B` under the key figment's
/// `Env::prefixed(ENV_PREFIX).split("__")` gives it (`a.b`), or one of the [`ENV_ALIASES`]. Not
/// `Env` itself, which (0.10) reads the process environment — library code does not: `main`
/// hands the variables over, and so do tests — and parses values on its own (`1234` a number,
/// `"x"` unquoted), so a digits-only password would be refused as a string. Here the value stays
/// a string that `extract_lossy` reads as the field's type (`true`, `8`, `15s`, `5s,5m`), and
/// each variable is its own provider, so that its metadata names it.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn captured((name, value): (String, String)) -> Option<EnvVar> {
        let key = match name.strip_prefix(ENV_PREFIX) {
            Some(rest) => rest.replace("__", ".").to_ascii_lowercase(),
            None => ENV_ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)?
                .1
                .to_owned(),
        };
        // Like `Env`, skip a name with an empty level (`WIZ_BACKEND__A____B`).
        let levels_named = key.split('.').all(|level| !level.is_empty());
        levels_named.then_some(EnvVar { name, key, value })
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
