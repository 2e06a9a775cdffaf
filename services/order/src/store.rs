//! The order service's tables and every statement that touches them.
//!
//! SQL is written once in PostgreSQL's style and adapted by [`Db::sql`] for SQLite; values
//! are always bound parameters. Times are RFC 3339 text in UTC (as the kit stores them),
//! which sorts correctly and reads the same on both databases.
//!
//! ```text
//! orders         one row per order; idempotency_key UNIQUE is what makes a retried POST
//!                find the first order instead of creating a second
//! order_items    its lines
//! order_history  every status it has had, in order (placed, then paid / payment_failed)
//! outbox         (the kit's) OrderPlaced, written in the same transaction as the order
//! ```

use chrono::{SecondsFormat, Utc};
use orderflow_events::{
    domain::{Cents, Quantity, Sku},
    Event, LineItem, OrderPlaced,
};
use orderflow_kit::{
    db::{Db, Migrations},
    outbox,
};
use serde::Serialize;
use sqlx::{Any, AnyConnection, FromRow, Transaction};
use uuid::Uuid;

use crate::validation::NewOrder;

/// The service's tables: `migrations/postgres` and `migrations/sqlite` (one schema, each
/// database's column types; see [`orderflow_kit::db`]), applied after the kit's at every start.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// The statuses an order goes through.
pub mod status {
    /// Accepted; waiting for the payment outcome.
    pub const PLACED: &str = "placed";
    /// The payment service charged it.
    pub const PAID: &str = "paid";
    /// The payment service could not charge it.
    pub const PAYMENT_FAILED: &str = "payment_failed";
}

/// One entry of an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct HistoryEntry {
    /// The status the order moved to.
    pub status: String,
    /// The event that moved it (`OrderPlaced`, `PaymentSucceeded`, `PaymentFailed`).
    pub event: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// An order as `GET /orders/{id}` (and `POST /orders`) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    /// Its id.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: u64,
    /// `placed`, `paid` or `payment_failed`.
    pub status: String,
    /// Sum of the lines, in cents.
    pub total_cents: i64,
    /// Its lines, in the order they were sent.
    pub items: Vec<LineItem>,
    /// When it was accepted, RFC 3339 UTC.
    pub placed_at: String,
    /// Every status it has had, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One order as `GET /internal/reconcile` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, serde::Deserialize)]
pub struct ReconcileRow {
    /// Its id.
    pub order_id: String,
    /// Its total in cents.
    pub total_cents: i64,
    /// Its status.
    pub status: String,
}

/// What placing an order did.
#[derive(Debug)]
pub enum Placed {
    /// A new order was stored with its event.
    Created(OrderView),
    /// The idempotency key had been used for the same order before: that order.
    Replayed(OrderView),
}

/// Why an order was not placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The key was used before for a different order.
    #[error("this Idempotency-Key was already used for a different order")]
    KeyReused,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PlaceError {
    fn from(error: sqlx::Error) -> Self {
        PlaceError::Database(error.into())
    }
}

/// Now, in the one format every stored time has.
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Stores `order`, its lines, its first history entry and its `OrderPlaced` outbox row in
/// one transaction — all or nothing — unless `idempotency_key` was seen before, in which
/// case the order stored then is returned and nothing is written.
///
/// The caller wakes the relay after a [`Placed::Created`].
pub async fn place(
    db: &Db,
    order: &NewOrder,
    idempotency_key: Option<&str>,
) -> Result<Placed, PlaceError> {
    let fingerprint = order.fingerprint();
    if let Some(key) = idempotency_key {
        // The common retry: the first attempt committed long ago.
        if let Some(existing) = find_by_key(db, key).await? {
            return replay(db, existing, &fingerprint).await;
        }
    }
    let order_id = Uuid::now_v7();
    let placed_at = Utc::now();
    let placed_at_text = placed_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut transaction = db.pool().begin().await?;
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO orders (order_id, user_id, phone, total_cents, status, placed_at,
                             updated_at, idempotency_key, request_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
    ))
    .bind(order_id.to_string())
    .bind(order.user_id.as_i64())
    .bind(order.phone.as_str())
    .bind(order.total_cents.get())
    .bind(status::PLACED)
    .bind(&placed_at_text)
    .bind(idempotency_key)
    .bind(idempotency_key.map(|_| fingerprint.as_str()))
    .execute(&mut *transaction)
    .await;
    if let Err(error) = inserted {
        let lost_race = idempotency_key.is_some()
            && error
                .as_database_error()
                .is_some_and(|error| error.is_unique_violation());
        transaction.rollback().await?;
        if lost_race {
            // A concurrent request with the same key committed first (PostgreSQL makes us
            // wait for it, then reports the conflict): answer with its order.
            let key = idempotency_key.unwrap_or_default();
            if let Some(existing) = find_by_key(db, key).await? {
                return replay(db, existing, &fingerprint).await;
            }
        }
        return Err(error.into());
    }
    for (line_no, item) in order.items.iter().enumerate() {
        sqlx::query(&db.sql(
            "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_cents)
             VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(order_id.to_string())
        .bind(i64::try_from(line_no).map_err(anyhow::Error::from)?)
        .bind(item.sku.as_str())
        .bind(i64::from(item.quantity.get()))
        .bind(item.unit_price_cents.get())
        .execute(&mut *transaction)
        .await?;
    }
    let event = Event::OrderPlaced(OrderPlaced {
        order_id,
        user_id: order.user_id,
        phone: order.phone.clone(),
        items: order.items.clone(),
        total_cents: order.total_cents,
        placed_at,
    });
    let envelope = event.to_envelope();
    append_history(
        db,
        &mut transaction,
        order_id,
        status::PLACED,
        event.kind().name(),
        envelope.id,
        &placed_at_text,
    )
    .await?;
    outbox::enqueue(db, &mut transaction, &envelope).await?;
    transaction.commit().await?;
    Ok(Placed::Created(OrderView {
        order_id,
        user_id: order.user_id.get(),
        status: status::PLACED.to_owned(),
        total_cents: order.total_cents.get(),
        items: order.items.clone(),
        placed_at: placed_at_text.clone(),
        history: vec![HistoryEntry {
            status: status::PLACED.to_owned(),
            event: event.kind().name().to_owned(),
            at: placed_at_text,
        }],
    }))
}

/// The order an idempotency key was first used for, and the fingerprint of that request.
#[derive(FromRow)]
struct KeyedOrder {
    #[sqlx(try_from = "String")]
    order_id: Uuid,
    request_fingerprint: Option<String>,
}

/// The order a key was first used for, with the fingerprint of that request.
async fn find_by_key(db: &Db, key: &str) -> anyhow::Result<Option<(Uuid, String)>> {
    let row: Option<KeyedOrder> = sqlx::query_as(
        &db.sql("SELECT order_id, request_fingerprint FROM orders WHERE idempotency_key = $1"),
    )
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|row| (row.order_id, row.request_fingerprint.unwrap_or_default())))
}

async fn replay(
    db: &Db,
    (order_id, stored_fingerprint): (Uuid, String),
    fingerprint: &str,
) -> Result<Placed, PlaceError> {
    if stored_fingerprint != fingerprint {
        return Err(PlaceError::KeyReused);
    }
    let view = find(db, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order {order_id} vanished while being replayed"))?;
    Ok(Placed::Replayed(view))
}

/// Appends one entry to an order's history, inside the transaction that changed it.
async fn append_history(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    order_id: Uuid,
    status: &str,
    event: &str,
    message_id: Uuid,
    at: &str,
) -> anyhow::Result<()> {
    sqlx::query(&db.sql(
        "INSERT INTO order_history (order_id, status, event, message_id, at)
         VALUES ($1, $2, $3, $4, $5)",
    ))
    .bind(order_id.to_string())
    .bind(status)
    .bind(event)
    .bind(message_id.to_string())
    .bind(at)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// The order with its lines and history, if it exists.
pub async fn find(db: &Db, order_id: Uuid) -> anyhow::Result<Option<OrderView>> {
    // One connection for the three reads; on SQLite the pool has only one anyway.
    let mut connection = db.pool().acquire().await?;
    find_on(db, &mut connection, order_id).await
}

async fn find_on(
    db: &Db,
    connection: &mut AnyConnection,
    order_id: Uuid,
) -> anyhow::Result<Option<OrderView>> {
    let id = order_id.to_string();
    let Some(order): Option<StoredOrder> = sqlx::query_as(
        &db.sql("SELECT user_id, status, total_cents, placed_at FROM orders WHERE order_id = $1"),
    )
    .bind(&id)
    .fetch_optional(&mut *connection)
    .await?
    else {
        return Ok(None);
    };
    let items: Vec<StoredItem> = sqlx::query_as(&db.sql(
        "SELECT sku, quantity, unit_price_cents FROM order_items
         WHERE order_id = $1 ORDER BY line_no",
    ))
    .bind(&id)
    .fetch_all(&mut *connection)
    .await?;
    let history: Vec<HistoryEntry> = sqlx::query_as(
        &db.sql("SELECT status, event, at FROM order_history WHERE order_id = $1 ORDER BY seq"),
    )
    .bind(&id)
    .fetch_all(&mut *connection)
    .await?;
    Ok(Some(OrderView {
        order_id,
        user_id: order.user_id,
        status: order.status,
        total_cents: order.total_cents,
        items: items
            .into_iter()
            .map(LineItem::try_from)
            .collect::<anyhow::Result<_>>()?,
        placed_at: order.placed_at,
        history,
    }))
}

/// A row of `orders`, the columns an [`OrderView`] shows.
#[derive(FromRow)]
struct StoredOrder {
    #[sqlx(try_from = "i64")]
    user_id: u64,
    status: String,
    total_cents: i64,
    placed_at: String,
}

/// A row of `order_items`: BIGINT columns on both databases.
#[derive(FromRow)]
struct StoredItem {
    sku: String,
    quantity: i64,
    unit_price_cents: i64,
}

/// A stored line is checked again on the way out: a row written before a rule existed
/// (or edited by hand) is reported, not passed on as a valid [`LineItem`].
impl TryFrom<StoredItem> for LineItem {
    type Error = anyhow::Error;

    fn try_from(item: StoredItem) -> anyhow::Result<LineItem> {
        Ok(LineItem {
            sku: Sku::parse(item.sku)?,
            quantity: Quantity::parse(item.quantity)?,
            unit_price_cents: Cents::parse(item.unit_price_cents)?,
        })
    }
}

/// Every order's id, total and status, oldest first, for reconciliation.
pub async fn reconcile_rows(db: &Db) -> anyhow::Result<Vec<ReconcileRow>> {
    Ok(sqlx::query_as(
        &db.sql("SELECT order_id, total_cents, status FROM orders ORDER BY placed_at, order_id"),
    )
    .fetch_all(db.pool())
    .await?)
}

/// What applying a payment outcome to an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `placed` → the new status; a history entry was appended.
    Applied,
    /// The order already had the new status (another message said the same thing).
    AlreadyThere,
    /// The order had moved to a different final status; left as it is.
    Conflict {
        /// The status it has.
        current: String,
    },
    /// No such order in this service's database.
    UnknownOrder,
}

/// Moves a `placed` order to `new_status`, appending `event` to its history, inside the
/// caller's transaction (which also holds the idempotency claim of the message).
pub async fn apply_payment_outcome(
    db: &Db,
    transaction: &mut Transaction<'_, Any>,
    order_id: Uuid,
    new_status: &str,
    event: &str,
    message_id: Uuid,
) -> anyhow::Result<Transition> {
    let at = now();
    // The status guard in the WHERE clause makes the check and the change one statement:
    // no window in which two outcomes could both see `placed`.
    let changed =
        sqlx::query(&db.sql(
            "UPDATE orders SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4",
        ))
        .bind(new_status)
        .bind(&at)
        .bind(order_id.to_string())
        .bind(status::PLACED)
        .execute(&mut **transaction)
        .await?
        .rows_affected();
    if changed == 1 {
        append_history(
            db,
            transaction,
            order_id,
            new_status,
            event,
            message_id,
            &at,
        )
        .await?;
        return Ok(Transition::Applied);
    }
    let current: Option<String> =
        sqlx::query_scalar(&db.sql("SELECT status FROM orders WHERE order_id = $1"))
            .bind(order_id.to_string())
            .fetch_optional(&mut **transaction)
            .await?;
    Ok(match current {
        None => Transition::UnknownOrder,
        Some(current) if current == new_status => Transition::AlreadyThere,
        Some(current) => Transition::Conflict { current },
    })
}
