//! The relay lease: which replica may publish a database's outbox, and until when.
//!
//! One row (`outbox_relay_lease`, kit migration 0002) holds the holder's id and the
//! instant its lease ends, in milliseconds by the database's clock — the one clock every
//! replica shares. Taking and renewing are one conditional `UPDATE`: it succeeds when the
//! row names this relay already or its lease has ended, and is atomic on both databases,
//! so two relays never both succeed.
//!
//! The holder's own idea of its lease is measured on its monotonic clock from *before* it
//! asked: the database set the end at least that late, so the holder never believes in a
//! lease the database already counts as expired (clocks drift apart far slower than a
//! lease lasts).

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::db::{Db, Dialect};

/// This relay's claim on the relay role.
#[derive(Debug)]
pub(super) struct Lease {
    /// Unique per relay (per process): a restarted process is a new holder, so it never
    /// mistakes a lease of its dead predecessor — which may still have messages in flight
    /// — for its own.
    holder: String,
    /// How long a lease lasts once taken or renewed.
    duration: Duration,
    /// Until when this relay knows it holds the lease (`None`: it does not).
    held_until: Option<Instant>,
}

impl Lease {
    /// A relay that does not hold the lease yet.
    pub(super) fn new(duration: Duration) -> Self {
        Lease {
            holder: Uuid::now_v7().to_string(),
            duration,
            held_until: None,
        }
    }

    /// Takes the lease if it is free or expired, renews it if this relay holds it.
    /// Returns until when this relay holds it, or `None` when another relay does.
    pub(super) async fn take_or_renew(&mut self, db: &Db) -> anyhow::Result<Option<Instant>> {
        let asked_at = Instant::now();
        let now = database_now_ms(db);
        let taken = sqlx::query(&db.sql(&format!(
            "UPDATE outbox_relay_lease SET holder = $1, expires_at_ms = {now} + $2
             WHERE id = 1 AND (holder = $1 OR expires_at_ms < {now})"
        )))
        .bind(&self.holder)
        .bind(i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX))
        .execute(db.pool())
        .await?
        .rows_affected()
            == 1;
        let held_before = self.held();
        self.held_until = taken.then(|| asked_at + self.duration);
        if taken && !held_before {
            tracing::info!(
                holder = %self.holder,
                "outbox relay: took the relay lease; this replica publishes the outbox"
            );
        } else if !taken && held_before {
            tracing::warn!(
                holder = %self.holder,
                "outbox relay: lost the relay lease (not renewed in time); another replica publishes"
            );
        }
        Ok(self.held_until)
    }

    /// Whether this relay holds the lease right now.
    pub(super) fn held(&self) -> bool {
        self.held_until.is_some_and(|until| Instant::now() < until)
    }

    /// Gives the lease up (a graceful stop), so another replica takes over at once
    /// instead of after it expires.
    pub(super) async fn release(&mut self, db: &Db) -> anyhow::Result<()> {
        if self.held_until.take().is_none() {
            return Ok(());
        }
        sqlx::query(
            &db.sql("UPDATE outbox_relay_lease SET expires_at_ms = 0 WHERE id = 1 AND holder = $1"),
        )
        .bind(&self.holder)
        .execute(db.pool())
        .await?;
        Ok(())
    }
}

/// The database's clock in milliseconds since the epoch, as an SQL expression.
fn database_now_ms(db: &Db) -> &'static str {
    match db.dialect() {
        // clock_timestamp(), not now(): now() is the start of the transaction.
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        // The Julian day of 1970-01-01 is 2440587.5.
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    }
}
