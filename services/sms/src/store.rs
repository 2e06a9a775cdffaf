//! The `sms_messages` table: one row per order, the text the gateway accepted.
//!
//! `order_id` is unique: together with the idempotency claim in the same transaction, it is
//! what makes "exactly one SMS record per order" hold even when the payment event arrives
//! twice, or is handled by two copies of the service. That the customer got one *text* is
//! the gateway's part (its idempotency key) and is counted in the gateway's own books
//! (`crate::gateway`), which this table's UNIQUE constraint could never show doubled.

use chrono::{DateTime, Utc};
use orderflow_kit::db::{Db, Migrations};
use serde::Serialize;
use sqlx::{Any, FromRow, Transaction};
use uuid::Uuid;

/// The service's tables: `migrations/postgres` and `migrations/sqlite` (one schema, each
/// database's column types; see [`orderflow_kit::db`]), applied after the kit's at every start.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// How many texts `GET /sms` lists at most without an order id.
pub const RECENT_LIMIT: i64 = 100;

/// One text as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmsRecord {
    /// The order it is about.
    pub order_id: Uuid,
    /// Where it went.
    pub phone: String,
    /// What it said.
    pub text: String,
    /// Which copy of the service sent it.
    pub instance: String,
    /// The `payment.succeeded` message that led to it.
    pub message_id: Uuid,
    /// When the gateway accepted it.
    pub sent_at: DateTime<Utc>,
}

/// Records `record` unless its order already has a text; `false` when it had.
pub async fn insert(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    record: &SmsRecord,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO sms_messages (order_id, phone, text, instance, message_id, sent_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (order_id) DO NOTHING",
    ))
    .bind(record.order_id.to_string())
    .bind(&record.phone)
    .bind(&record.text)
    .bind(&record.instance)
    .bind(record.message_id.to_string())
    .bind(record.sent_at.to_rfc3339())
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Whether a text for `order_id` was recorded.
pub async fn exists(db: &Db, order_id: Uuid) -> anyhow::Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar(&db.sql("SELECT id FROM sms_messages WHERE order_id = $1"))
            .bind(order_id.to_string())
            .fetch_optional(db.pool())
            .await?;
    Ok(found.is_some())
}

/// The texts about `order_id` (at most one), or the most recent [`RECENT_LIMIT`] texts.
pub async fn list(db: &Db, order_id: Option<Uuid>) -> anyhow::Result<Vec<SmsRecord>> {
    const COLUMNS: &str = "SELECT order_id, phone, text, instance, message_id, sent_at
                           FROM sms_messages";
    let rows: Vec<StoredSms> = match order_id {
        Some(order_id) => {
            sqlx::query_as(&db.sql(&format!("{COLUMNS} WHERE order_id = $1 ORDER BY id")))
                .bind(order_id.to_string())
                .fetch_all(db.pool())
                .await?
        }
        None => {
            sqlx::query_as(&db.sql(&format!("{COLUMNS} ORDER BY id DESC LIMIT $1")))
                .bind(RECENT_LIMIT)
                .fetch_all(db.pool())
                .await?
        }
    };
    rows.into_iter().map(SmsRecord::try_from).collect()
}

/// A row of `sms_messages` as stored: ids and times are text on both databases.
#[derive(FromRow)]
struct StoredSms {
    #[sqlx(try_from = "String")]
    order_id: Uuid,
    phone: String,
    text: String,
    instance: String,
    #[sqlx(try_from = "String")]
    message_id: Uuid,
    sent_at: String,
}

impl TryFrom<StoredSms> for SmsRecord {
    type Error = anyhow::Error;

    fn try_from(stored: StoredSms) -> anyhow::Result<SmsRecord> {
        Ok(SmsRecord {
            order_id: stored.order_id,
            phone: stored.phone,
            text: stored.text,
            instance: stored.instance,
            message_id: stored.message_id,
            sent_at: DateTime::parse_from_rfc3339(&stored.sent_at)?.into(),
        })
    }
}

/// One line of the reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, serde::Deserialize)]
pub struct ReconcileRow {
    /// The order.
    pub order_id: String,
    /// Which copy sent its text.
    pub instance: String,
}

/// Every text, for `GET /internal/reconcile`.
pub async fn reconcile_rows(db: &Db) -> anyhow::Result<Vec<ReconcileRow>> {
    Ok(
        sqlx::query_as(&db.sql("SELECT order_id, instance FROM sms_messages ORDER BY id"))
            .fetch_all(db.pool())
            .await?,
    )
}
