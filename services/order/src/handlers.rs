//! The consumer of payment outcomes: `payment.succeeded` and `payment.failed` move an
//! order from `placed` to `paid` or `payment_failed`.
//!
//! Brokers deliver at least once, so the same outcome can arrive twice. The message id is
//! claimed (kit [`idempotency::claim`]) in the same transaction as the status change: a
//! redelivery finds the claim, changes nothing and is reported as
//! [`Outcome::Duplicate`], which the kit counts for reconciliation.

use async_trait::async_trait;
use orderflow_broker::Envelope;
use orderflow_events::Event;
use orderflow_kit::{
    consumer::{Handler, HandlerError, Outcome},
    db::Db,
    idempotency,
};

use crate::store::{self, status, Transition};

/// Applies payment outcomes to orders.
pub struct PaymentOutcomeHandler {
    db: Db,
}

impl PaymentOutcomeHandler {
    /// A handler writing to the order service's database.
    pub fn new(db: Db) -> Self {
        PaymentOutcomeHandler { db }
    }
}

#[async_trait]
impl Handler for PaymentOutcomeHandler {
    async fn handle(&self, event: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        let (order_id, new_status, charged_cents) = match &event {
            Event::PaymentSucceeded(paid) => (paid.order_id, status::PAID, paid.amount_cents.get()),
            Event::PaymentFailed(failed) => (
                failed.order_id,
                status::PAYMENT_FAILED,
                failed.amount_cents.get(),
            ),
            _ => return Ok(Outcome::Ignored),
        };
        let db = &self.db;
        let mut transaction = db.pool().begin().await?;
        if !idempotency::claim(db, &mut transaction, envelope.id, &envelope.topic).await? {
            transaction.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let transition = store::apply_payment_outcome(
            db,
            &mut transaction,
            order_id,
            new_status,
            event.kind().name(),
            envelope.id,
        )
        .await?;
        match transition {
            Transition::Applied => {
                transaction.commit().await?;
                tracing::info!(%order_id, status = new_status, amount_cents = charged_cents, "order status changed");
                Ok(Outcome::Done)
            }
            // A second message with the same news (e.g. a producer that published twice
            // under two ids): the effect already exists, so it counts as a duplicate. The
            // claim is committed so a redelivery of this message is recognised at once.
            Transition::AlreadyThere => {
                transaction.commit().await?;
                Ok(Outcome::Duplicate)
            }
            // The order's outcome is final: a contradicting late message must not flip a
            // paid order to failed (or back). Kept in the log for a person to look at.
            Transition::Conflict { current } => {
                transaction.commit().await?;
                tracing::warn!(%order_id, %current, ignored = new_status, "payment outcome contradicts the order's final status; ignored");
                Ok(Outcome::Ignored)
            }
            // Orders are committed before their OrderPlaced is published, so an outcome
            // for an order we never stored is not ours (or our data was lost): retrying
            // cannot help, dead-letter it so a person sees it.
            Transition::UnknownOrder => {
                transaction.rollback().await?;
                Err(HandlerError::Reject(anyhow::anyhow!(
                    "payment outcome for unknown order {order_id}"
                )))
            }
        }
    }
}
