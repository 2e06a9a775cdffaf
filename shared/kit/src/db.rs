//! The service's own database: PostgreSQL for the deployed stack and the tests, SQLite
//! for the embedded demo — one code path for both.
//!
//! Services write queries once, in PostgreSQL's style (`$1` parameters, `ON CONFLICT`),
//! and pass them through [`Db::sql`], which adapts the little that differs for SQLite. Only
//! bound parameters, never values pasted into SQL text.
//!
//! ## Migrations: one folder per database
//!
//! The schema is `sqlx::migrate!` files, and here the two databases do differ: an
//! auto-numbered key is `BIGSERIAL` on PostgreSQL and `INTEGER PRIMARY KEY` (the rowid) on
//! SQLite, bytes are `BYTEA` or `BLOB`, and no spelling is accepted by both. Static files
//! cannot be rewritten per dialect the way queries are, so every crate with tables keeps
//! two folders with the same file names, compiled into its binary:
//!
//! ```text
//! migrations/postgres/0100_orders.sql      the deployed stack, the tests
//! migrations/sqlite/0100_orders.sql        the embedded demo, the tests
//! ```
//!
//! The pairs differ only in those column types; every service test runs on both
//! databases (`orderflow_kit::on_every_store!`), so both folders are applied on every test
//! run. [`Db::migrate`] runs the kit's own tables (versions below 100:
//! `shared/kit/migrations/`) and the service's (from 100) as one ordered set, so sqlx's
//! bookkeeping table `_sqlx_migrations` checks all of them: a migration edited after it
//! ran, or one missing from the binary, stops the start with an error naming its version.
//!
//! Migrations run at every start. Applied versions are skipped; on PostgreSQL the
//! migrator holds an advisory lock (`pg_advisory_lock`, taken through the `Any` driver
//! too) for the whole run, so two replicas starting at once apply each file once — the
//! second waits, then finds everything applied. SQLite has a single writer anyway.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use futures::future::BoxFuture;
use sqlx::{
    any::AnyPoolOptions,
    error::BoxDynError,
    migrate::{Migration, MigrationSource, Migrator},
    AnyPool, ConnectOptions, Executor,
};

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

/// One crate's schema, written for each database (see the module doc):
///
/// ```text
/// pub static MIGRATIONS: Migrations = Migrations {
///     postgres: sqlx::migrate!("./migrations/postgres"),
///     sqlite: sqlx::migrate!("./migrations/sqlite"),
/// };
/// ```
#[derive(Debug)]
pub struct Migrations {
    /// `migrations/postgres`.
    pub postgres: Migrator,
    /// `migrations/sqlite`.
    pub sqlite: Migrator,
}

impl Migrations {
    /// Refuses a schema whose two folders list different migrations (a file added to
    /// one only): the databases would drift apart, so every start — and every test, on
    /// either database — fails, naming the versions.
    fn check_in_step(&self) -> anyhow::Result<()> {
        let versions = |migrator: &Migrator| -> Vec<(i64, String)> {
            migrator
                .iter()
                .map(|migration| (migration.version, migration.description.to_string()))
                .collect()
        };
        let (postgres, sqlite) = (versions(&self.postgres), versions(&self.sqlite));
        if postgres != sqlite {
            anyhow::bail!(
                "migrations/postgres and migrations/sqlite must hold the same files: {postgres:?} vs {sqlite:?}"
            );
        }
        Ok(())
    }

    fn for_dialect(&self, dialect: Dialect) -> &Migrator {
        match dialect {
            Dialect::Postgres => &self.postgres,
            Dialect::Sqlite => &self.sqlite,
        }
    }
}

/// The tables every service has (idempotency record, counters, outbox), versions below
/// 100, applied by [`Db::migrate`] with the service's own.
static KIT_MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// The kit's and a service's migrations as one set for sqlx's [`Migrator::new`]: a
/// public way to build a migrator from migrations already compiled in.
#[derive(Debug)]
struct Combined(Vec<Migration>);

impl<'s> MigrationSource<'s> for Combined {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

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

    /// Adapts a PostgreSQL-style query to this database: `$N` parameters become `?N` on
    /// SQLite (which would otherwise number `$N` by first appearance, not by N).
    pub fn sql(&self, text: &str) -> String {
        match self.dialect {
            Dialect::Postgres => text.to_owned(),
            Dialect::Sqlite => {
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

    /// Applies the kit's migrations and `service`'s (those for this database) that have
    /// not run yet. Safe at every start and from several replicas at once (module doc).
    pub async fn migrate(&self, service: &Migrations) -> anyhow::Result<()> {
        self.migrate_with(Some(service)).await
    }

    async fn migrate_with(&self, service: Option<&Migrations>) -> anyhow::Result<()> {
        let mut migrations: Vec<Migration> = KIT_MIGRATIONS
            .for_dialect(self.dialect)
            .iter()
            .cloned()
            .collect();
        if let Some(service) = service {
            service.check_in_step()?;
            migrations.extend(service.for_dialect(self.dialect).iter().cloned());
        }
        migrations.sort_by_key(|migration| migration.version);
        if let Some(twice) = migrations
            .windows(2)
            .find(|pair| pair[0].version == pair[1].version)
        {
            anyhow::bail!(
                "migration version {} is used twice ({:?} and {:?}): the kit's are below 100, a service's from 100",
                twice[0].version,
                twice[0].description,
                twice[1].description
            );
        }
        let migrator = Migrator::new(Combined(migrations))
            .await
            .context("preparing the migrations")?;
        migrator
            .run(&self.pool)
            .await
            .context("migrating the database")?;
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

    #[test]
    fn the_kits_two_migration_folders_are_in_step() {
        KIT_MIGRATIONS.check_in_step().unwrap();
        assert!(KIT_MIGRATIONS
            .sqlite
            .iter()
            .all(|migration| migration.version < 100));
    }

    #[tokio::test]
    async fn a_migration_in_one_folder_only_is_refused() {
        let migration = |version: i64, description: &'static str| {
            Migration::new(
                version,
                description.into(),
                sqlx::migrate::MigrationType::Simple,
                "SELECT 1".into(),
                false,
            )
        };
        let postgres = Migrator::new(Combined(vec![
            migration(100, "orders"),
            migration(101, "refunds"),
        ]))
        .await
        .unwrap();
        let sqlite = Migrator::new(Combined(vec![migration(100, "orders")]))
            .await
            .unwrap();
        let error = Migrations { postgres, sqlite }.check_in_step().unwrap_err();
        assert!(error.to_string().contains("refunds"), "{error}");
    }

    #[tokio::test]
    async fn sqlite_parameters_are_numbered_not_positional() {
        let dir =
            std::env::temp_dir().join(format!("orderflow-db-{}", uuid::Uuid::now_v7().simple()));
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display()))
            .await
            .unwrap();
        db.migrate_with(None).await.unwrap();
        sqlx::query("CREATE TABLE t (a TEXT, b TEXT)")
            .execute(db.pool())
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

    /// Two replicas starting at once on one fresh PostgreSQL database, then a restart:
    /// every start succeeds and each migration is recorded once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_tolerate_concurrent_starts_and_restarts_on_postgres() {
        let Some(server) = crate::testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL") else {
            return;
        };
        let name = format!("orderflow_kit_migrate_{}", uuid::Uuid::now_v7().simple());
        let url = with_database(&server, &name);
        let (first, second) = tokio::join!(
            async { Db::connect(&url).await.unwrap().migrate_with(None).await },
            async { Db::connect(&url).await.unwrap().migrate_with(None).await },
        );
        first.unwrap();
        second.unwrap();
        let db = Db::connect(&url).await.unwrap();
        db.migrate_with(None)
            .await
            .expect("a restart migrates again without error");
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let expected = KIT_MIGRATIONS.postgres.iter().count();
        assert_eq!(applied, i64::try_from(expected).unwrap());
        db.bump_counter("x", 1).await.unwrap();
        db.pool().close().await;
        let mut maintenance: sqlx::postgres::PgConnection = server
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .connect()
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut maintenance)
            .await
            .unwrap();
    }

    /// `server` (`postgres://user@host:port[/db][?query]`) pointing at database `name`.
    fn with_database(server: &str, name: &str) -> String {
        let (base, query) = match server.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server, String::new()),
        };
        let authority = base.find("://").map_or(0, |index| index + 3);
        let root = match base[authority..].find('/') {
            Some(slash) => &base[..authority + slash],
            None => base,
        };
        format!("{root}/{name}{query}")
    }
}
