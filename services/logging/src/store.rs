//! The `events` table: every message of the order flow, stored once.
//!
//! `message_id` (the envelope id) is unique, and that row is the logging service's
//! idempotency record: storing the event *is* the effect, so a separate "processed" row
//! would only write the same fact twice on the busiest consumer of the flow. Two messages
//! with *different* ids about the same order and event type are both stored — they are
//! what the reconciliation reports as "logged twice".

use chrono::{DateTime, SecondsFormat, Utc};
use orderflow_kit::db::Db;
use serde::Serialize;
use sqlx::{any::AnyRow, Row};
use uuid::Uuid;

/// The service's tables.
pub const MIGRATIONS: &[&str] = &[
    // `published_us` (microseconds since the epoch) orders a journey; the text column is
    // for people. `payload` and `headers` are JSON text.
    "CREATE TABLE IF NOT EXISTS events (
        id {serial} PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        order_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        topic TEXT NOT NULL,
        published_at TEXT NOT NULL,
        published_us BIGINT NOT NULL,
        headers TEXT NOT NULL,
        payload TEXT NOT NULL,
        logged_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_order ON events (order_id, published_us)",
];

/// One event as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedEvent {
    /// The envelope id.
    pub message_id: Uuid,
    /// The order the event is about.
    pub order_id: Uuid,
    /// `OrderPlaced`, `PaymentSucceeded`, …
    pub event_type: String,
    /// Where it was published.
    pub topic: String,
    /// When its producer published it.
    pub published_at: DateTime<Utc>,
    /// The envelope's headers (correlation, causation, attempt, …).
    pub headers: serde_json::Value,
    /// The event as published (`{"type", "version", "data"}`).
    pub payload: serde_json::Value,
}

/// Stores `event` unless its message id is already stored; `false` when it was.
pub async fn insert(db: &Db, event: &LoggedEvent) -> anyhow::Result<bool> {
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO events (message_id, order_id, event_type, topic, published_at,
                             published_us, headers, payload, logged_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (message_id) DO NOTHING",
    ))
    .bind(event.message_id.to_string())
    .bind(event.order_id.to_string())
    .bind(&event.event_type)
    .bind(&event.topic)
    .bind(
        event
            .published_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    )
    .bind(event.published_at.timestamp_micros())
    .bind(event.headers.to_string())
    .bind(event.payload.to_string())
    .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The journey of `order_id`: its events in the order they were published (then stored).
pub async fn journey(db: &Db, order_id: Uuid) -> anyhow::Result<Vec<LoggedEvent>> {
    let rows = sqlx::query(&db.sql(
        "SELECT message_id, order_id, event_type, topic, published_at, headers, payload
         FROM events WHERE order_id = $1 ORDER BY published_us, id",
    ))
    .bind(order_id.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(event_from_row).collect()
}

fn event_from_row(row: &AnyRow) -> anyhow::Result<LoggedEvent> {
    Ok(LoggedEvent {
        message_id: row.try_get::<String, _>("message_id")?.parse()?,
        order_id: row.try_get::<String, _>("order_id")?.parse()?,
        event_type: row.try_get("event_type")?,
        topic: row.try_get("topic")?,
        published_at: DateTime::parse_from_rfc3339(&row.try_get::<String, _>("published_at")?)?
            .into(),
        headers: serde_json::from_str(&row.try_get::<String, _>("headers")?)?,
        payload: serde_json::from_str(&row.try_get::<String, _>("payload")?)?,
    })
}

/// One line of the reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReconcileRow {
    /// The order.
    pub order_id: String,
    /// The kind of event.
    pub event_type: String,
    /// How many of them were stored (1 unless a producer published one event twice).
    pub count: i64,
}

/// Stored events per (order, event type), for `GET /internal/reconcile`.
pub async fn reconcile_rows(db: &Db) -> anyhow::Result<Vec<ReconcileRow>> {
    let rows = sqlx::query(&db.sql(
        "SELECT order_id, event_type, COUNT(*) AS count FROM events
         GROUP BY order_id, event_type ORDER BY order_id, event_type",
    ))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReconcileRow {
                order_id: row.try_get("order_id")?,
                event_type: row.try_get("event_type")?,
                count: row.try_get("count")?,
            })
        })
        .collect()
}
