//! What the payment service does with `order.placed`.
//!
//! ```text
//! order.placed ─► already paid? ──yes──► Duplicate (the gateway is not asked again)
//!                     │ no
//!                     ▼
//!                 gateway.charge(key = order id)          idempotent at the gateway
//!                     ▼
//!                 BEGIN
//!                   claim message id         ── seen ──► ROLLBACK, Duplicate
//!                   INSERT payment           ── order has one ──► COMMIT claim, Duplicate
//!                   outbox: payment.succeeded | payment.failed
//!                 COMMIT, wake the relay ──► Done
//! ```
//!
//! The gateway is called *before* the transaction, not inside it: holding a database
//! transaction (on SQLite, the one writer) across a slow remote call would serialise every
//! payment behind the gateway's latency. That leaves a window — charged, then crashed before
//! COMMIT — which the gateway's idempotency key closes: the redelivery asks again with the
//! same key and gets the same charge back, not a second one.
//!
//! Every value in the order was checked when the payload was decoded (the
//! [`orderflow_events::domain`] types): a zero total, a user id out of range or a bad
//! phone never reaches this handler, because the consumer loop dead-letters the message
//! as undecodable. What is left to check here is the one rule that relates fields: the
//! total is the sum of the lines.

use std::sync::Arc;

use anyhow::anyhow;
use async_trait::async_trait;
use orderflow_broker::Envelope;
use orderflow_events::{Event, OrderPlaced, PaymentFailed, PaymentSucceeded};
use orderflow_kit::{
    consumer::{Handler, HandlerError, Outcome},
    db::Db,
    idempotency, outbox,
    outbox::Relay,
};

use crate::{
    gateway::{ChargeOutcome, Gateway},
    store::{self, Payment, PaymentOutcome},
};

/// Handles `order.placed`: one gateway charge and one payment event per order.
pub struct OrderPlacedHandler {
    db: Db,
    relay: Relay,
    gateway: Gateway,
}

impl OrderPlacedHandler {
    /// A handler writing to `db`, publishing through `relay`, charging through `gateway`.
    pub fn new(db: Db, relay: Relay, gateway: Gateway) -> Arc<Self> {
        Arc::new(OrderPlacedHandler { db, relay, gateway })
    }

    /// Pays for one order.
    pub async fn pay(
        &self,
        order: &OrderPlaced,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        check_total_matches_items(order)?;
        let db = &self.db;
        // Cheap pre-check: a redelivery of a paid order costs one read, not a gateway call.
        if store::find(db, order.order_id).await?.is_some() {
            return Ok(Outcome::Duplicate);
        }
        let charge = self
            .gateway
            .charge(
                &order.order_id.to_string(),
                order.order_id,
                order.total_cents.get(),
            )
            .await?;
        let (payment, event) = outcome_of(order, envelope, charge);

        let mut transaction = db.pool().begin().await?;
        if !idempotency::claim(db, &mut transaction, envelope.id, &envelope.topic).await? {
            // Dropping the transaction rolls it back.
            return Ok(Outcome::Duplicate);
        }
        if !store::insert(db, &mut transaction, &payment).await? {
            // The order was paid through another message (same order, new envelope id) that
            // committed after our pre-check. Keep the claim so this message id counts as seen.
            transaction.commit().await?;
            return Ok(Outcome::Duplicate);
        }
        outbox::enqueue(db, &mut transaction, &event.caused_by(envelope)).await?;
        transaction.commit().await?;
        self.relay.wake();
        tracing::info!(
            order_id = %order.order_id,
            outcome = payment.outcome.as_str(),
            reason = payment.reason.as_deref().unwrap_or(""),
            "payment decided"
        );
        Ok(Outcome::Done)
    }
}

#[async_trait]
impl Handler for OrderPlacedHandler {
    async fn handle(&self, event: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        match event {
            Event::OrderPlaced(order) => self.pay(&order, envelope).await,
            // The service subscribes to order.placed only: anything else there is a
            // producer's bug, worth a dead letter a person will look at.
            other => Err(HandlerError::Reject(anyhow!(
                "{} on {}: the payment service only handles OrderPlaced",
                other.kind().name(),
                envelope.topic
            ))),
        }
    }
}

/// Refuses an order whose total is not what its lines add up to: charging either number
/// would be wrong, and retrying cannot make them agree.
fn check_total_matches_items(order: &OrderPlaced) -> Result<(), HandlerError> {
    let items_total = order.items.iter().try_fold(0_i64, |sum, item| {
        item.line_total().and_then(|line| sum.checked_add(line))
    });
    if items_total != Some(order.total_cents.get()) {
        return Err(HandlerError::Reject(anyhow!(
            "order {}: total_cents {} does not match its items ({:?})",
            order.order_id,
            order.total_cents,
            items_total
        )));
    }
    Ok(())
}

/// The payment row and the event announcing it, from the gateway's answer.
fn outcome_of(order: &OrderPlaced, envelope: &Envelope, charge: ChargeOutcome) -> (Payment, Event) {
    match charge {
        ChargeOutcome::Charged { payment_id, at } => (
            Payment {
                order_id: order.order_id,
                user_id: order.user_id.get(),
                amount_cents: order.total_cents.get(),
                outcome: PaymentOutcome::Succeeded,
                reason: None,
                payment_id: Some(payment_id),
                message_id: envelope.id,
                decided_at: at,
            },
            Event::PaymentSucceeded(PaymentSucceeded {
                order_id: order.order_id,
                payment_id,
                user_id: order.user_id,
                phone: order.phone.clone(),
                amount_cents: order.total_cents,
                paid_at: at,
            }),
        ),
        ChargeOutcome::Declined { reason, at } => (
            Payment {
                order_id: order.order_id,
                user_id: order.user_id.get(),
                amount_cents: order.total_cents.get(),
                outcome: PaymentOutcome::Failed,
                reason: Some(reason.clone()),
                payment_id: None,
                message_id: envelope.id,
                decided_at: at,
            },
            Event::PaymentFailed(PaymentFailed {
                order_id: order.order_id,
                user_id: order.user_id,
                amount_cents: order.total_cents,
                reason,
                failed_at: at,
            }),
        ),
    }
}
