//! What the points service does with `payment.succeeded`.
//!
//! ```text
//! BEGIN
//!   claim message id             ── seen ──────────► ROLLBACK, Duplicate
//!   INSERT ledger row            ── order has one ─► COMMIT claim, Duplicate
//!   outbox: points.awarded
//! COMMIT, wake the relay ──► Done
//! ```
//!
//! Two guards, because duplicates come in two kinds: the broker redelivering one message
//! (same envelope id: the claim catches it) and the payment service publishing a second
//! message about the same order (new envelope id: the ledger's unique `order_id` catches it).
//! Points are awarded once per *order*, not once per message.
//!
//! The amount and the user id need no checking here: they are
//! [`orderflow_events::domain`] types, so a negative amount or an id out of range fails
//! decoding and is dead-lettered by the consumer loop before this handler runs.

use std::sync::Arc;

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::Utc;
use orderflow_broker::Envelope;
use orderflow_events::{Event, PaymentSucceeded, PointsAwarded};
use orderflow_kit::{
    consumer::{Handler, HandlerError, Outcome},
    db::Db,
    idempotency, outbox,
    outbox::Relay,
};

use crate::store::{self, Award};

/// Cents per point: one point per whole yuan.
pub const CENTS_PER_POINT: i64 = 100;

/// The points `amount_cents` earns: one per whole yuan, rounded down.
pub fn points_for(amount_cents: i64) -> i64 {
    amount_cents.div_euclid(CENTS_PER_POINT)
}

/// Handles `payment.succeeded`: one ledger row and one `points.awarded` per order.
pub struct PaymentSucceededHandler {
    db: Db,
    relay: Relay,
}

impl PaymentSucceededHandler {
    /// A handler writing to `db` and publishing through `relay`.
    pub fn new(db: Db, relay: Relay) -> Arc<Self> {
        Arc::new(PaymentSucceededHandler { db, relay })
    }

    /// Awards the points for one paid order.
    pub async fn award(
        &self,
        payment: &PaymentSucceeded,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let award = Award {
            order_id: payment.order_id,
            user_id: payment.user_id.as_i64(),
            points: points_for(payment.amount_cents.get()),
            amount_cents: payment.amount_cents.get(),
            message_id: envelope.id,
            awarded_at: Utc::now(),
        };
        let event = Event::PointsAwarded(PointsAwarded {
            order_id: award.order_id,
            user_id: payment.user_id,
            points: award.points,
            awarded_at: award.awarded_at,
        });

        let db = &self.db;
        let mut transaction = db.pool().begin().await?;
        if !idempotency::claim(db, &mut transaction, envelope.id, &envelope.topic).await? {
            // Dropping the transaction rolls it back.
            return Ok(Outcome::Duplicate);
        }
        if !store::insert(db, &mut transaction, &award).await? {
            // Points for this order came through another message; keep the claim so this
            // message id counts as seen.
            transaction.commit().await?;
            return Ok(Outcome::Duplicate);
        }
        outbox::enqueue(db, &mut transaction, &event.caused_by(envelope)).await?;
        transaction.commit().await?;
        self.relay.wake();
        tracing::info!(
            order_id = %award.order_id,
            user_id = award.user_id,
            points = award.points,
            "points awarded"
        );
        Ok(Outcome::Done)
    }
}

#[async_trait]
impl Handler for PaymentSucceededHandler {
    async fn handle(&self, event: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        match event {
            Event::PaymentSucceeded(payment) => self.award(&payment, envelope).await,
            // The service subscribes to payment.succeeded only: anything else there is a
            // producer's bug, worth a dead letter a person will look at.
            other => Err(HandlerError::Reject(anyhow!(
                "{} on {}: the points service only handles PaymentSucceeded",
                other.kind().name(),
                envelope.topic
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_whole_yuan() {
        assert_eq!(points_for(0), 0);
        assert_eq!(points_for(99), 0);
        assert_eq!(points_for(100), 1);
        assert_eq!(points_for(12_345), 123);
    }
}
