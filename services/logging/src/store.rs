//! The `events` table: every message of the order flow, stored once.
//!
//! `message_id` (the envelope id) is unique, and that row is the logging service's
//! idempotency record: storing the event *is* the effect, so a separate "processed" row
//! would only write the same fact twice on the busiest consumer of the flow. Two messages
//! with *different* ids about the same order and event type are both stored — they are
//! what the reconciliation reports as "logged twice".

use chrono::{DateTime, SecondsFormat, Utc};
use orderflow_kit::db::{Db, Migrations};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

/// The service's tables: `migrations/postgres` and `migrations/sqlite` (one schema, each
/// database's column types; see [`orderflow_kit::db`]), applied after the kit's at every start.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

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
    /// When the logging service stored it: minus `published_at`, the log's own hop of the
    /// journey (`orderflow scenario journey`).
    pub logged_at: DateTime<Utc>,
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
    .bind(event.logged_at.to_rfc3339_opts(SecondsFormat::Micros, true))
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The journey of `order_id`: its events in the order they were published (then stored).
pub async fn journey(db: &Db, order_id: Uuid) -> anyhow::Result<Vec<LoggedEvent>> {
    let rows: Vec<StoredEvent> = sqlx::query_as(&db.sql(
        "SELECT message_id, order_id, event_type, topic, published_at, headers, payload,
                logged_at
         FROM events WHERE order_id = $1 ORDER BY published_us, id",
    ))
    .bind(order_id.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(LoggedEvent::try_from).collect()
}

/// A row of `events` as stored: ids and times are text, headers and payload JSON text.
#[derive(FromRow)]
struct StoredEvent {
    #[sqlx(try_from = "String")]
    message_id: Uuid,
    #[sqlx(try_from = "String")]
    order_id: Uuid,
    event_type: String,
    topic: String,
    published_at: String,
    headers: String,
    payload: String,
    logged_at: String,
}

impl TryFrom<StoredEvent> for LoggedEvent {
    type Error = anyhow::Error;

    fn try_from(stored: StoredEvent) -> anyhow::Result<LoggedEvent> {
        Ok(LoggedEvent {
            message_id: stored.message_id,
            order_id: stored.order_id,
            event_type: stored.event_type,
            topic: stored.topic,
            published_at: DateTime::parse_from_rfc3339(&stored.published_at)?.into(),
            headers: serde_json::from_str(&stored.headers)?,
            payload: serde_json::from_str(&stored.payload)?,
            logged_at: DateTime::parse_from_rfc3339(&stored.logged_at)?.into(),
        })
    }
}

/// One line of the reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, serde::Deserialize)]
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
    Ok(sqlx::query_as(&db.sql(
        "SELECT order_id, event_type, COUNT(*) AS count FROM events
         GROUP BY order_id, event_type ORDER BY order_id, event_type",
    ))
    .fetch_all(db.pool())
    .await?)
}
