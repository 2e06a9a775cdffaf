//! From lapin's consumer stream into the [`Deliveries`] channel: [`forward`] moves
//! deliveries in batches, [`hand_over`] turns each into a [`Delivery`] with its settle
//! handle, or has the server dead-letter what is no envelope.
//!
//! [`Deliveries`]: crate::Deliveries

use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use lapin::{options::BasicRejectOptions, Channel, Consumer};
use tokio::sync::{mpsc, watch};

use super::{
    connection::Shared,
    consume::{ConsumeSpec, ConsumerState},
    settle::RabbitSettle,
    wire::{envelope_of, envelope_of_dead_letter},
};
use crate::Delivery;

/// Why a consumer stopped forwarding.
pub(super) enum Stop {
    /// The [`Deliveries`](crate::Deliveries) was dropped.
    Dropped,
    /// `close` was called on the broker.
    Shutdown,
    /// The consumer stream ended: channel or connection lost, or the server cancelled.
    Lost(Option<lapin::Error>),
}

/// Forwards deliveries until the subscription is dropped, the broker closed or the
/// consumer lost.
///
/// It moves deliveries in batches: it waits until the [`Deliveries`] channel has room
/// for a quarter of the prefetch, waits for one delivery, then takes whatever else lapin
/// has already buffered without waiting. A busy handler thus wakes this task once per
/// batch instead of once per message (the server sends one delivery per ack once the
/// prefetch window is full). An idle consumer still gets each message the moment it
/// arrives.
///
/// [`Deliveries`]: crate::Deliveries
pub(super) async fn forward(
    shared: &Arc<Shared>,
    spec: &Arc<ConsumeSpec>,
    state: &Arc<ConsumerState>,
    channel: &Arc<Channel>,
    sender: &mpsc::Sender<Delivery>,
    shutdown: &mut watch::Receiver<bool>,
    consumer: &mut Consumer,
) -> Stop {
    // Built once: re-creating these wait futures per message would register and
    // deregister a waiter (a lock) every time.
    let stopped = async {
        tokio::select! {
            _ = sender.closed() => Stop::Dropped,
            _ = shutdown.wait_for(|closed| *closed) => Stop::Shutdown,
        }
    };
    tokio::pin!(stopped);
    let batch = (sender.max_capacity() / 4).max(1);
    loop {
        // Step 1: room for a batch in the `Deliveries` channel. A permit reserves one
        // slot, so sending later can neither wait nor fail.
        let permits = tokio::select! {
            // `biased`: look at the room first; the stop arm is for when there is none.
            biased;
            // The application took enough deliveries out: go on.
            permits = sender.reserve_many(batch) => match permits {
                Ok(permits) => permits,
                // The receiver is gone: the `Deliveries` was dropped.
                Err(_) => return Stop::Dropped,
            },
            // Dropped or closed while the application was busy with the ones it has.
            stop = &mut stopped => return stop,
        };
        let mut waited = false;
        for permit in permits {
            let next = if waited {
                // Step 3: the rest of the batch, only what lapin has buffered already.
                // Nothing there: `break` drops the unused permits (their slots free up)
                // and the outer loop reserves again.
                match consumer.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            } else {
                // Step 2: wait for the first delivery of the batch.
                waited = true;
                tokio::select! {
                    biased;
                    // A delivery (or the end of the stream) arrived.
                    next = consumer.next() => next,
                    // Dropped or closed while the queue was idle.
                    stop = &mut stopped => return stop,
                }
            };
            match next {
                Some(Ok(raw)) => hand_over(shared, spec, state, channel, raw, permit),
                // lapin reports the channel or connection as gone.
                Some(Err(error)) => return Stop::Lost(Some(error)),
                // The stream ended: the server cancelled the consumer (queue deleted),
                // or the channel closed.
                None => return Stop::Lost(None),
            }
        }
    }
}

/// Turns one lapin delivery into a [`Delivery`] and sends it, or has the server
/// dead-letter it if it is no envelope.
fn hand_over(
    shared: &Arc<Shared>,
    spec: &Arc<ConsumeSpec>,
    state: &Arc<ConsumerState>,
    channel: &Arc<Channel>,
    mut raw: lapin::message::Delivery,
    permit: mpsc::Permit<'_, Delivery>,
) {
    // The body is moved out, not copied: `Bytes` takes over the `Vec`'s allocation.
    let payload = Bytes::from(std::mem::take(&mut raw.data));
    let decoded = if spec.dead_letters {
        Ok(envelope_of_dead_letter(&raw, payload))
    } else {
        envelope_of(&raw, payload)
    };
    match decoded {
        Ok(envelope) => {
            let settle = RabbitSettle {
                id: envelope.id,
                delivery_tag: raw.delivery_tag,
                channel: channel.clone(),
                shared: shared.clone(),
                spec: spec.clone(),
                state: state.clone(),
            };
            permit.send(Delivery::new(
                envelope,
                spec.group.as_str(),
                Box::new(settle),
            ));
        }
        Err(reason) => {
            // Cannot be handed to a handler and cannot be deduplicated: let the server
            // dead-letter it (x-dead-letter-exchange → `<group>.dlq`) and go on.
            tracing::warn!(
                group = %spec.group,
                queue = %spec.queue,
                routing_key = %raw.routing_key,
                %reason,
                "malformed message dead-lettered"
            );
            // Spawned: the forwarding loop goes on at once instead of waiting for this
            // frame to be written.
            let (channel, delivery_tag) = (channel.clone(), raw.delivery_tag);
            tokio::spawn(async move {
                let rejected = channel
                    .basic_reject(delivery_tag, BasicRejectOptions { requeue: false })
                    .await;
                if let Err(error) = rejected {
                    tracing::warn!(
                        %error,
                        "rejecting a malformed message failed; the server will redeliver it"
                    );
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lapin::{
        options::{BasicPublishOptions, ConfirmSelectOptions},
        BasicProperties,
    };
    use uuid::Uuid;

    use super::*;
    use crate::{
        headers,
        rabbitmq::{wire::PERSISTENT, RabbitBroker, EXCHANGE},
        Broker, Envelope, Publisher, Subscriber, Subscription,
    };

    /// Against a real RabbitMQ (`ORDERFLOW_AMQP_URL`, skipped without it): a message that
    /// is no envelope at all goes to `<group>.dlq` through the server's dead-lettering,
    /// and the consumer goes on with the next one.
    #[tokio::test]
    async fn a_message_that_is_no_envelope_is_dead_lettered_by_the_server() {
        let Ok(url) = std::env::var("ORDERFLOW_AMQP_URL") else {
            println!("ORDERFLOW_AMQP_URL not set; skipped");
            return;
        };
        let broker = RabbitBroker::connect(&url).await.unwrap();
        let run = Uuid::now_v7().simple();
        let topic = format!("foreign-{run}");
        let group = format!("strict-{run}");
        let mut deliveries = broker
            .subscribe(Subscription::new(&group, [&topic]))
            .await
            .unwrap();

        // A foreign producer that sets no message_id, on a channel of its own (the
        // publishing channel belongs to its confirm task).
        let live = broker.shared.current().unwrap();
        let foreign = live.connection.create_channel().await.unwrap();
        foreign
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        foreign
            .basic_publish(
                EXCHANGE.into(),
                topic.as_str().into(),
                BasicPublishOptions::default(),
                b"no id",
                BasicProperties::default().with_delivery_mode(PERSISTENT),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let good = Envelope::new(&topic, "k", "fine");
        broker.publish(good.clone()).await.unwrap();

        let delivery = deliveries
            .next_within(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(delivery.envelope().id, good.id);
        delivery.ack().await.unwrap();

        let mut dead = broker.subscribe_dead_letters(&group).await.unwrap();
        let dead_letter = dead.next_within(Duration::from_secs(10)).await.unwrap();
        assert_eq!(dead_letter.envelope().topic, topic);
        assert_eq!(dead_letter.envelope().payload, Bytes::from_static(b"no id"));
        assert!(dead_letter
            .envelope()
            .header(headers::DEAD_LETTER_REASON)
            .unwrap()
            .contains("no message_id"));
        dead_letter.ack().await.unwrap();
        broker.close().await.unwrap();
    }
}
