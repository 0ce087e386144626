//! Per-account channel settings: `simulated` (the default, no row) or `whatsapp_cloud` with the
//! Cloud API identifiers and credentials. The access token and the app secret are sealed with the
//! backend's secrets key before they reach the database, opened only to call Meta or to check a
//! callback's signature, and never shown again: the admin API answers them masked.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::{clock::rfc3339, refusal::Refusal, secrets::Secrets};

/// What can go wrong with an account's channel settings; the HTTP edge answers it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A field fails its check (`invalid_channel_settings`).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A stored credential does not open with this backend's secrets key: a fault, not the
    /// customer's mistake.
    #[error("a stored channel credential does not open: {0}")]
    Unsealed(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The built-in simulated WhatsApp channel (SPEC §7 sandbox numbers).
    Simulated,
    /// Meta's WhatsApp Business Cloud API.
    WhatsappCloud,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Simulated => "simulated",
            ChannelKind::WhatsappCloud => "whatsapp_cloud",
        }
    }

    fn parse(s: &str) -> ChannelKind {
        match s {
            "whatsapp_cloud" => ChannelKind::WhatsappCloud,
            _ => ChannelKind::Simulated,
        }
    }

    /// The name stored on each message (`messages.channel`): which channel sends it.
    pub fn message_channel(self) -> &'static str {
        match self {
            ChannelKind::Simulated => super::simulated::NAME,
            ChannelKind::WhatsappCloud => super::cloud::NAME,
        }
    }
}

/// The stored name; anything unknown reads as the simulated channel, as it always has.
impl From<String> for ChannelKind {
    fn from(stored: String) -> Self {
        ChannelKind::parse(&stored)
    }
}

/// The stored row, secrets still sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct Stored {
    #[sqlx(try_from = "String")]
    pub kind: ChannelKind,
    pub phone_number_id: Option<String>,
    pub waba_id: Option<String>,
    access_token: Option<String>,
    pub access_token_last4: Option<String>,
    app_secret: Option<String>,
    pub verify_token: Option<String>,
    pub updated_at: i64,
}

/// What the Cloud API channel needs to act for an account, secrets opened.
#[derive(Clone)]
pub struct CloudSettings {
    pub account_id: String,
    pub phone_number_id: String,
    pub waba_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
}

// Hand-written so that no `{:?}` anywhere can print a credential.
impl fmt::Debug for CloudSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudSettings")
            .field("account_id", &self.account_id)
            .field("phone_number_id", &self.phone_number_id)
            .field("waba_id", &self.waba_id)
            .field("access_token", &"<redacted>")
            .field("app_secret", &"<redacted>")
            .finish()
    }
}

impl Stored {
    /// The Cloud API settings, if the account has complete ones (whatever `kind` says: callbacks
    /// for messages sent before a switch back to `simulated` still verify).
    pub fn cloud(
        &self,
        account_id: &str,
        secrets: &Secrets,
    ) -> Result<Option<CloudSettings>, SettingsError> {
        let (Some(phone), Some(waba), Some(token), Some(secret)) = (
            &self.phone_number_id,
            &self.waba_id,
            &self.access_token,
            &self.app_secret,
        ) else {
            return Ok(None);
        };
        let open = |sealed: &str| {
            secrets
                .decrypt_str(sealed)
                .map_err(|e| SettingsError::Unsealed(e.to_string()))
        };
        Ok(Some(CloudSettings {
            account_id: account_id.to_string(),
            phone_number_id: phone.clone(),
            waba_id: waba.clone(),
            access_token: open(token)?,
            app_secret: open(secret)?,
            verify_token: self.verify_token.clone().unwrap_or_default(),
        }))
    }
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as::<_, Stored>(
        "SELECT kind, phone_number_id, waba_id, access_token, access_token_last4, app_secret, \
         verify_token, updated_at FROM channel_settings WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(conn)
    .await
}

/// The channel an account's new outbound messages go through.
pub async fn kind(conn: &mut AnyConnection, account_id: &str) -> Result<ChannelKind, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT kind FROM channel_settings WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map_or(ChannelKind::Simulated, |(k,)| ChannelKind::parse(&k)))
}

/// `PUT /admin/channel`: the whole configuration; secrets left out keep their stored value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub kind: ChannelKind,
    /// The business phone number's id in Meta's WhatsApp Manager (digits).
    #[schema(example = "106540352242922")]
    pub phone_number_id: Option<String>,
    /// The WhatsApp Business account id (digits).
    #[schema(example = "102290129340398")]
    pub waba_id: Option<String>,
    /// A system-user access token with `whatsapp_business_messaging`. Write-only.
    pub access_token: Option<String>,
    /// The Meta app's secret, which signs webhook callbacks. Write-only.
    pub app_secret: Option<String>,
    /// The token Meta echoes in the webhook verification handshake; generated when absent.
    pub verify_token: Option<String>,
}

// Never derive Debug on the input: it holds credentials in the clear.
impl fmt::Debug for ChannelInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelInput")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The settings as the admin API shows them: credentials masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub kind: ChannelKind,
    pub phone_number_id: Option<String>,
    pub waba_id: Option<String>,
    /// `••••` and the token's last four characters; `null` when none is stored.
    #[schema(example = "••••Zx9Q")]
    pub access_token: Option<String>,
    /// `••••••••` when stored, else `null`: the secret is never shown.
    pub app_secret: Option<String>,
    /// The token to enter in Meta's webhook settings beside the callback URL.
    pub verify_token: Option<String>,
    /// The callback path to give Meta, on the gateway's public address.
    #[schema(example = "/channels/whatsapp/webhook/acc_01jd7k2v8m3q4r5s6t7u8v9w0x")]
    pub webhook_path: String,
    /// RFC 3339; `null` until the settings were first saved.
    pub updated_at: Option<String>,
}

pub const WEBHOOK_ROOT: &str = "/channels/whatsapp/webhook";

pub fn view(account_id: &str, stored: Option<&Stored>) -> ChannelView {
    ChannelView {
        kind: stored.map_or(ChannelKind::Simulated, |s| s.kind),
        phone_number_id: stored.and_then(|s| s.phone_number_id.clone()),
        waba_id: stored.and_then(|s| s.waba_id.clone()),
        access_token: stored.filter(|s| s.access_token.is_some()).map(|s| {
            format!(
                "••••{}",
                s.access_token_last4.as_deref().unwrap_or_default()
            )
        }),
        app_secret: stored
            .filter(|s| s.app_secret.is_some())
            .map(|_| "••••••••".to_string()),
        verify_token: stored.and_then(|s| s.verify_token.clone()),
        webhook_path: format!("{WEBHOOK_ROOT}/{account_id}"),
        updated_at: stored.map(|s| rfc3339(s.updated_at)),
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::unacceptable(code, message)
}

/// Meta's ids are decimal numbers.
fn check_id(field: &str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "invalid_channel_settings",
            format!("{field}: 1 to 32 digits, as shown in Meta's WhatsApp Manager"),
        ));
    }
    Ok(())
}

/// A credential: printable ASCII without spaces (it goes into an HTTP header or an HMAC key).
fn check_credential(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    if value.len() < 8 || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "invalid_channel_settings",
            format!("{field}: 8 to {max} printable characters without spaces"),
        ));
    }
    Ok(())
}

fn generate_verify_token() -> String {
    use rand::{distributions::Alphanumeric, Rng};
    let tail: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("wzv_{tail}")
}

/// Validates `input` against what is stored and writes the row (secrets sealed).
pub async fn save(
    conn: &mut AnyConnection,
    secrets: &Secrets,
    account_id: &str,
    input: ChannelInput,
    now: i64,
) -> Result<Stored, SettingsError> {
    let current = get(conn, account_id).await?;
    for (field, value) in [
        ("phone_number_id", &input.phone_number_id),
        ("waba_id", &input.waba_id),
    ] {
        if let Some(v) = value {
            check_id(field, v)?;
        }
    }
    if let Some(token) = &input.access_token {
        check_credential("access_token", token, 4096)?;
    }
    if let Some(secret) = &input.app_secret {
        check_credential("app_secret", secret, 256)?;
    }
    if let Some(token) = &input.verify_token {
        check_credential("verify_token", token, 128)?;
    }
    let keep = |new: &Option<String>, old: Option<&String>| new.clone().or_else(|| old.cloned());
    let phone_number_id = keep(
        &input.phone_number_id,
        current.as_ref().and_then(|c| c.phone_number_id.as_ref()),
    );
    let waba_id = keep(
        &input.waba_id,
        current.as_ref().and_then(|c| c.waba_id.as_ref()),
    );
    let (access_token, access_token_last4) = match &input.access_token {
        Some(token) => (
            Some(secrets.encrypt_str(token)),
            Some(token[token.len() - 4..].to_string()),
        ),
        None => (
            current.as_ref().and_then(|c| c.access_token.clone()),
            current.as_ref().and_then(|c| c.access_token_last4.clone()),
        ),
    };
    let app_secret = match &input.app_secret {
        Some(secret) => Some(secrets.encrypt_str(secret)),
        None => current.as_ref().and_then(|c| c.app_secret.clone()),
    };
    let verify_token = input
        .verify_token
        .clone()
        .or_else(|| current.as_ref().and_then(|c| c.verify_token.clone()))
        .unwrap_or_else(generate_verify_token);
    if input.kind == ChannelKind::WhatsappCloud {
        let missing: Vec<&str> = [
            ("phone_number_id", phone_number_id.is_some()),
            ("waba_id", waba_id.is_some()),
            ("access_token", access_token.is_some()),
            ("app_secret", app_secret.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(invalid(
                "invalid_channel_settings",
                format!("whatsapp_cloud needs {}", missing.join(", ")),
            )
            .into());
        }
    }
    let stored = Stored {
        kind: input.kind,
        phone_number_id,
        waba_id,
        access_token,
        access_token_last4,
        app_secret,
        verify_token: Some(verify_token),
        updated_at: now,
    };
    let updated = sqlx::query(
        "UPDATE channel_settings SET kind = $1, phone_number_id = $2, waba_id = $3, \
         access_token = $4, access_token_last4 = $5, app_secret = $6, verify_token = $7, \
         updated_at = $8 WHERE account_id = $9",
    )
    .bind(stored.kind.as_str())
    .bind(&stored.phone_number_id)
    .bind(&stored.waba_id)
    .bind(&stored.access_token)
    .bind(&stored.access_token_last4)
    .bind(&stored.app_secret)
    .bind(&stored.verify_token)
    .bind(now)
    .bind(account_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        sqlx::query(
            "INSERT INTO channel_settings (account_id, kind, phone_number_id, waba_id, \
             access_token, access_token_last4, app_secret, verify_token, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(account_id)
        .bind(stored.kind.as_str())
        .bind(&stored.phone_number_id)
        .bind(&stored.waba_id)
        .bind(&stored.access_token)
        .bind(&stored.access_token_last4)
        .bind(&stored.app_secret)
        .bind(&stored.verify_token)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(stored)
}
