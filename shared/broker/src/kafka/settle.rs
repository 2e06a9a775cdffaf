//! Settling one Kafka delivery. An ack marks its offset settled in the tracker; a retry
//! (and an abandoned delivery) hands the envelope back to this consumer's channel after
//! the delay, its offset still uncommitted; a dead letter is produced to `<group>.dlq`
//! before the original counts as settled.

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
    pub(super) consumption: Arc<Consumption>,
    pub(super) slot: Slot,
    /// Kept for `abandon`, which gets no envelope.
    pub(super) envelope: Envelope,
}

#[async_trait]
impl Settle for KafkaSettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.consumption.settle(&self.slot);
        Ok(())
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
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
