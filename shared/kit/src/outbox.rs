//! The transactional outbox: "no change without its event, no event without its change".
//!
//! Publishing straight from a handler has two bad endings: commit then crash before
//! publishing (the change happened, nobody hears of it), or publish then fail to commit (an
//! event about something that never happened). Instead the event is written as a row in the
//! same transaction as the change ([`enqueue`]); a [`Relay`] reads unsent rows, publishes
//! them, and marks them sent only after the broker confirmed. A crash between publish and
//! mark publishes the row again later — a duplicate with the same envelope id, which the
//! idempotent consumers drop.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use orderflow_broker::{Broker, Envelope};
use sqlx::{Any, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{Db, Dialect},
    retry::RetryPolicy,
};

/// Rows published per round trip.
const BATCH: i64 = 500;

/// Writes `envelope` to the outbox inside `transaction`; it is published after commit.
pub async fn enqueue(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    envelope: &Envelope,
) -> anyhow::Result<()> {
    sqlx::query(&db.sql(
        "INSERT INTO outbox (message_id, topic, message_key, headers, payload, published_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    ))
    .bind(envelope.id.to_string())
    .bind(&envelope.topic)
    .bind(&envelope.key)
    .bind(serde_json::to_string(&envelope.headers)?)
    .bind(envelope.payload.to_vec())
    .bind(envelope.published_at.to_rfc3339())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Publishes committed outbox rows.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    broker: Arc<dyn Broker>,
    wake: Arc<Notify>,
    /// The wait after a failed round; only its backoff is used, since the relay never
    /// gives up on a committed row.
    failure_backoff: RetryPolicy,
}

impl Relay {
    /// A relay for `db`'s outbox publishing to `broker`.
    pub fn new(db: Db, broker: Arc<dyn Broker>) -> Self {
        Relay {
            db,
            broker,
            wake: Arc::new(Notify::new()),
            failure_backoff: RetryPolicy::default(),
        }
    }

    /// Call after committing outbox rows so the relay publishes them now instead of at its
    /// next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes until `shutdown`, then publishes what is left once more and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        // Rounds that failed in a row; the backoff grows with it and a success resets it.
        let mut failures = 0u32;
        loop {
            match self.publish_pending().await {
                // A full batch: more rows are probably waiting, so go again at once
                // instead of waiting for a wake-up.
                Ok(published) if published as i64 == BATCH => continue,
                // Everything pending went out (or there was nothing): wait for news.
                Ok(_) => failures = 0,
                // The broker or the database failed. Rows not confirmed are still unsent
                // (see `publish_pending`), so nothing is lost: back off, then try again.
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay: publishing failed, will retry"
                    );
                }
            }
            let pause = if failures == 0 {
                // Polling is the safety net: `wake` only reaches the relay of this
                // process, so rows committed by another replica sharing the database
                // (docker-compose --scale), or by code that forgot to call `wake`, go
                // out at the next poll at the latest.
                Duration::from_millis(500)
            } else {
                self.failure_backoff.backoff(failures)
            };
            tokio::select! {
                // A handler committed rows and called `wake`: publish them now. A
                // `notify_one` sent while no one waited is kept, so a wake-up that
                // arrives during a round is not lost; it starts the next round.
                () = self.wake.notified() => {},
                // The poll interval or the failure backoff has passed.
                () = tokio::time::sleep(pause) => {},
                // Stop waiting; the last round below still runs.
                () = shutdown.cancelled() => break,
            }
        }
        // One last round: the service stops its consumers before its relay, so this
        // publishes the events their last handlers committed.
        if let Err(error) = self.publish_pending().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay: rows left unpublished at shutdown; they go out at next start"
            );
        }
    }

    /// Publishes one batch of unsent rows; returns how many.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        let db = &self.db;
        let mut transaction = db.pool().begin().await?;
        // On PostgreSQL, replicas (docker-compose --scale) share the outbox: SKIP LOCKED
        // lets each relay take rows no other relay is publishing right now.
        let lock = match db.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let rows = sqlx::query(&db.sql(&format!(
            "SELECT seq, message_id, topic, message_key, headers, payload, published_at
             FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1{lock}"
        )))
        .bind(BATCH)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut sequence_numbers = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in rows {
            sequence_numbers.push(row.try_get::<i64, _>("seq")?);
            let headers: BTreeMap<String, String> =
                serde_json::from_str(&row.try_get::<String, _>("headers")?)?;
            envelopes.push(Envelope {
                id: row.try_get::<String, _>("message_id")?.parse()?,
                topic: row.try_get("topic")?,
                key: row.try_get("message_key")?,
                headers,
                payload: row.try_get::<Vec<u8>, _>("payload")?.into(),
                published_at: chrono::DateTime::parse_from_rfc3339(
                    &row.try_get::<String, _>("published_at")?,
                )?
                .into(),
            });
        }
        // Each row is published on its own but all at once: the confirms are pipelined
        // (one round trip for the batch) and a lost message costs only its own row a
        // second try, not the whole batch. Only confirmed rows are marked sent.
        let confirms = futures::future::join_all(
            envelopes
                .into_iter()
                .map(|envelope| self.broker.publish(envelope)),
        )
        .await;
        let mut confirmed = Vec::with_capacity(sequence_numbers.len());
        let mut first_failure = None;
        for (sequence, confirm) in sequence_numbers.into_iter().zip(confirms) {
            match confirm {
                Ok(()) => confirmed.push(sequence),
                Err(error) => {
                    first_failure.get_or_insert(error);
                }
            }
        }
        let count = confirmed.len();
        if !confirmed.is_empty() {
            let placeholders: Vec<String> = (2..confirmed.len() + 2)
                .map(|index| format!("${index}"))
                .collect();
            let mark = db.sql(&format!(
                "UPDATE outbox SET sent_at = $1 WHERE seq IN ({})",
                placeholders.join(", ")
            ));
            let mut query = sqlx::query(&mark).bind(chrono::Utc::now().to_rfc3339());
            for sequence in confirmed {
                query = query.bind(sequence);
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        if let Some(error) = first_failure {
            // The unconfirmed rows stay unsent; the caller backs off and tries them again.
            return Err(error.into());
        }
        Ok(count)
    }

    /// Rows committed but not yet published.
    pub async fn pending(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            &self
                .db
                .sql("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"),
        )
        .fetch_one(self.db.pool())
        .await?)
    }
}
