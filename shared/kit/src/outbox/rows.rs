//! The outbox table: claiming the oldest unsent rows, marking rows sent, counting what
//! waits. Each function is one statement on its own (no transaction spans two of them),
//! so a connection is held only for the statement.

use std::collections::BTreeMap;

use orderflow_broker::Envelope;
use sqlx::Row;

use crate::db::Db;

/// An unsent row: its place in the outbox and the message it holds.
#[derive(Debug, Clone)]
pub(super) struct OutboxRow {
    /// `outbox.seq`: the order rows were written in.
    pub(super) seq: i64,
    /// The message, as it is published.
    pub(super) envelope: Envelope,
}

/// Up to `limit` unsent rows, oldest first. Only the lease holder calls it, so reading is
/// claiming: no other relay publishes while this one holds the lease.
pub(super) async fn claim_unsent(db: &Db, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
    let rows = sqlx::query(&db.sql(
        "SELECT seq, message_id, topic, message_key, headers, payload, published_at
         FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let headers: BTreeMap<String, String> =
                serde_json::from_str(&row.try_get::<String, _>("headers")?)?;
            Ok(OutboxRow {
                seq: row.try_get("seq")?,
                envelope: Envelope {
                    id: row.try_get::<String, _>("message_id")?.parse()?,
                    topic: row.try_get("topic")?,
                    key: row.try_get("message_key")?,
                    headers,
                    payload: row.try_get::<Vec<u8>, _>("payload")?.into(),
                    published_at: chrono::DateTime::parse_from_rfc3339(
                        &row.try_get::<String, _>("published_at")?,
                    )?
                    .into(),
                },
            })
        })
        .collect()
}

/// Marks the rows `sequence_numbers` sent, now.
pub(super) async fn mark_sent(db: &Db, sequence_numbers: &[i64]) -> anyhow::Result<()> {
    if sequence_numbers.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (2..sequence_numbers.len() + 2)
        .map(|index| format!("${index}"))
        .collect();
    let mark = db.sql(&format!(
        "UPDATE outbox SET sent_at = $1 WHERE seq IN ({})",
        placeholders.join(", ")
    ));
    let mut query = sqlx::query(&mark).bind(chrono::Utc::now().to_rfc3339());
    for sequence in sequence_numbers {
        query = query.bind(*sequence);
    }
    query.execute(db.pool()).await?;
    Ok(())
}

/// Rows committed but not yet published.
pub(super) async fn count_unsent(db: &Db) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar(&db.sql("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"))
            .fetch_one(db.pool())
            .await?,
    )
}
