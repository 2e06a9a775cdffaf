//! What the SMS service does with `payment.succeeded`.
//!
//! ```text
//! payment.succeeded ─► text already recorded? ──yes──► Duplicate (nothing sent)
//!                          │ no
//!                          ▼
//!                      gateway.send(key = order id)   over the rate limit ─► Retry (backoff)
//!                          ▼
//!                      BEGIN
//!                        claim message id     ── seen ──► ROLLBACK, Duplicate
//!                        INSERT sms row       ── order has one ──► COMMIT claim, Duplicate
//!                        outbox: sms.sent
//!                      COMMIT, wake the relay ──► Done
//! ```
//!
//! The gateway is called before the transaction, not inside it, so a slow gateway does not
//! hold a database transaction open. That leaves two windows between "already texted?" and
//! COMMIT: a crash after the gateway dispatched the text (the redelivery asks again), and
//! two copies of one message handled at once by two consumers (a broker redelivering a
//! message whose first delivery still runs). Both would text the customer twice; the
//! gateway's idempotency key — the order id, as with the payment gateway — closes them:
//! the second request gets the first answer back and nothing is sent. The service's record
//! and `sms.sent` hold one text per order, and so do the gateway's own books, which
//! reconciliation reads to prove it.
//!
//! The phone needs no checking here: it is a [`orderflow_events::domain::Phone`], so a
//! payment event with an empty or malformed number fails decoding and is dead-lettered by
//! the consumer loop before this handler runs.

use std::sync::Arc;

use anyhow::anyhow;
use async_trait::async_trait;
use orderflow_broker::Envelope;
use orderflow_events::{Event, PaymentSucceeded, SmsSent};
use orderflow_kit::{
    consumer::{Handler, HandlerError, Outcome},
    db::Db,
    idempotency, outbox,
    outbox::Relay,
};

use crate::{
    gateway::SmsGateway,
    store::{self, SmsRecord},
};

/// The text for a paid order.
pub fn paid_text(payment: &PaymentSucceeded) -> String {
    format!(
        "Your order {} is paid: {}.{:02} yuan. Thank you!",
        payment.order_id,
        payment.amount_cents.get() / 100,
        payment.amount_cents.get() % 100
    )
}

/// Handles `payment.succeeded`: one text and one `sms.sent` per order.
pub struct PaymentSucceededHandler {
    db: Db,
    relay: Relay,
    gateway: Arc<SmsGateway>,
    instance: String,
}

impl PaymentSucceededHandler {
    /// A handler writing to `db`, publishing through `relay`, sending through `gateway`,
    /// recording `instance` as the sender.
    pub fn new(db: Db, relay: Relay, gateway: Arc<SmsGateway>, instance: String) -> Arc<Self> {
        Arc::new(PaymentSucceededHandler {
            db,
            relay,
            gateway,
            instance,
        })
    }

    /// Texts the customer of one paid order.
    pub async fn notify(
        &self,
        payment: &PaymentSucceeded,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let db = &self.db;
        // A redelivery of a texted order costs one read, not a second text.
        if store::exists(db, payment.order_id).await? {
            return Ok(Outcome::Duplicate);
        }
        let text = paid_text(payment);
        let sent_at = self
            .gateway
            .send(
                &payment.order_id.to_string(),
                payment.order_id,
                payment.phone.as_str(),
                &text,
            )
            .await
            .map_err(|error| HandlerError::Retry(error.into()))?;
        let record = SmsRecord {
            order_id: payment.order_id,
            phone: payment.phone.to_string(),
            text: text.clone(),
            instance: self.instance.clone(),
            message_id: envelope.id,
            sent_at,
        };
        let event = Event::SmsSent(SmsSent {
            order_id: payment.order_id,
            phone: payment.phone.clone(),
            text,
            sent_at,
        });

        let mut transaction = db.pool().begin().await?;
        if !idempotency::claim(db, &mut transaction, envelope.id, &envelope.topic).await? {
            // Dropping the transaction rolls it back.
            return Ok(Outcome::Duplicate);
        }
        if !store::insert(db, &mut transaction, &record).await? {
            // Another message about this order (or another copy of the service) recorded its
            // text first; keep the claim so this message id counts as seen.
            transaction.commit().await?;
            return Ok(Outcome::Duplicate);
        }
        outbox::enqueue(db, &mut transaction, &event.caused_by(envelope)).await?;
        transaction.commit().await?;
        self.relay.wake();
        tracing::info!(order_id = %payment.order_id, instance = %self.instance, "SMS sent");
        Ok(Outcome::Done)
    }
}

#[async_trait]
impl Handler for PaymentSucceededHandler {
    async fn handle(&self, event: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        match event {
            Event::PaymentSucceeded(payment) => self.notify(&payment, envelope).await,
            // The service subscribes to payment.succeeded only: anything else there is a
            // producer's bug, worth a dead letter a person will look at.
            other => Err(HandlerError::Reject(anyhow!(
                "{} on {}: the SMS service only handles PaymentSucceeded",
                other.kind().name(),
                envelope.topic
            ))),
        }
    }
}
