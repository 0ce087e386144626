//! The database handle. One pool type for both engines (sqlx's `Any` driver): SQLite by
//! default, PostgreSQL by config alone. SQL is therefore written to run on both:
//! `$1` placeholders, BIGINT unix-millisecond timestamps, TEXT JSON, `ON CONFLICT ... DO UPDATE`,
//! `RETURNING`, and explicit `CAST(... AS BIGINT)` around aggregates (PostgreSQL's SUM is NUMERIC,
//! which the Any driver cannot decode).

use std::{fmt::Write as _, path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    any::{AnyArguments, AnyConnectOptions, AnyPoolOptions},
    Any, AnyConnection, AnyPool, Arguments, ConnectOptions, Executor,
};

pub type Db = AnyPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn of(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            Engine::Postgres
        }
    }
}

/// A JSON document in a TEXT column, for row types (`#[derive(sqlx::FromRow)]`). The Any driver
/// has no JSON type, so sqlx's own `Json<T>` (and with it `#[sqlx(json)]`) cannot decode there;
/// this reads the column as text on either engine and parses it, a malformed document failing
/// as that column's decode error.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText<T>(pub T);

impl<T> sqlx::Type<sqlx::Any> for JsonText<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned> sqlx::Decode<'r, sqlx::Any> for JsonText<T> {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(text)?))
    }
}

/// `sqlx::QueryBuilder` for this pool: the same `push` / `push_bind` / `separated` /
/// `push_values` shape, numbering placeholders `$1, $2, ...`. sqlx's own `QueryBuilder<Any>`
/// writes `?` (AnyArguments keeps the default `format_placeholder`), which PostgreSQL rejects
/// (launchbadge/sqlx#3000, open as of 0.8.6); `$n` is what every statement here is written
/// with, and SQLite accepts it too.
pub struct QueryBuilder<'args> {
    sql: String,
    arguments: AnyArguments<'args>,
}

impl<'args> QueryBuilder<'args> {
    pub fn new(init: impl Into<String>) -> Self {
        Self {
            sql: init.into(),
            arguments: AnyArguments::default(),
        }
    }

    /// Appends SQL as is; never put a value here, bind it.
    pub fn push(&mut self, sql: impl std::fmt::Display) -> &mut Self {
        write!(self.sql, "{sql}").expect("writing to a String cannot fail");
        self
    }

    /// Appends the next placeholder and binds `value` to it.
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'args + sqlx::Encode<'args, Any> + sqlx::Type<Any>,
    {
        self.arguments
            .add(value)
            .expect("the Any driver encodes every type it has");
        write!(self.sql, "${}", self.arguments.len()).expect("writing to a String cannot fail");
        self
    }

    /// A list whose items are separated by `separator` (`IN (...)` lists, a row's columns).
    pub fn separated<'qb>(&'qb mut self, separator: &'static str) -> Separated<'qb, 'args> {
        Separated {
            builder: self,
            separator,
            first: true,
        }
    }

    /// `VALUES (..), (..)` for a multi-row INSERT; `push_row` adds one row's columns.
    pub fn push_values<I, F>(&mut self, rows: I, mut push_row: F) -> &mut Self
    where
        I: IntoIterator,
        F: FnMut(Separated<'_, 'args>, I::Item),
    {
        self.push("VALUES ");
        for (i, row) in rows.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            push_row(self.separated(", "), row);
            self.push(")");
        }
        self
    }

    /// The statement so far, for `execute` / `fetch_*`.
    pub fn build(&mut self) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        sqlx::query_with(&self.sql, std::mem::take(&mut self.arguments))
    }

    /// The same, each row read as `O`.
    pub fn build_query_as<O>(&mut self) -> sqlx::query::QueryAs<'_, Any, O, AnyArguments<'_>>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_as_with(&self.sql, std::mem::take(&mut self.arguments))
    }

    /// The SQL text so far.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// Items of a list, separated (see [`QueryBuilder::separated`]).
pub struct Separated<'qb, 'args> {
    builder: &'qb mut QueryBuilder<'args>,
    separator: &'static str,
    first: bool,
}

impl<'args> Separated<'_, 'args> {
    fn separate(&mut self) {
        if !self.first {
            self.builder.push(self.separator);
        }
        self.first = false;
    }

    /// An item of constant SQL (`'pending'`).
    pub fn push(&mut self, sql: impl std::fmt::Display) -> &mut Self {
        self.separate();
        self.builder.push(sql);
        self
    }

    /// An item bound to `value`.
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'args + sqlx::Encode<'args, Any> + sqlx::Type<Any>,
    {
        self.separate();
        self.builder.push_bind(value);
        self
    }

    /// SQL that is not an item (the list's closing parenthesis).
    pub fn push_unseparated(&mut self, sql: impl std::fmt::Display) -> &mut Self {
        self.builder.push(sql);
        self
    }
}

/// A checked page request of a list: `limit` rows after the id `cursor` (the first page if
/// `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub cursor: Option<String>,
}

/// Keyset pages: a list reads `limit + 1` rows (`page_rows`) so that it knows whether another
/// page follows; `into_page` keeps `limit` of them and names the last kept id as the next
/// cursor when rows were left over.
pub fn page_rows(limit: i64) -> i64 {
    limit + 1
}

pub fn into_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(|r| id(r).to_owned());
        (rows, next)
    } else {
        (rows, None)
    }
}

/// The locking clause a background job's claim SELECT ends with. On PostgreSQL,
/// `FOR UPDATE SKIP LOCKED`: several backends claiming at once each lock rows nobody else holds
/// and never wait for one another on them, so two claim transactions cannot deadlock on their
/// rows, and a crashed claimer's locks vanish with its connection. On SQLite nothing: its one
/// connection runs one transaction at a time.
pub fn skip_locked(conn: &AnyConnection) -> &'static str {
    if conn.backend_name() == "PostgreSQL" {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    }
}

/// Creates the SQLite file (and its directory, 0700) before SQLite does, so that it is 0600
/// from its first byte; SQLite gives its `-wal` and `-shm` files the database file's mode.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::secrets::private_dir(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Opens the pool (creating a SQLite file and its directory if needed) and applies migrations.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    sqlx::any::install_default_drivers();
    let engine = Engine::of(url);
    let url = match engine {
        Engine::Sqlite => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if !path.is_empty() && path != ":memory:" {
                create_private_file(Path::new(path))?;
            }
            if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            }
        }
        Engine::Postgres => url.to_string(),
    };
    let options = AnyConnectOptions::from_str(&url)
        .context("parsing database_url")?
        .disable_statement_logging();
    let pool = match engine {
        // SQLite has one writer. A single connection serialises every statement in-process,
        // which is what SQLite would do anyway, and rules out the "database is locked" errors
        // that several connections upgrading read transactions to write would otherwise hit.
        // Consequence for callers: inside a transaction use the transaction, never the pool.
        Engine::Sqlite => AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("opening SQLite database")?,
        Engine::Postgres => AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")?,
    };
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

#[cfg(test)]
mod query_builder_tests {
    use super::QueryBuilder;

    #[test]
    fn placeholders_are_numbered_in_bind_order() {
        let mut q = QueryBuilder::new("INSERT INTO t (a, b, c) ");
        q.push_values([("x", 1_i64), ("y", 2)], |mut row, (a, b)| {
            row.push_bind(a).push_bind(b).push("'pending'");
        });
        q.push(" WHERE id NOT IN (");
        q.separated(", ")
            .push_bind("p")
            .push_bind("q")
            .push_unseparated(")");
        assert_eq!(
            q.sql(),
            "INSERT INTO t (a, b, c) VALUES ($1, $2, 'pending'), ($3, $4, 'pending') \
             WHERE id NOT IN ($5, $6)"
        );
    }
}

#[cfg(test)]
mod paging_tests {
    use super::{into_page, page_rows};

    #[test]
    fn a_page_keeps_limit_rows_and_names_the_next_cursor_only_when_more_follow() {
        let ids = |n: usize| (0..n).map(|i| format!("id_{i}")).collect::<Vec<_>>();
        assert_eq!(page_rows(50), 51);
        let (rows, next) = into_page(ids(3), 2, |s| s);
        assert_eq!((rows.len(), next.as_deref()), (2, Some("id_1")));
        let (rows, next) = into_page(ids(2), 2, |s| s);
        assert_eq!((rows.len(), next), (2, None));
        let (rows, next) = into_page(ids(0), 2, |s| s);
        assert_eq!((rows.len(), next), (0, None));
    }
}
