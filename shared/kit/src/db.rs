//! The service's own database: PostgreSQL for the deployed stack and the tests, SQLite
//! for the embedded demo — one code path for both.
//!
//! Services write SQL once, in PostgreSQL's style (`$1` parameters, `ON CONFLICT`), and
//! pass it through [`Db::sql`], which adapts the little that differs for SQLite. Only
//! bound parameters, never values pasted into SQL text.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{any::AnyPoolOptions, AnyPool, ConnectOptions, Executor};

/// Which SQL database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://…` / `postgresql://…`
    Postgres,
    /// `sqlite:…`
    Sqlite,
}

impl Dialect {
    /// The dialect of `url`, if it is one we speak.
    pub fn of(url: &str) -> Option<Dialect> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else {
            None
        }
    }
}

/// A pool plus the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

/// Tables every service has, created by [`Db::migrate`] before the service's own.
const KIT_TABLES: &[&str] = &[
    // The idempotency record: a message id here means its effect is already committed.
    "CREATE TABLE IF NOT EXISTS processed_messages (
        message_id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        processed_at TEXT NOT NULL)",
    // Persisted counters (duplicates ignored, dead letters): they survive restarts, so a
    // reconciliation after a crash still adds up.
    "CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL)",
    // The transactional outbox: rows written with the business change, published later.
    "CREATE TABLE IF NOT EXISTS outbox (
        seq {serial} PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        message_key TEXT NOT NULL,
        headers TEXT NOT NULL,
        payload {blob} NOT NULL,
        published_at TEXT NOT NULL,
        sent_at TEXT)",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL",
];

impl Db {
    /// Connects, creating the database (PostgreSQL) or file (SQLite) if it does not exist.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let dialect =
            Dialect::of(url).with_context(|| format!("unsupported database URL {url}"))?;
        let pool = match dialect {
            Dialect::Postgres => {
                create_postgres_database_if_missing(url).await?;
                AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await
                    .with_context(|| format!("connecting to {}", redact(url)))?
            }
            Dialect::Sqlite => {
                let url = sqlite_url(url)?;
                AnyPoolOptions::new()
                    // SQLite has one writer at a time; one connection serialises the
                    // writes in the pool instead of failing them with "database is locked".
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(60))
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            connection.execute("PRAGMA journal_mode = WAL").await?;
                            connection.execute("PRAGMA busy_timeout = 5000").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .with_context(|| format!("opening {url}"))?
            }
        };
        Ok(Db { pool, dialect })
    }

    /// The pool, for queries and transactions.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Adapts PostgreSQL-style SQL to this database: `$N` parameters become `?N` on SQLite
    /// (which would otherwise number `$N` by first appearance, not by N), and the
    /// placeholders `{serial}` and `{blob}` become the column types of the dialect.
    pub fn sql(&self, text: &str) -> String {
        match self.dialect {
            Dialect::Postgres => text
                .replace("{serial}", "BIGSERIAL")
                .replace("{blob}", "BYTEA"),
            Dialect::Sqlite => {
                let text = text
                    .replace("{serial}", "INTEGER")
                    .replace("{blob}", "BLOB");
                let mut out = String::with_capacity(text.len());
                let mut chars = text.chars().peekable();
                while let Some(character) = chars.next() {
                    if character == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                        out.push('?');
                    } else {
                        out.push(character);
                    }
                }
                out
            }
        }
    }

    /// Creates the kit's tables, then runs the service's statements in order. Every
    /// statement must be idempotent (`CREATE … IF NOT EXISTS`): migrations run at each start.
    pub async fn migrate(&self, statements: &[&str]) -> anyhow::Result<()> {
        for statement in KIT_TABLES.iter().chain(statements) {
            sqlx::query(&self.sql(statement))
                .execute(&self.pool)
                .await
                .with_context(|| format!("migration failed: {statement}"))?;
        }
        Ok(())
    }

    /// Adds `by` to the persisted counter `name`.
    pub async fn bump_counter(&self, name: &str, by: i64) -> anyhow::Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO counters (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        ))
        .bind(name)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The persisted counter `name` (0 if never bumped).
    pub async fn counter(&self, name: &str) -> anyhow::Result<i64> {
        let value: Option<i64> =
            sqlx::query_scalar(&self.sql("SELECT value FROM counters WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(value.unwrap_or(0))
    }
}

/// `sqlite://path` with `mode=rwc` (create if missing) and the parent directory created.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        anyhow::bail!("use a file for SQLite ({url}): an in-memory SQLite database vanishes with its connection");
    }
    if let Some(parent) = std::path::Path::new(path)
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(if rest.contains('?') {
        format!("sqlite://{rest}")
    } else {
        format!("sqlite://{rest}?mode=rwc")
    })
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Each service owns a database; on a fresh PostgreSQL it does not exist yet. Create it
/// through the maintenance database `postgres` so `DATABASE_URL` is all a service needs.
async fn create_postgres_database_if_missing(url: &str) -> anyhow::Result<()> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let Some(database) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut maintenance = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_optional(&mut maintenance)
        .await?;
    if exists.is_none() {
        // Identifiers cannot be bound parameters; quote it (doubling any quote inside).
        let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        if let Err(error) = sqlx::query(&statement).execute(&mut maintenance).await {
            // Another replica may have created it at the same moment.
            let raced = error
                .as_database_error()
                .and_then(|error| error.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !raced {
                return Err(error).with_context(|| format!("creating database {database}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }

    #[tokio::test]
    async fn sqlite_parameters_are_numbered_not_positional() {
        let dir =
            std::env::temp_dir().join(format!("orderflow-db-{}", uuid::Uuid::now_v7().simple()));
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display()))
            .await
            .unwrap();
        db.migrate(&["CREATE TABLE IF NOT EXISTS t (a TEXT, b TEXT)"])
            .await
            .unwrap();
        // $2 appears before $1: positional numbering would swap them.
        sqlx::query(&db.sql("INSERT INTO t (b, a) VALUES ($2, $1)"))
            .bind("first")
            .bind("second")
            .execute(db.pool())
            .await
            .unwrap();
        let a: String = sqlx::query_scalar("SELECT a FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(a, "first");
        db.bump_counter("x", 2).await.unwrap();
        db.bump_counter("x", 3).await.unwrap();
        assert_eq!(db.counter("x").await.unwrap(), 5);
        let _ = std::fs::remove_dir_all(dir);
    }
}
