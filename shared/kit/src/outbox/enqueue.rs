//! Writing an event to the outbox, inside the transaction that makes the change it is about.

use orderflow_broker::Envelope;
use sqlx::{Any, Transaction};

use super::hand_back;
use crate::db::Db;

/// Writes `envelope` to the outbox inside `transaction`; it is published after commit.
///
/// Inside [`super::handing_back`] (the synchronous wiring) the row is written already
/// sent — the event goes back to the caller in the HTTP answer, not to the broker — and
/// the envelope is kept for that answer. The row is still written: it is the record of
/// what the change announced, pruned after the retention window like any sent row.
pub async fn enqueue(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    envelope: &Envelope,
) -> anyhow::Result<()> {
    let handed_back = hand_back::active();
    sqlx::query(&db.sql(
        "INSERT INTO outbox (message_id, topic, message_key, headers, payload, published_at,
                             sent_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    ))
    .bind(envelope.id.to_string())
    .bind(&envelope.topic)
    .bind(&envelope.key)
    .bind(serde_json::to_string(&envelope.headers)?)
    .bind(envelope.payload.to_vec())
    .bind(envelope.published_at.to_rfc3339())
    .bind(handed_back.then(|| chrono::Utc::now().to_rfc3339()))
    .execute(&mut **transaction)
    .await?;
    // Kept only once the row is written; should the transaction then roll back, the
    // caller's handler returns an error and the caller discards what was kept.
    hand_back::keep(envelope);
    Ok(())
}
