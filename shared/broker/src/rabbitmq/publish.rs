//! Publishing: [`Publisher`] for [`RabbitBroker`], and [`Shared::publish_confirmed`]
//! behind it and behind the copies that retries and dead letters send straight to one
//! queue. Every message is `mandatory`, and a publish is `Ok` only for messages the
//! server confirmed *and* did not return: a message no queue took is
//! [`BrokerError::Unroutable`], never a success. The confirms themselves are read by
//! the publishing channel's task (`confirms.rs`).

use async_trait::async_trait;
use lapin::{options::BasicPublishOptions, types::ShortString, Channel, Connection};

use super::{
    confirms::{ConfirmTask, Outcome, Outgoing},
    connection::{RabbitBroker, Shared},
    topology::{declare_exchanges, EXCHANGE},
    wire::{properties_of, short},
};
use crate::{BrokerError, Envelope, Publisher, Result};

/// Every message asks the server to hand it back if no queue takes it: without
/// `mandatory` such a message is dropped and still acked, and `publish` would say `Ok`
/// for a message nobody will ever read.
const MANDATORY: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// The channel every publish goes through, in confirm mode, and the task that writes on
/// it and reads its confirms.
pub(super) struct PublishChannel {
    /// Kept for its status and for closing it; only the confirm task publishes on it.
    pub(super) channel: Channel,
    confirms: ConfirmTask,
}

impl PublishChannel {
    /// Opens a channel on `connection`, puts it in confirm mode and declares the
    /// exchanges on it.
    pub(super) async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        // Confirm mode: from now on the server acks every message published on this
        // channel once it has taken it, which is what `publish` waits for.
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        // Declared on every connection, not once: the server on the other end may be a
        // fresh one (a new container) without them, and publishing to a missing exchange
        // closes the channel.
        declare_exchanges(&channel).await?;
        Ok(PublishChannel {
            confirms: ConfirmTask::start(channel.clone()),
            channel,
        })
    }
}

impl Shared {
    /// Publishes envelopes and awaits the answer for each; `Ok` once every one is
    /// confirmed and none came back. The batch is handed to the confirm task whole and
    /// written in order, so the confirms' round trips overlap.
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
        // Encoded before anything is sent: an envelope that cannot be encoded fails the
        // batch with nothing of it on the wire.
        let mut messages = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let routing_key = match route {
                Route::Topic => short(&envelope.topic),
                Route::Queue(queue) => short(queue),
            }
            .map_err(|detail| fail(envelope, detail))?;
            let properties = properties_of(envelope, matches!(route, Route::Queue(_)))
                .map_err(|detail| fail(envelope, detail))?;
            messages.push(Outgoing {
                id: envelope.id,
                routing_key,
                properties,
                payload: envelope.payload.clone(),
            });
        }
        let exchange = ShortString::from(match route {
            Route::Topic => EXCHANGE,
            // The default exchange routes by queue name.
            Route::Queue(_) => "",
        });
        let live = self.current_or(|detail| fail(first, detail))?;
        let answer = live
            .publishing
            .confirms
            .publish(exchange, MANDATORY, messages);
        let outcomes = answer
            .await
            .map_err(|_| fail(first, "the publishing task stopped before answering".into()))?;
        // The first message that did not make it fails the batch (later ones may have).
        for (outcome, envelope) in outcomes.into_iter().zip(envelopes) {
            match outcome {
                Outcome::Stored => {}
                Outcome::Returned { code, text } => {
                    return Err(BrokerError::Unroutable {
                        topic: envelope.topic.clone(),
                        reason: match route {
                            Route::Topic => format!(
                                "no queue is bound to it, the broker returned the message \
                                 ({code} {text})"
                            ),
                            Route::Queue(queue) => format!(
                                "queue `{queue}` does not exist, the broker returned the \
                                 message ({code} {text})"
                            ),
                        },
                    });
                }
                // The server refused responsibility (an internal error on its side).
                Outcome::Nacked => {
                    return Err(fail(envelope, "the broker nacked the message".into()))
                }
                Outcome::NotSent(error) => {
                    self.saw_failure(&live);
                    return Err(fail(envelope, format!("not sent: {error}")));
                }
                Outcome::Unknown(error) => {
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
