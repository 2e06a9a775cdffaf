//! Settling one delivery: ack it, retry it (republish a copy to the group queue, then
//! ack), dead-letter it (republish to `<group>.dlq`, then ack), or abandon it (nack with
//! requeue). A retry or dead letter whose copy is not stored nacks the original with
//! requeue, so it comes again rather than staying unacked.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use async_trait::async_trait;
use lapin::{
    options::{BasicAckOptions, BasicNackOptions},
    Channel,
};
use uuid::Uuid;

use super::{
    connection::Shared,
    consume::{ConsumeSpec, ConsumerState},
    publish::Route,
};
use crate::{BrokerError, Envelope, Result, Settle};

/// Settles one delivery on the channel it came from.
///
/// It acks with `Channel::basic_ack` rather than lapin's `Acker`: the acker goes through
/// lapin's internal RPC task and a spawned future before the frame is written, three
/// extra task hops per message on the hottest path. What the acker adds on top (refusing
/// once its channel died, being single-use) holds here anyway: this channel object is
/// never reused after its connection dies (a reconnect opens a new one, and a dead one
/// refuses every method), and [`Settle`] is called at most once.
pub(super) struct RabbitSettle {
    /// The envelope's id, for error messages and logs.
    pub(super) id: Uuid,
    /// The server's number for this delivery. It only means something on the channel
    /// it came from, hence the channel beside it.
    pub(super) delivery_tag: u64,
    /// The consumer channel the delivery came on; after a reconnect it is dead, and so
    /// every settle on it fails (the server has requeued the message already).
    pub(super) channel: Arc<Channel>,
    /// For the republished copies of `retry` and `dead_letter`, which go through the
    /// *current* publishing channel, whichever connection that is on now.
    pub(super) shared: Arc<Shared>,
    /// Which queue a retry goes back to and which `<group>.dlq` a dead letter goes to.
    pub(super) spec: Arc<ConsumeSpec>,
    /// Tells `abandon` whether the consumer is going away anyway.
    pub(super) state: Arc<ConsumerState>,
}

impl RabbitSettle {
    fn error(&self, detail: impl Into<String>) -> BrokerError {
        BrokerError::Settle {
            id: self.id,
            detail: detail.into(),
        }
    }

    async fn ack_original(&self) -> Result<()> {
        self.channel
            .basic_ack(self.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(|error| {
                // A closed channel (connection lost, consumer dropped) is the usual reason:
                // the server has put the message back already and delivers it again.
                self.error(format!(
                    "basic.ack failed, the broker will deliver the message again: {error}"
                ))
            })
    }

    /// Sends the copy to `queue` and waits for its confirm. If the copy did not make it,
    /// the original is handed back to the queue (nack with requeue) before the error is
    /// returned: it is then delivered again, instead of sitting unacked on this channel
    /// until the consumer goes away.
    async fn republish(&self, envelope: Envelope, queue: &str) -> Result<()> {
        let published = self
            .shared
            .publish_confirmed(std::slice::from_ref(&envelope), Route::Queue(queue))
            .await;
        let Err(error) = published else {
            return Ok(());
        };
        let requeued = self
            .channel
            .basic_nack(
                self.delivery_tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await;
        let then = match requeued {
            Ok(()) => "the original goes back to the queue".to_owned(),
            // Its channel is gone, which has put it back already.
            Err(nack_error) => format!("the original is requeued with its channel ({nack_error})"),
        };
        Err(self.error(format!("republishing to `{queue}` failed, {then}: {error}")))
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.ack_original().await
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
        // The delay is spent holding the original unacked: it counts against the prefetch,
        // and a lost connection meanwhile gets it redelivered rather than lost.
        tokio::time::sleep(delay).await;
        // The copy first, then the ack: a crash in between duplicates, never loses.
        self.republish(envelope, &self.spec.queue).await?;
        self.ack_original().await
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()> {
        // Same order as `retry`: the copy in `<group>.dlq` is confirmed before the ack.
        self.republish(envelope, &self.spec.dead_letter_queue)
            .await?;
        self.ack_original().await
    }

    fn abandon(self: Box<Self>) {
        if self.state.stopping.load(Ordering::Acquire) {
            // The consumer's channel is closing, which requeues this delivery anyway; a
            // nack now could only get it redelivered to the consumer that is going away.
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to nack from (dropped during shutdown): the channel closing with
            // the connection requeues it.
            return;
        };
        // Spawned: `abandon` runs from `Drop` of the delivery, which cannot await.
        runtime.spawn(async move {
            let nacked = self
                .channel
                .basic_nack(
                    self.delivery_tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await;
            if let Err(error) = nacked {
                tracing::debug!(
                    id = %self.id,
                    %error,
                    "requeueing an abandoned delivery failed; its channel closing requeues it"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lapin::options::QueueDeleteOptions;
    use orderflow_kit::testenv;

    use crate::{
        rabbitmq::RabbitBroker, Broker, BrokerError, Envelope, Publisher, Subscriber, Subscription,
    };

    /// Against a real RabbitMQ: when the copy a dead letter sends to `<group>.dlq` cannot
    /// be stored (the queue was deleted behind the consumer's back), `dead_letter` fails
    /// and the original comes back to the group instead of staying unacked for good.
    #[tokio::test]
    async fn a_dead_letter_that_cannot_be_stored_gives_the_original_back() {
        let Some(url) = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") else {
            return;
        };
        let broker = RabbitBroker::connect(&url).await.unwrap();
        let run = uuid::Uuid::now_v7().simple();
        let topic = format!("undeletable-{run}");
        let group = format!("no-dlq-{run}");
        let mut deliveries = broker
            .subscribe(Subscription::new(&group, [&topic]))
            .await
            .unwrap();
        let live = broker.shared.current().unwrap();
        let operator = live.connection.create_channel().await.unwrap();
        operator
            .queue_delete(
                format!("{group}.dlq").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .unwrap();

        let sent = Envelope::new(&topic, "k", "cannot be dead-lettered");
        broker.publish(sent.clone()).await.unwrap();
        let first = deliveries
            .next_within(Duration::from_secs(10))
            .await
            .expect("the delivery");
        let error = first.dead_letter("no use").await.unwrap_err();
        assert!(
            matches!(&error, BrokerError::Settle { detail, .. } if detail.contains("does not exist")),
            "{error:?}"
        );
        let again = deliveries
            .next_within(Duration::from_secs(10))
            .await
            .expect("the original is delivered again");
        assert_eq!(again.envelope().id, sent.id);
        again.ack().await.unwrap();
        broker.close().await.unwrap();
    }
}
