//! The `payments` table: one row per order, the outcome the service published.
//!
//! `order_id` is the primary key: together with the idempotency claim in the same
//! transaction, it is what makes "at most one payment per order" hold even when two
//! different messages (a producer retry with a new envelope id) announce the same order.

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

/// `succeeded` or `failed`, as stored and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// The gateway charged the order.
    Succeeded,
    /// The gateway declined it.
    Failed,
}

impl PaymentOutcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Succeeded => "succeeded",
            PaymentOutcome::Failed => "failed",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "succeeded" => Ok(PaymentOutcome::Succeeded),
            "failed" => Ok(PaymentOutcome::Failed),
            other => anyhow::bail!("unknown payment outcome {other:?} in the payments table"),
        }
    }
}

/// One payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    /// The order paid (or not).
    pub order_id: Uuid,
    /// The customer.
    pub user_id: u64,
    /// The amount charged or attempted, in cents.
    pub amount_cents: i64,
    /// What the gateway said.
    pub outcome: PaymentOutcome,
    /// Why it was declined.
    pub reason: Option<String>,
    /// The gateway's reference, for a charge.
    pub payment_id: Option<Uuid>,
    /// The `order.placed` message that led to this payment.
    pub message_id: Uuid,
    /// When the gateway answered.
    pub decided_at: DateTime<Utc>,
}

/// Inserts `payment` unless the order already has one; `false` when it had.
pub async fn insert(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    payment: &Payment,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO payments
             (order_id, user_id, amount_cents, outcome, reason, payment_id, message_id, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id) DO NOTHING",
    ))
    .bind(payment.order_id.to_string())
    .bind(i64::try_from(payment.user_id)?)
    .bind(payment.amount_cents)
    .bind(payment.outcome.as_str())
    .bind(payment.reason.clone())
    .bind(payment.payment_id.map(|id| id.to_string()))
    .bind(payment.message_id.to_string())
    .bind(payment.decided_at.to_rfc3339())
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The payment of `order_id`, if any.
pub async fn find(db: &Db, order_id: Uuid) -> anyhow::Result<Option<Payment>> {
    let row: Option<StoredPayment> = sqlx::query_as(&db.sql(
        "SELECT order_id, user_id, amount_cents, outcome, reason, payment_id, message_id,
                decided_at
         FROM payments WHERE order_id = $1",
    ))
    .bind(order_id.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.map(Payment::try_from).transpose()
}

/// A row of `payments` as stored: ids, outcome and time are text, the user a BIGINT.
#[derive(FromRow)]
struct StoredPayment {
    #[sqlx(try_from = "String")]
    order_id: Uuid,
    #[sqlx(try_from = "i64")]
    user_id: u64,
    amount_cents: i64,
    outcome: String,
    reason: Option<String>,
    payment_id: Option<String>,
    #[sqlx(try_from = "String")]
    message_id: Uuid,
    decided_at: String,
}

impl TryFrom<StoredPayment> for Payment {
    type Error = anyhow::Error;

    fn try_from(stored: StoredPayment) -> anyhow::Result<Payment> {
        Ok(Payment {
            order_id: stored.order_id,
            user_id: stored.user_id,
            amount_cents: stored.amount_cents,
            outcome: PaymentOutcome::parse(&stored.outcome)?,
            reason: stored.reason,
            payment_id: stored.payment_id.map(|id| id.parse()).transpose()?,
            message_id: stored.message_id,
            decided_at: DateTime::parse_from_rfc3339(&stored.decided_at)?.into(),
        })
    }
}

/// One line of the reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, serde::Deserialize)]
pub struct ReconcileRow {
    /// The order.
    pub order_id: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
}

/// Every payment, for `GET /internal/reconcile` (the gateway's charges are reported beside
/// them, from its own books: [`crate::gateway::Gateway::charges_made`]).
pub async fn reconcile_rows(db: &Db) -> anyhow::Result<Vec<ReconcileRow>> {
    Ok(
        sqlx::query_as(&db.sql("SELECT order_id, outcome FROM payments ORDER BY order_id"))
            .fetch_all(db.pool())
            .await?,
    )
}
