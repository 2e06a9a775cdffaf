//! Settling one Kafka delivery. An ack marks its offset settled in the tracker; a retry
//! (and an abandoned delivery) hands the envelope back to this consumer's channel after
//! the delay, its offset still uncommitted; a dead letter is produced to `<group>.dlq`
//! before the original counts as settled.
//!
//! A retried delivery keeps the [`Slot`] of the record it came from. So its offset stays
//! in flight, and the partition's commit point cannot pass it, until the copy is acked or
//! dead-lettered: if the consumer dies before that, the group gets the original again.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use async_trait::async_trait;

use super::{broker::lock, consume::Consumption, offsets::Slot};
use crate::{BrokerError, Delivery, Envelope, Result, Settle};

impl Consumption {
    /// Hands `envelope` to this consumer again (retry, abandon), unless the partition has
    /// been taken away since: then its new owner redelivers it from the last commit.
    async fn redeliver(self: Arc<Self>, envelope: Envelope, slot: Slot) {
        if self.stopped.load(Ordering::Acquire) || !lock(&self.tracker).is_current(&slot) {
            return;
        }
        let Some(sender) = self.sender.upgrade() else {
            return;
        };
        // A closed channel would hand the delivery straight back to `abandon`.
        if sender.is_closed() {
            return;
        }
        let settle = KafkaSettle {
            consumption: self.clone(),
            slot,
            envelope: envelope.clone(),
        };
        // Waits for room in the channel like any delivery. An error means the channel
        // closed meanwhile: the delivery is dropped with the error, and its `abandon`
        // stops at the closed channel above.
        let _ = sender
            .send(Delivery::new(
                envelope,
                self.group.clone(),
                Box::new(settle),
            ))
            .await;
    }

    pub(super) fn redeliver_later(
        self: &Arc<Self>,
        envelope: Envelope,
        slot: Slot,
        delay: Duration,
    ) {
        // No runtime means the process is shutting down: the record stays uncommitted
        // and the group gets it again.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let consumption = self.clone();
        // A task per redelivery, so that the handler that asked for a retry is not held
        // up for the delay.
        runtime.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            consumption.redeliver(envelope, slot).await;
        });
    }
}

/// Settles one Kafka delivery.
pub(super) struct KafkaSettle {
    /// The consumer the record came from: retries go back into its channel.
    pub(super) consumption: Arc<Consumption>,
    /// Where the record's offset sits in the tracker: what an ack settles.
    pub(super) slot: Slot,
    /// Kept for `abandon`, which gets no envelope.
    pub(super) envelope: Envelope,
}

#[async_trait]
impl Settle for KafkaSettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        // The offset leaves the in-flight set and the committer is woken; nothing goes to
        // the broker from here.
        self.consumption.settle(&self.slot);
        Ok(())
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
        // In process, not produced again: a copy on the topic would reach every other
        // group subscribed to it as well.
        self.consumption.redeliver_later(envelope, self.slot, delay);
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()> {
        let topic = self.consumption.dead_letter_topic.as_str();
        match self
            .consumption
            .inner
            .produce(Some(topic), std::slice::from_ref(&envelope))
            .await
        {
            // The copy is on the dead-letter topic (`acks=all`), so the original may go.
            // A crash between the two dead-letters it twice, never zero times.
            Ok(()) => {
                self.consumption.settle(&self.slot);
                Ok(())
            }
            Err(error) => {
                // Not moved: hand the original back so it is handled again.
                let id = envelope.id;
                self.consumption
                    .redeliver_later(self.envelope, self.slot, Duration::ZERO);
                Err(BrokerError::Settle {
                    id,
                    detail: format!("producing to `{topic}`: {error}"),
                })
            }
        }
    }

    fn abandon(self: Box<Self>) {
        self.consumption
            .redeliver_later(self.envelope, self.slot, Duration::ZERO);
    }
}
