//! Publishing with publisher confirms: [`Shared::publish_confirmed`] writes a whole batch,
//! then awaits its confirms, for events (exchange `orderflow`) and for the copies a retry
//! or a dead letter sends straight to one queue.

use std::{
    future::Future,
    task::{Context, Poll, Waker},
};

use async_trait::async_trait;
use lapin::{options::BasicPublishOptions, types::ShortString, Confirmation, PublisherConfirm};

use super::{
    connection::{RabbitBroker, Shared},
    topology::EXCHANGE,
    wire::{properties_of, short},
};
use crate::{BrokerError, Envelope, Publisher, Result};

impl Shared {
    /// Publishes envelopes and awaits all their confirms. The batch is written first and
    /// the confirms awaited afterwards, so their round trips overlap.
    pub(super) async fn publish_confirmed(
        &self,
        envelopes: &[Envelope],
        route: Route<'_>,
    ) -> Result<()> {
        let fail = |envelope: &Envelope, detail: String| BrokerError::Publish {
            topic: envelope.topic.clone(),
            detail,
        };
        let Some(first) = envelopes.first() else {
            return Ok(());
        };
        // One `Live` for the whole batch: its confirms belong to its publishing channel.
        let live = self.current_or(|detail| fail(first, detail))?;
        let (exchange, options) = match route {
            Route::Topic => (EXCHANGE, BasicPublishOptions::default()),
            // A copy for one named queue: if that queue is gone, the broker must hand the
            // message back (and the original stays unacked) rather than drop it. Events, on
            // the other hand, may go to a topic nobody is bound to yet: not an error.
            Route::Queue(_) => (
                "",
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
            ),
        };
        let exchange = ShortString::from(exchange);
        // Every message is queued before any is waited for. lapin's `basic_publish` numbers
        // the message for confirms and queues its frames when first polled, and only then
        // waits for its I/O thread to have written them; awaiting each call in turn would
        // cost a wake-up of that thread and of this task per message. So each call is
        // polled once here, in order (which keeps the batch's order on the wire), and
        // awaited below.
        let mut writes = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let routing_key = match route {
                Route::Topic => short(&envelope.topic),
                Route::Queue(queue) => short(queue),
            }
            .map_err(|detail| fail(envelope, detail))?;
            // An envelope that cannot be encoded fails the batch here; those before it may
            // already be on their way (publishing the batch again is safe).
            let properties = properties_of(envelope, matches!(route, Route::Queue(_)))
                .map_err(|detail| fail(envelope, detail))?;
            let mut write = Box::pin(live.publisher.basic_publish(
                exchange.clone(),
                routing_key,
                options,
                &envelope.payload,
                properties,
            ));
            // A no-op waker: this first poll only has to queue the frames. If it is not
            // done yet, the `.await` below polls again with this task's real waker.
            let queued = match write.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(written) => Some(written),
                Poll::Pending => None,
            };
            writes.push((queued, write));
        }
        // Wait until each message is written. What a write yields is its pending confirm
        // (the sequence number is already assigned). A failed write means the channel or
        // connection is gone: nudge the supervisor and give up on the batch.
        let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(envelopes.len());
        for ((queued, write), envelope) in writes.into_iter().zip(envelopes) {
            let written = match queued {
                Some(written) => written,
                None => write.await,
            };
            confirms.push(written.map_err(|error| {
                self.saw_failure(&live);
                fail(envelope, error.to_string())
            })?);
        }
        // The server's answer for each message. Awaiting them in turn costs nothing extra:
        // the batch waits for its slowest confirm either way.
        for (confirm, envelope) in confirms.into_iter().zip(envelopes) {
            match confirm.await {
                // Stored. (`NotRequested` only comes from a channel without confirm mode,
                // which this one is not.)
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                // A `mandatory` copy no queue took: the server sends it back
                // (`basic.return`), then acks it. Not stored, so an error.
                Ok(Confirmation::Ack(Some(returned))) => {
                    return Err(fail(
                        envelope,
                        format!(
                            "returned by the broker: {} {}",
                            returned.reply_code, returned.reply_text
                        ),
                    ))
                }
                // The server refused responsibility (an internal error on its side).
                Ok(Confirmation::Nack(_)) => {
                    return Err(fail(envelope, "the broker nacked the message".into()))
                }
                // The channel died before the answer came: the outcome is unknown.
                Err(error) => {
                    self.saw_failure(&live);
                    return Err(fail(
                        envelope,
                        format!("no confirm (the message may or may not be stored): {error}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a publish goes.
#[derive(Clone, Copy)]
pub(super) enum Route<'a> {
    /// Exchange `orderflow`, routing key = the envelope's topic.
    Topic,
    /// Straight to one queue through the default exchange (retries, dead letters).
    Queue(&'a str),
}

#[async_trait]
impl Publisher for RabbitBroker {
    async fn publish(&self, envelope: Envelope) -> Result<()> {
        self.shared
            .publish_confirmed(std::slice::from_ref(&envelope), Route::Topic)
            .await
    }

    async fn publish_all(&self, envelopes: Vec<Envelope>) -> Result<()> {
        self.shared
            .publish_confirmed(&envelopes, Route::Topic)
            .await
    }
}
