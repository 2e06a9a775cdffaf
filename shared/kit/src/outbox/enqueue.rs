//! Writing an event to the outbox, inside the transaction that makes the change it is about.

use orderflow_broker::Envelope;
use sqlx::{Any, Transaction};

use crate::db::Db;

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
