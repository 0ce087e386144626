//! Backend configuration: YAML file, then `WIZ_BACKEND__*` environment variables on top
//! (`__` between nesting levels), then validation. Library code never reads the environment:
//! `main` passes it in, so tests can hand over exactly what they want.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    providers::{Format, Serialized, Yaml},
    Figment,
};
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a console session lives without use (sliding: each use extends it).
    #[serde(with = "humantime_duration")]
    pub ttl: Duration,
    /// How long a console session lives at most after the login, however much it is used.
    #[serde(with = "humantime_duration")]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaygroundConfig {
    /// Lifetime of a Playground credential (`POST /admin/keys/{id}/playground-credential`).
    #[serde(with = "humantime_duration")]
    pub credential_ttl: Duration,
}

impl Default for PlaygroundConfig {
    fn default() -> Self {
        Self {
            credential_ttl: Duration::from_secs(600),
        }
    }
}

/// The console login throttle (`accounts::login_throttle` explains the design).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginThrottleConfig {
    /// Failed logins allowed per (email, client IP) within `window`; then 429 for that pair only.
    pub max_failures: u32,
    #[serde(with = "humantime_duration")]
    pub window: Duration,
    /// Failures of one email, across all IPs, within `window` after which its attempts are
    /// spaced `slowdown_interval` apart (slowed, never refused).
    pub email_slowdown_after: u32,
    /// Failures from one client IP (IPv6: one /64), across all emails, within `window` after
    /// which its attempts are spaced `slowdown_interval` apart (slowed, never refused).
    pub ip_slowdown_after: u32,
    #[serde(with = "humantime_duration")]
    pub slowdown_interval: Duration,
    /// The longest a slowed attempt waits for its turn; then it goes ahead.
    #[serde(with = "humantime_duration")]
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

/// Argon2 is ~19 MiB and tens of milliseconds of one core per hash: how many run at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashingConfig {
    /// Password hashes and checks running at once; 0 means one per CPU core.
    pub max_concurrent: usize,
    /// How long an attempt waits for a turn before it is refused with 503 `server_busy`.
    #[serde(with = "humantime_duration")]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Let webhook URLs reach loopback/private/link-local hosts (development and tests only);
    /// off, every special-purpose address (`webhooks::ssrf::SPECIAL`) is refused.
    pub allow_private_targets: bool,
    /// Delays after the first attempt; one retry per entry.
    #[serde(
        serialize_with = "serialize_duration_list",
        deserialize_with = "deserialize_duration_list"
    )]
    pub retry_schedule: Vec<Duration>,
    /// Whole-request timeout of one delivery attempt.
    #[serde(with = "humantime_duration")]
    pub timeout: Duration,
    #[serde(with = "humantime_duration")]
    pub connect_timeout: Duration,
    /// Deliveries in flight across all endpoints, per backend process.
    pub max_in_flight: usize,
    /// Deliveries in flight to any one endpoint.
    pub max_in_flight_per_endpoint: usize,
    /// How long the previous secret keeps signing after a rotation.
    #[serde(with = "humantime_duration")]
    pub rotation_overlap: Duration,
    /// An endpoint failing without a single success for this long is disabled.
    #[serde(with = "humantime_duration")]
    pub disable_after: Duration,
    /// How long a claimed delivery stays reserved for the backend that claimed it; if that
    /// backend dies, the delivery is attempted again after this. Longer than `timeout`.
    #[serde(with = "humantime_duration")]
    pub lease: Duration,
    /// Finished deliveries (with their attempts) and endpoint log lines older than this are
    /// deleted, so the delivery log does not grow without bound.
    #[serde(with = "humantime_duration")]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Delays of the simulated channel's `sent`, `delivered` and `read` after the send.
    #[serde(
        serialize_with = "serialize_duration_list",
        deserialize_with = "deserialize_duration_list"
    )]
    pub timeline: Vec<Duration>,
    /// Messages per second per account, like WhatsApp's per-number default.
    pub rate_per_second: u32,
    /// The WhatsApp Business Cloud API channel (accounts choose it in their channel settings).
    pub whatsapp: WhatsAppConfig,
}

/// Where and how the Cloud API channel talks to Meta's Graph API. Tests point `graph_base_url`
/// at a local fake; nothing else in the code names Meta's host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// Scheme and host of the Graph API, without a trailing slash.
    pub graph_base_url: String,
    /// Graph API version in request paths, e.g. `v23.0`.
    pub api_version: String,
    /// Whole-request timeout of one send. A send that times out after the request went out is
    /// failed (`send_outcome_unknown`), never repeated: Meta may have accepted it.
    #[serde(with = "humantime_duration")]
    pub timeout: Duration,
    #[serde(with = "humantime_duration")]
    pub connect_timeout: Duration,
    /// First pause of a phone number after Meta answered 429 / `130429`; doubles per repeated
    /// refusal (up to 5 minutes), or Meta's `Retry-After` when it says more.
    #[serde(with = "humantime_duration")]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub email: String,
    /// Empty: a password is generated and printed once on first start.
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// File (if present) → `WIZ_BACKEND__*` variables → `WIZ_ADMIN_*` → validation.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if path.exists() {
            figment = figment.merge(Yaml::file_exact(path));
        }
        let mut admin_email = None;
        let mut admin_password = None;
        let mut overrides = Vec::new();
        for (name, value) in env {
            match name.as_str() {
                "WIZ_ADMIN_EMAIL" => admin_email = Some(value),
                "WIZ_ADMIN_PASSWORD" => admin_password = Some(value),
                _ => {
                    if let Some(rest) = name.strip_prefix("WIZ_BACKEND__") {
                        let key = rest.to_ascii_lowercase().replace("__", ".");
                        overrides.push((key, value));
                    }
                }
            }
        }
        for (key, value) in overrides {
            figment = figment.merge(Serialized::global(&key, env_value(&value)));
        }
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        if let Some(email) = admin_email {
            config.admin.email = email;
        }
        if let Some(password) = admin_password {
            config.admin.password = password;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.internal_token.len() < 32 {
            return invalid(
                "internal_token",
                "must be set (WIZ_BACKEND__INTERNAL_TOKEN), at least 32 characters",
            );
        }
        if !self.secrets_key.is_empty() && self.secrets_key.len() < crate::secrets::MIN_KEY_LEN {
            return invalid(
                "secrets_key",
                "at least 32 characters (or empty: generated into secrets_key_file)",
            );
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return invalid("database_url", "must start with sqlite: or postgres://");
        }
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        if self.session.ttl < Duration::from_secs(1) {
            return invalid("session.ttl", "must be at least 1s");
        }
        if self.session.absolute_lifetime < Duration::from_secs(1) {
            return invalid("session.absolute_lifetime", "must be at least 1s");
        }
        let throttle = &self.login_throttle;
        if throttle.max_failures == 0
            || throttle.email_slowdown_after == 0
            || throttle.ip_slowdown_after == 0
        {
            return invalid(
                "login_throttle",
                "max_failures, email_slowdown_after and ip_slowdown_after must be positive",
            );
        }
        if throttle.window.is_zero() {
            return invalid("login_throttle.window", "must be positive");
        }
        if !(1_000..=10_000_000).contains(&throttle.capacity) {
            return invalid("login_throttle.capacity", "between 1000 and 10000000");
        }
        if self.password_hashing.max_concurrent > 1024 {
            return invalid(
                "password_hashing.max_concurrent",
                "at most 1024 (0: one per core)",
            );
        }
        if self.webhooks.retry_schedule.len() > 20 {
            return invalid("webhooks.retry_schedule", "at most 20 retries");
        }
        if self.webhooks.max_in_flight == 0 || self.webhooks.max_in_flight_per_endpoint == 0 {
            return invalid("webhooks.max_in_flight", "must be positive");
        }
        if self.webhooks.lease <= self.webhooks.timeout {
            return invalid("webhooks.lease", "must be longer than webhooks.timeout");
        }
        if self.webhooks.history_retention < Duration::from_secs(3600) {
            return invalid("webhooks.history_retention", "must be at least 1h");
        }
        let limits = &self.account_limits;
        for (field, value) in [
            ("account_limits.max_api_keys", limits.max_api_keys),
            (
                "account_limits.max_webhook_endpoints",
                limits.max_webhook_endpoints,
            ),
            (
                "account_limits.max_pending_deliveries_per_endpoint",
                limits.max_pending_deliveries_per_endpoint,
            ),
        ] {
            if value == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        if self.channel.timeline.len() != 3 {
            return invalid(
                "channel.timeline",
                "needs exactly three delays: sent, delivered, read",
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&self.playground.credential_ttl)
        {
            return invalid("playground.credential_ttl", "must be from 1s to 1h");
        }
        if self.channel.rate_per_second == 0 {
            return invalid("channel.rate_per_second", "must be positive");
        }
        let wa = &self.channel.whatsapp;
        let base = wa.graph_base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.ends_with('/') {
            return invalid(
                "channel.whatsapp.graph_base_url",
                "must be an http(s) URL without a trailing slash",
            );
        }
        let version_ok = wa
            .api_version
            .strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !version_ok {
            return invalid("channel.whatsapp.api_version", "like v23.0");
        }
        if wa.timeout.is_zero() || wa.connect_timeout.is_zero() {
            return invalid("channel.whatsapp.timeout", "must be positive");
        }
        if !(1024..=16 * 1024 * 1024).contains(&wa.webhook_max_body_bytes) {
            return invalid(
                "channel.whatsapp.webhook_max_body_bytes",
                "between 1024 and 16777216",
            );
        }
        if !self.admin.email.is_empty() && !self.admin.email.contains('@') {
            return invalid("admin.email", "not an email address");
        }
        match (&self.listen_tls.cert, &self.listen_tls.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                if let Err(reason) = crate::tls::server_config(Path::new(cert), Path::new(key)) {
                    return Err(ConfigError::Invalid {
                        field: "listen_tls",
                        reason,
                    });
                }
            }
            (None, Some(_)) => {
                return invalid("listen_tls.cert", "must be set with listen_tls.key")
            }
            (Some(_), None) => {
                return invalid("listen_tls.key", "must be set with listen_tls.cert")
            }
        }
        Ok(())
    }
}

/// Environment values are strings; booleans and integers are recognised so that
/// `WIZ_BACKEND__WEBHOOKS__ALLOW_PRIVATE_TARGETS=true` works as a YAML `true` would.
fn env_value(value: &str) -> serde_json::Value {
    match value {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => match value.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::String(value.to_string()),
        },
    }
}

fn describe_figment_error(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() {
                e.kind.to_string()
            } else {
                format!("{path}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Durations are written the way people say them: `15s`, `5m`, `100ms`.
mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(serde::de::Error::custom)
    }
}

fn serialize_duration_list<S: serde::Serializer>(
    list: &[Duration],
    s: S,
) -> Result<S::Ok, S::Error> {
    let text = list
        .iter()
        .map(|d| humantime::format_duration(*d).to_string())
        .collect::<Vec<_>>()
        .join(",");
    s.serialize_str(&text)
}

/// A list of durations, either as a YAML list or as one comma-separated string (the form an
/// environment variable takes: `5s,5m,30m,2h,5h`).
fn deserialize_duration_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        List(Vec<String>),
    }
    let items = match Form::deserialize(d)? {
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Form::List(list) => list,
    };
    items
        .iter()
        .map(|s| {
            humantime::parse_duration(s.trim())
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
}
