//! The points ledger: one row per paid order; a balance is the sum of a user's rows.
//!
//! Keeping a ledger instead of a mutable balance column is what makes "exactly once"
//! checkable: `order_id` is unique, so a second award for the same order cannot be
//! written, and reconciliation can compare each row with the order's total.

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

/// One award.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Award {
    /// The paid order.
    pub order_id: Uuid,
    /// Whose balance grows. Stored as BIGINT: ids above `i64::MAX` are refused earlier.
    pub user_id: i64,
    /// How many points.
    pub points: i64,
    /// The amount paid, in cents (kept so a person can check the points).
    pub amount_cents: i64,
    /// The `payment.succeeded` message that led to the award.
    pub message_id: Uuid,
    /// When it was written.
    pub awarded_at: DateTime<Utc>,
}

/// Writes `award` unless its order already has one; `false` when it had.
pub async fn insert(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    award: &Award,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO points_ledger
             (order_id, user_id, points, amount_cents, message_id, awarded_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (order_id) DO NOTHING",
    ))
    .bind(award.order_id.to_string())
    .bind(award.user_id)
    .bind(award.points)
    .bind(award.amount_cents)
    .bind(award.message_id.to_string())
    .bind(award.awarded_at.to_rfc3339())
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// One line of a user's ledger, as `GET /users/{id}/points` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct LedgerEntry {
    /// The order the points are for.
    pub order_id: String,
    /// How many.
    pub points: i64,
    /// When (RFC 3339).
    pub awarded_at: String,
}

/// A user's ledger, oldest first.
pub async fn ledger_of(db: &Db, user_id: i64) -> anyhow::Result<Vec<LedgerEntry>> {
    Ok(sqlx::query_as(&db.sql(
        "SELECT order_id, points, awarded_at FROM points_ledger
         WHERE user_id = $1 ORDER BY id",
    ))
    .bind(user_id)
    .fetch_all(db.pool())
    .await?)
}

/// One line of the reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, serde::Deserialize)]
pub struct ReconcileRow {
    /// The order.
    pub order_id: String,
    /// The points awarded for it.
    pub points: i64,
}

/// Every ledger row, for `GET /internal/reconcile`.
pub async fn reconcile_rows(db: &Db) -> anyhow::Result<Vec<ReconcileRow>> {
    Ok(
        sqlx::query_as(&db.sql("SELECT order_id, points FROM points_ledger ORDER BY id"))
            .fetch_all(db.pool())
            .await?,
    )
}
