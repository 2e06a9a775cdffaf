//! The fake SMS gateway.
//!
//! There is no real SMS provider to run on a developer machine, so this stands in for one
//! with the two properties that shape the service around it:
//!
//! - **latency**: accepting a text takes [`SmsGatewaySettings::latency`];
//! - **a rate limit**: a token bucket holding one second's worth of texts, refilled at
//!   [`SmsGatewaySettings::rate_per_s`]. A text over the limit is refused with
//!   [`GatewayError::RateLimited`] — retryable, as a real provider's HTTP 429 is.
//!
//! The consumer loop is paced to the same rate (`rate_per_s` in the consumer options), so
//! in normal operation the gateway never refuses: the burst waits in the queue instead of
//! bouncing off the gateway. The bucket is per process; scaled copies each have their own.
//!
//! **An idempotency key**, as real providers take one: the SMS service sends the order id,
//! so a second request about one order — a redelivery handled while the first is still
//! running, on this copy of the service or another — gets the first answer back and no
//! second text goes out (see [`SmsGateway::send`]).
//!
//! **Its own books.** Every text the gateway dispatches is appended to `sms_gateway_texts`
//! (in the SMS service's database, written outside the service's transaction, as another
//! company's system would). That table is append-only and not unique per order, so a
//! second text for one order is a second row: [`SmsGateway::dispatched`] is what
//! `GET /internal/reconcile` reports, and reconciliation compares it with one per paid
//! order.

use std::{sync::Mutex, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use orderflow_kit::db::Db;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use tokio::time::Instant;
use uuid::Uuid;

/// How the fake gateway behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsGatewaySettings {
    /// Time to accept one text.
    pub latency: Duration,
    /// Texts accepted per second, on average.
    pub rate_per_s: f64,
}

impl Default for SmsGatewaySettings {
    fn default() -> Self {
        SmsGatewaySettings {
            latency: Duration::from_millis(10),
            rate_per_s: 50.0,
        }
    }
}

/// Why the gateway did not accept a text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// Over the rate limit; try again later.
    #[error("SMS gateway rate limit ({rate_per_s}/s) exceeded; try again later")]
    RateLimited {
        /// The limit.
        rate_per_s: f64,
    },
    /// The gateway could not answer (its books are unreachable); try again later, as
    /// after a provider's HTTP 503.
    #[error("SMS gateway unavailable: {detail}")]
    Unavailable {
        /// What failed.
        detail: String,
    },
}

impl GatewayError {
    fn unavailable(error: anyhow::Error) -> Self {
        GatewayError::Unavailable {
            detail: format!("{error:#}"),
        }
    }
}

/// How many texts the gateway dispatched about one order, from its own books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct TextsDispatched {
    /// The order the texts were about.
    pub order_id: String,
    /// Texts dispatched (1 for a paid order; more is a customer texted twice).
    pub texts: i64,
}

/// A token bucket: `capacity` tokens, refilled continuously at `rate` per second.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        // One second's worth, and at least one token so a rate below 1/s still sends.
        let capacity = rate.max(1.0);
        TokenBucket {
            capacity,
            rate,
            tokens: capacity,
            refilled_at: Instant::now(),
        }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The fake gateway.
#[derive(Debug)]
pub struct SmsGateway {
    settings: SmsGatewaySettings,
    bucket: Mutex<TokenBucket>,
    /// Where the gateway keeps its books (the SMS service's database).
    db: Db,
}

impl SmsGateway {
    /// A gateway with a full bucket, keeping its books in `db`.
    pub fn new(settings: SmsGatewaySettings, db: Db) -> Self {
        let bucket = Mutex::new(TokenBucket::new(settings.rate_per_s));
        SmsGateway {
            settings,
            bucket,
            db,
        }
    }

    /// Hands `text` about `order_id` for `phone` to the gateway, at most once per
    /// `idempotency_key`: a repeated key gets the first answer (when it was dispatched)
    /// back, and nothing is sent again. Returns when the text was dispatched.
    ///
    /// The key and the text are recorded in one transaction, so two requests with one key
    /// racing each other dispatch one text: on PostgreSQL the second insert of the key
    /// waits for the first transaction and then finds the key taken; on SQLite the pool's
    /// one connection runs them one after the other.
    pub async fn send(
        &self,
        idempotency_key: &str,
        order_id: Uuid,
        phone: &str,
        text: &str,
    ) -> Result<DateTime<Utc>, GatewayError> {
        let admitted = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take();
        if !admitted {
            orderflow_kit::metrics::gateways::refused("sms", "rate_limited");
            return Err(GatewayError::RateLimited {
                rate_per_s: self.settings.rate_per_s,
            });
        }
        tokio::time::sleep(self.settings.latency).await;
        self.dispatch_once(idempotency_key, order_id, phone, text)
            .await
            .map_err(GatewayError::unavailable)
    }

    /// Records the key and, if it is new, the text; else reads the first answer back.
    async fn dispatch_once(
        &self,
        idempotency_key: &str,
        order_id: Uuid,
        phone: &str,
        text: &str,
    ) -> anyhow::Result<DateTime<Utc>> {
        let db = &self.db;
        let sent_at = Utc::now();
        let mut transaction = db.pool().begin().await?;
        let first = sqlx::query(&db.sql(
            "INSERT INTO sms_gateway_requests (idempotency_key, order_id, sent_at)
             VALUES ($1, $2, $3)
             ON CONFLICT (idempotency_key) DO NOTHING",
        ))
        .bind(idempotency_key)
        .bind(order_id.to_string())
        .bind(sent_at.to_rfc3339())
        .execute(&mut *transaction)
        .await
        .context("SMS gateway: recording the idempotency key")?
        .rows_affected()
            == 1;
        if !first {
            // Dropping the transaction rolls it back; the first answer is committed.
            drop(transaction);
            let first_sent_at: String = sqlx::query_scalar(
                &db.sql("SELECT sent_at FROM sms_gateway_requests WHERE idempotency_key = $1"),
            )
            .bind(idempotency_key)
            .fetch_one(db.pool())
            .await
            .context("SMS gateway: reading the first answer back")?;
            tracing::debug!(%order_id, idempotency_key, "SMS gateway: repeated key, nothing sent");
            return Ok(DateTime::parse_from_rfc3339(&first_sent_at)?.into());
        }
        sqlx::query(&db.sql(
            "INSERT INTO sms_gateway_texts (order_id, phone, text, sent_at)
             VALUES ($1, $2, $3, $4)",
        ))
        .bind(order_id.to_string())
        .bind(phone)
        .bind(text)
        .bind(sent_at.to_rfc3339())
        .execute(&mut *transaction)
        .await
        .context("SMS gateway: recording the text")?;
        transaction.commit().await?;
        tracing::debug!(%order_id, phone, text, "SMS gateway dispatched a text");
        Ok(sent_at)
    }

    /// How many texts the gateway dispatched about `order_id`.
    pub async fn texts_about(&self, order_id: Uuid) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            &self
                .db
                .sql("SELECT COUNT(*) FROM sms_gateway_texts WHERE order_id = $1"),
        )
        .bind(order_id.to_string())
        .fetch_one(self.db.pool())
        .await?)
    }

    /// Texts dispatched per order, every order the gateway ever texted about — for
    /// `GET /internal/reconcile`.
    pub async fn dispatched(db: &Db) -> anyhow::Result<Vec<TextsDispatched>> {
        Ok(sqlx::query_as(&db.sql(
            "SELECT order_id, COUNT(*) AS texts FROM sms_gateway_texts
             GROUP BY order_id ORDER BY order_id",
        ))
        .fetch_all(db.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refuses_over_the_rate_and_recovers_as_the_bucket_refills() {
        let mut bucket = TokenBucket::new(5.0);
        for _ in 0..5 {
            assert!(bucket.try_take());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // 50 ms refilled a quarter of a token: still empty.
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(bucket.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_sender_is_never_refused() {
        let mut bucket = TokenBucket::new(10.0);
        for _ in 0..100 {
            assert!(bucket.try_take());
            tokio::time::advance(Duration::from_millis(100)).await;
        }
    }
}
