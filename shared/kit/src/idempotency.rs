//! Idempotent consumers: the effect and the "processed" mark commit together.
//!
//! Brokers deliver at least once, so every handler will some day see a message twice.
//! The cure is to record the message id in the same database transaction as the effect:
//!
//! ```text
//! BEGIN;
//!   INSERT INTO processed_messages (message_id, …) ON CONFLICT DO NOTHING;  -- claim
//!   -- 0 rows inserted? someone already did this: ROLLBACK, ack, done.
//!   INSERT INTO points_ledger …;                                            -- the effect
//! COMMIT;                                                                     -- both or neither
//! ack
//! ```
//!
//! A crash before COMMIT leaves neither (the redelivery does the work); a crash after
//! COMMIT but before the ack leaves both (the redelivery finds the claim and only acks).
//! On PostgreSQL a concurrent duplicate blocks on the claim's unique key until the first
//! transaction ends, then sees the conflict — never two effects.

use sqlx::{Any, Transaction};
use uuid::Uuid;

use crate::db::Db;

/// Claims `message_id` inside `transaction`. `true`: first time, go on with the effect
/// and commit. `false`: already processed — roll back and ack without an effect.
pub async fn claim(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    message_id: Uuid,
    topic: &str,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO processed_messages (message_id, topic, processed_at) VALUES ($1, $2, $3)
         ON CONFLICT (message_id) DO NOTHING",
    ))
    .bind(message_id.to_string())
    .bind(topic)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Deletes processed message ids recorded before `cutoff` (a time in the stored format,
/// see [`crate::outbox::prune`]), in short chunks; returns how many. After this a copy of
/// one of those messages is no longer recognised: the retention window must outlast the
/// longest time a duplicate can still arrive.
pub async fn prune(db: &Db, cutoff: &str) -> anyhow::Result<u64> {
    crate::outbox::delete_in_chunks(
        db,
        "DELETE FROM processed_messages WHERE message_id IN (
             SELECT message_id FROM processed_messages WHERE processed_at < $1
             ORDER BY message_id LIMIT $2)",
        cutoff,
    )
    .await
}
