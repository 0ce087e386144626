//! Accounts (tenants), their plans and their console users. Ops manage accounts from the command
//! line (`cli.rs`); the first start creates a demo account (`bootstrap`).

pub mod bounds;
pub mod login_throttle;

use std::{fmt, str::FromStr};

use anyhow::{bail, Context};
use rand::{distributions::Alphanumeric, rngs::OsRng, Rng};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::{auth::password, clock::now_ms, ids::new_id, keys, state::AppState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    WizBot,
    WizPro,
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Free, Plan::WizBot, Plan::WizPro];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::WizBot => "wiz_bot",
            Plan::WizPro => "wiz_pro",
        }
    }

    /// Only paid plans may use the API (SPEC §3).
    pub fn allows_api(self) -> bool {
        !matches!(self, Plan::Free)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that width and alignment (`{:<8}`) apply, as in `accounts list`.
        f.pad(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown plan {s:?}: one of free, wiz_bot, wiz_pro"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    #[serde(skip)]
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    #[serde(skip)]
    pub account_id: String,
}

/// Emails are compared case-insensitively: stored trimmed and lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A row of `accounts`, as stored; `Account` is it with the plan parsed.
#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    name: String,
    plan: String,
    created_at: i64,
}

impl TryFrom<AccountRow> for Account {
    type Error = sqlx::Error;

    fn try_from(row: AccountRow) -> Result<Self, Self::Error> {
        let plan = row
            .plan
            .parse()
            .map_err(|e: String| sqlx::Error::ColumnDecode {
                index: "plan".into(),
                source: e.into(),
            })?;
        Ok(Account {
            id: row.id,
            name: row.name,
            plan,
            created_at: row.created_at,
        })
    }
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as::<_, AccountRow>("SELECT id, name, plan, created_at FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(Account::try_from)
        .transpose()
}

pub async fn list(conn: &mut AnyConnection) -> Result<Vec<Account>, sqlx::Error> {
    sqlx::query_as::<_, AccountRow>("SELECT id, name, plan, created_at FROM accounts ORDER BY id")
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(Account::try_from)
        .collect()
}

pub async fn get_user(conn: &mut AnyConnection, id: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, account_id FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Creates an account and its first admin user (on the caller's transaction).
pub async fn create(
    conn: &mut AnyConnection,
    passwords: &password::Hasher,
    name: &str,
    plan: Plan,
    admin_email: &str,
    admin_password: &str,
) -> anyhow::Result<(Account, User)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        bail!("account name: 1 to 200 characters");
    }
    let email = normalize_email(admin_email);
    if !email.contains('@') || email.len() > 254 {
        bail!("admin email {email:?} is not an email address");
    }
    if admin_password.is_empty() {
        bail!("admin password must not be empty");
    }
    if admin_password.len() > password::MAX_PASSWORD_BYTES {
        bail!(
            "admin password: at most {} bytes",
            password::MAX_PASSWORD_BYTES
        );
    }
    let taken: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        bail!("a user with email {email} already exists");
    }
    let now = now_ms();
    let account = Account {
        id: new_id("acc"),
        name: name.to_string(),
        plan,
        created_at: now,
    };
    sqlx::query("INSERT INTO accounts (id, name, plan, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&account.id)
        .bind(&account.name)
        .bind(plan.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let user = User {
        id: new_id("usr"),
        email,
        account_id: account.id.clone(),
    };
    let hash = passwords.hash(admin_password).await?;
    sqlx::query(
        "INSERT INTO users (id, account_id, email, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&user.id)
    .bind(&account.id)
    .bind(&user.email)
    .bind(hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // Every account starts with the example templates and demo flow, in its creating transaction.
    crate::examples::seed(conn, &account.id).await?;
    Ok((account, user))
}

/// Changes an account's plan and gives every key of the account a new version, so gateways
/// pick up the plan with their next sync. Returns that version (`None`: no such account).
pub async fn set_plan(
    conn: &mut AnyConnection,
    id: &str,
    plan: Plan,
) -> Result<Option<i64>, sqlx::Error> {
    let updated = sqlx::query("UPDATE accounts SET plan = $1 WHERE id = $2")
        .bind(plan.as_str())
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    let version = keys::store::next_version(conn).await?;
    sqlx::query("UPDATE api_keys SET version = $1 WHERE account_id = $2")
        .bind(version)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(version))
}

/// A password for humans to copy: 24 base62 characters from the OS CSPRNG (~143 bits).
pub fn generate_password() -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

const DEFAULT_ADMIN_EMAIL: &str = "admin@wizmessage.local";

/// On first start (no account yet) creates the demo account on `wiz_pro` and its admin user
/// from `config.admin`. A generated password is printed once to stdout, never logged.
pub async fn bootstrap(state: &AppState) -> anyhow::Result<()> {
    let mut tx = state.db.begin().await?;
    // The marker row makes this happen once even when several backends start together on one
    // PostgreSQL database: the second insert waits for the first to commit, then does nothing.
    let first = sqlx::query(
        "INSERT INTO counters (name, value) VALUES ('bootstrapped', 1) ON CONFLICT (name) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let accounts: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM accounts")
        .fetch_one(&mut *tx)
        .await?;
    if !first || accounts > 0 {
        tx.commit().await?;
        return Ok(());
    }
    let admin = &state.config.admin;
    let email = if admin.email.trim().is_empty() {
        DEFAULT_ADMIN_EMAIL.to_string()
    } else {
        normalize_email(&admin.email)
    };
    let (password, generated) = if admin.password.is_empty() {
        (generate_password(), true)
    } else {
        (admin.password.clone(), false)
    };
    let (account, user) = create(
        &mut tx,
        &state.passwords,
        "Demo",
        Plan::WizPro,
        &email,
        &password,
    )
    .await
    .context("creating the demo account")?;
    tx.commit().await?;
    tracing::info!(account_id = %account.id, email = %user.email, "created demo account and its admin user");
    println!("admin email: {}", user.email);
    if generated {
        println!("admin password (shown once): {password}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse() {
        assert_eq!("wiz_bot".parse::<Plan>().unwrap(), Plan::WizBot);
        assert!("gold".parse::<Plan>().is_err());
        assert!(!Plan::Free.allows_api());
        assert_eq!(serde_json::to_string(&Plan::WizPro).unwrap(), "\"wiz_pro\"");
    }

    #[tokio::test]
    async fn bootstrap_creates_the_demo_account_once() {
        let app = crate::testing::TestApp::new().await;
        bootstrap(&app.state).await.unwrap();
        let mut conn = app.state.db.acquire().await.unwrap();
        let all = list(&mut conn).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].name.as_str(), all[0].plan), ("Demo", Plan::WizPro));
        let hash: (String,) = sqlx::query_as("SELECT password_hash FROM users WHERE email = $1")
            .bind(crate::testing::DEMO_EMAIL)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(hash.0.starts_with("$argon2id$"));
    }

    #[tokio::test]
    async fn create_refuses_a_taken_email() {
        let app = crate::testing::TestApp::new().await;
        let mut tx = app.state.db.begin().await.unwrap();
        let err = create(
            &mut tx,
            &app.state.passwords,
            "X",
            Plan::Free,
            "ADMIN@demo.test",
            "password-x",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(create(
            &mut tx,
            &app.state.passwords,
            "X",
            Plan::Free,
            "not-an-email",
            "pw"
        )
        .await
        .is_err());
        assert_eq!(
            set_plan(&mut tx, "acc_nope", Plan::Free).await.unwrap(),
            None
        );
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate_password();
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }
}
