//! The simulated payment gateway.
//!
//! A real gateway is another company's system: slow, sometimes saying no, and — this is the
//! part that matters for a message-driven service — it supports an *idempotency key*. The
//! payment service sends the order id as that key, so when `order.placed` is delivered
//! again after a crash (the charge happened, the payment row did not commit), asking again
//! returns the first answer instead of charging the card a second time.
//!
//! The simulation keeps that behaviour honest:
//!
//! - **latency**: every request waits [`GatewaySettings::latency`];
//! - **decisions are deterministic**: an order above the card limit is declined with
//!   [`CARD_LIMIT_EXCEEDED`]; otherwise a hash of (seed, order id) mapped to `[0, 1)` below
//!   [`GatewaySettings::failure_rate`] declines it with [`CARD_DECLINED`]. No RNG state, so a
//!   redelivery, a restart or another replica decides the same;
//! - **its own books**, written outside the payment service's transaction, as an external
//!   system would: the key table `gateway_charges` (one row per idempotency key, the first
//!   answer) and, apart from it, `gateway_charges_made`, one row appended per charge
//!   actually made. [`Gateway::charges`] counts the latter, so a card charged twice shows
//!   even when the key table holds one row (a forgotten key, a key that changed) — the
//!   number `GET /internal/reconcile` reports and that must stay 1 per paid order.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use orderflow_kit::db::Db;
use sqlx::FromRow;
use uuid::Uuid;

/// The reason given for orders above the card limit.
pub const CARD_LIMIT_EXCEEDED: &str = "card limit exceeded";
/// The reason given for orders the failure rate declines.
pub const CARD_DECLINED: &str = "card declined";

/// How the simulated gateway behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Time to answer one request.
    pub latency: Duration,
    /// Share of orders (within the card limit) declined with [`CARD_DECLINED`], `0.0..=1.0`.
    pub failure_rate: f64,
    /// Seed of the decisions.
    pub seed: u64,
    /// Orders whose total exceeds this many cents are declined with [`CARD_LIMIT_EXCEEDED`].
    pub card_limit_cents: i64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            latency: Duration::from_millis(5),
            failure_rate: 0.0,
            seed: 42,
            // 10,000 yuan: the demo makes every 10th order exceed it to show failures.
            card_limit_cents: 1_000_000,
        }
    }
}

/// The gateway's answer to a charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The card was charged.
    Charged {
        /// The gateway's reference for the charge.
        payment_id: Uuid,
        /// When it was charged.
        at: DateTime<Utc>,
    },
    /// The card was not charged.
    Declined {
        /// Why, for a person.
        reason: String,
        /// When the gateway said no.
        at: DateTime<Utc>,
    },
}

/// The simulated gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    settings: GatewaySettings,
    db: Db,
}

impl Gateway {
    /// A gateway keeping its books in `db`.
    pub fn new(settings: GatewaySettings, db: Db) -> Self {
        Gateway { settings, db }
    }

    /// The decision for `order_id` and `amount_cents`: `None` to charge, or why not.
    /// A pure function of the settings and its arguments.
    pub fn decide(&self, order_id: Uuid, amount_cents: i64) -> Option<&'static str> {
        if amount_cents > self.settings.card_limit_cents {
            Some(CARD_LIMIT_EXCEEDED)
        } else if unit_interval(self.settings.seed, order_id) < self.settings.failure_rate {
            Some(CARD_DECLINED)
        } else {
            None
        }
    }

    /// Charges `amount_cents` for `order_id`, at most once per `idempotency_key`: a repeated
    /// key gets the first answer back and nothing is charged again.
    pub async fn charge(
        &self,
        idempotency_key: &str,
        order_id: Uuid,
        amount_cents: i64,
    ) -> anyhow::Result<ChargeOutcome> {
        tokio::time::sleep(self.settings.latency).await;
        let declined = self.decide(order_id, amount_cents);
        let (outcome, payment_id) = match declined {
            None => ("succeeded", Some(Uuid::now_v7().to_string())),
            Some(_) => ("failed", None),
        };
        let db = &self.db;
        let decided_at = Utc::now().to_rfc3339();
        // Insert-or-keep the key, and — only when it is new and the answer is a charge —
        // record the charge, both in one transaction: a key is never kept without the
        // charge it let through. On PostgreSQL a racing request with the same key waits on
        // the key's row and then finds it taken; on SQLite the one connection serialises them.
        let mut transaction = db.pool().begin().await?;
        let first = sqlx::query(&db.sql(
            "INSERT INTO gateway_charges
                 (idempotency_key, order_id, amount_cents, outcome, reason, payment_id, decided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (idempotency_key) DO NOTHING",
        ))
        .bind(idempotency_key)
        .bind(order_id.to_string())
        .bind(amount_cents)
        .bind(outcome)
        .bind(declined)
        .bind(payment_id.clone())
        .bind(&decided_at)
        .execute(&mut *transaction)
        .await
        .context("gateway: recording the request's key")?
        .rows_affected()
            == 1;
        if let (true, Some(payment_id)) = (first, &payment_id) {
            sqlx::query(&db.sql(
                "INSERT INTO gateway_charges_made
                     (order_id, idempotency_key, amount_cents, payment_id, charged_at)
                 VALUES ($1, $2, $3, $4, $5)",
            ))
            .bind(order_id.to_string())
            .bind(idempotency_key)
            .bind(amount_cents)
            .bind(payment_id.as_str())
            .bind(&decided_at)
            .execute(&mut *transaction)
            .await
            .context("gateway: recording the charge")?;
        }
        transaction
            .commit()
            .await
            .context("gateway: committing the request")?;
        // Read back: when two requests with one key race, both report the one that won.
        let row: StoredCharge = sqlx::query_as(&db.sql(
            "SELECT outcome, reason, payment_id, decided_at FROM gateway_charges
             WHERE idempotency_key = $1",
        ))
        .bind(idempotency_key)
        .fetch_one(db.pool())
        .await
        .context("gateway: reading the charge back")?;
        let at = DateTime::parse_from_rfc3339(&row.decided_at)?.into();
        Ok(match row.outcome.as_str() {
            "succeeded" => ChargeOutcome::Charged {
                payment_id: row
                    .payment_id
                    .context("gateway: a charge without a payment id")?
                    .parse()?,
                at,
            },
            _ => ChargeOutcome::Declined {
                reason: row.reason.unwrap_or_else(|| CARD_DECLINED.to_owned()),
                at,
            },
        })
    }

    /// How many times the gateway charged `order_id` (declines are not charges), from its
    /// record of charges made — not from the key table, which holds one row per key.
    pub async fn charges(&self, order_id: Uuid) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            &self
                .db
                .sql("SELECT COUNT(*) FROM gateway_charges_made WHERE order_id = $1"),
        )
        .bind(order_id.to_string())
        .fetch_one(self.db.pool())
        .await?)
    }

    /// Charges made per order, every order the gateway ever charged — for
    /// `GET /internal/reconcile`.
    pub async fn charges_made(db: &Db) -> anyhow::Result<Vec<ChargesMade>> {
        Ok(sqlx::query_as(&db.sql(
            "SELECT order_id, COUNT(*) AS charges FROM gateway_charges_made
             GROUP BY order_id ORDER BY order_id",
        ))
        .fetch_all(db.pool())
        .await?)
    }
}

/// How many times the gateway charged one order, from its record of charges made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, FromRow)]
pub struct ChargesMade {
    /// The order charged.
    pub order_id: String,
    /// Charges made (1 for a paid order; more is a card charged twice).
    pub charges: i64,
}

/// The gateway's answer to one key as it keeps it, read back after every request.
#[derive(FromRow)]
struct StoredCharge {
    outcome: String,
    reason: Option<String>,
    payment_id: Option<String>,
    decided_at: String,
}

/// Maps (seed, order id) to a number in `[0, 1)`, the same on every machine and every run
/// (unlike `std`'s hasher, whose algorithm may change between Rust releases).
fn unit_interval(seed: u64, order_id: Uuid) -> f64 {
    let (high, low) = order_id.as_u64_pair();
    let mixed = splitmix64(splitmix64(seed ^ high) ^ low);
    // The top 53 bits fill an f64 mantissa exactly.
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// The SplitMix64 finaliser: a well-spread 64-bit hash of a 64-bit input.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn gateway(settings: GatewaySettings) -> (Gateway, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "orderflow-payment-gateway-{}",
            Uuid::now_v7().simple()
        ));
        let db = Db::connect(&format!("sqlite://{}/payment.db", dir.display()))
            .await
            .unwrap();
        db.migrate(&crate::store::MIGRATIONS).await.unwrap();
        (Gateway::new(settings, db), dir)
    }

    fn settings(failure_rate: f64, seed: u64) -> GatewaySettings {
        GatewaySettings {
            latency: Duration::ZERO,
            failure_rate,
            seed,
            ..GatewaySettings::default()
        }
    }

    #[tokio::test]
    async fn decisions_depend_only_on_seed_and_order() {
        let (half, dir) = gateway(settings(0.5, 7)).await;
        let orders: Vec<Uuid> = (0..1_000).map(|_| Uuid::now_v7()).collect();
        let first: Vec<_> = orders.iter().map(|id| half.decide(*id, 100)).collect();
        let again: Vec<_> = orders.iter().map(|id| half.decide(*id, 100)).collect();
        assert_eq!(first, again, "the same seed and order decide the same");
        let declined = first.iter().filter(|decision| decision.is_some()).count();
        assert!(
            (400..600).contains(&declined),
            "about half declined at rate 0.5, got {declined}"
        );
        let other_seed = Gateway::new(settings(0.5, 8), half.db.clone());
        let differs = orders
            .iter()
            .filter(|id| other_seed.decide(**id, 100) != half.decide(**id, 100))
            .count();
        assert!(differs > 0, "another seed decides differently");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn rates_zero_and_one_and_the_card_limit() {
        let (never, dir) = gateway(settings(0.0, 1)).await;
        let always = Gateway::new(settings(1.0, 1), never.db.clone());
        let order = Uuid::now_v7();
        assert_eq!(
            never.decide(order, 1_000_000),
            None,
            "the limit itself is allowed"
        );
        assert_eq!(never.decide(order, 1_000_001), Some(CARD_LIMIT_EXCEEDED));
        assert_eq!(always.decide(order, 100), Some(CARD_DECLINED));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_charges_once_and_answers_the_same() {
        let (gateway, dir) = gateway(settings(0.0, 1)).await;
        let order = Uuid::now_v7();
        let key = order.to_string();
        let first = gateway.charge(&key, order, 2_500).await.unwrap();
        let second = gateway.charge(&key, order, 2_500).await.unwrap();
        assert!(matches!(first, ChargeOutcome::Charged { .. }), "{first:?}");
        assert_eq!(first, second);
        assert_eq!(gateway.charges(order).await.unwrap(), 1);

        let big = Uuid::now_v7();
        let declined = gateway
            .charge(&big.to_string(), big, 5_000_000)
            .await
            .unwrap();
        assert!(
            matches!(&declined, ChargeOutcome::Declined { reason, .. } if reason == CARD_LIMIT_EXCEEDED),
            "{declined:?}"
        );
        assert_eq!(
            gateway.charges(big).await.unwrap(),
            0,
            "a decline is no charge"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A double charge must show in the gateway's count even though the key table holds one
    /// row per key: real providers forget keys after a while (Stripe after 24 hours), and
    /// a redelivery after that charges the card again.
    #[tokio::test]
    async fn a_charge_after_the_key_was_forgotten_counts_as_a_second_charge() {
        let (gateway, dir) = gateway(settings(0.0, 1)).await;
        let order = Uuid::now_v7();
        let key = order.to_string();
        gateway.charge(&key, order, 2_500).await.unwrap();
        sqlx::query(
            &gateway
                .db
                .sql("DELETE FROM gateway_charges WHERE idempotency_key = $1"),
        )
        .bind(&key)
        .execute(gateway.db.pool())
        .await
        .unwrap();
        gateway.charge(&key, order, 2_500).await.unwrap();
        assert_eq!(
            gateway.charges(order).await.unwrap(),
            2,
            "the card was charged twice"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
