//! Publishing: [`Publisher`] for [`RabbitBroker`], and [`Shared::publish_confirmed`]
//! behind it and behind the copies that retries and dead letters send straight to one
//! queue. Every message is `mandatory`, and a publish is `Ok` only for messages the
//! server confirmed *and* did not return: a message no queue took is
//! [`BrokerError::Unroutable`], never a success. The confirms themselves are read by
//! the publishing channel's task (`confirms.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use lapin::{options::BasicPublishOptions, types::ShortString, Channel, Connection};

use super::{
    confirms::{ConfirmTask, Outcome, Outgoing},
    connection::{Live, RabbitBroker, Shared},
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
/// it and reads its confirms. Replaced whole (channel and task) when the server closed
/// the channel.
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

impl Live {
    /// The publishing channel in use now.
    pub(super) fn publishing_channel(&self) -> Channel {
        self.current_publishing().channel.clone()
    }

    fn current_publishing(&self) -> Arc<PublishChannel> {
        self.publishing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The publishing channel to publish on: the current one, or, if the server has
    /// closed it (any channel-level error does: a publish to a missing exchange, a
    /// failed passive declare, a protocol error) while the connection is still up, a new
    /// one opened in its place. A lost connection is left to the supervisor, which
    /// replaces the whole [`Live`].
    async fn publishing(&self) -> std::result::Result<Arc<PublishChannel>, String> {
        let current = self.current_publishing();
        if current.channel.status().connected() || !self.connection.status().connected() {
            return Ok(current);
        }
        let _only_one = self.reopening.lock().await;
        // Someone else may have replaced it while this one waited for the lock.
        let current = self.current_publishing();
        if current.channel.status().connected() {
            return Ok(current);
        }
        let fresh = Arc::new(
            PublishChannel::open(&self.connection)
                .await
                .map_err(|error| format!("reopening the publishing channel failed: {error}"))?,
        );
        tracing::warn!(
            generation = self.generation,
            "the broker closed the publishing channel; publishing on a new one"
        );
        *self
            .publishing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        // The old one's confirm task ends once its last confirms (failed with the
        // channel) are answered.
        Ok(fresh)
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
        let answered = async {
            let publishing = live
                .publishing()
                .await
                .map_err(|detail| fail(first, detail))?;
            let answer = publishing.confirms.publish(exchange, MANDATORY, messages);
            answer
                .await
                .map_err(|_| fail(first, "the publishing task stopped before answering".into()))
        };
        // Bounded: a broker that blocks publishers (memory or disk alarm) stops reading
        // from the connection without closing it, and a stalled network looks the same.
        // Giving up waiting loses nothing: the confirm task still accounts for the
        // messages, and publishing them again is safe.
        let outcomes = match tokio::time::timeout(self.publish_timeout, answered).await {
            Ok(outcomes) => outcomes?,
            Err(_) => {
                let blocked = if live.connection.status().blocked() {
                    " (the broker has blocked this connection: a resource alarm)"
                } else {
                    ""
                };
                return Err(fail(
                    first,
                    format!(
                        "no confirm within {:?}{blocked}; the messages may or may not be stored",
                        self.publish_timeout
                    ),
                ));
            }
        };
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orderflow_kit::{testenv, wait};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        sync::watch,
    };

    use super::*;
    use crate::{Broker, Subscriber, Subscription};

    /// A loopback TCP proxy to `upstream` that can hold every byte in both directions:
    /// the connection stays open, but the broker's answers never arrive, as when the
    /// broker blocks its publishers or the network stalls.
    struct Proxy {
        port: u16,
        paused: watch::Sender<bool>,
    }

    impl Proxy {
        async fn start(upstream: String) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let (paused, _) = watch::channel(false);
            let pause = paused.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pipe(client_read, server_write, pause.subscribe()));
                    tokio::spawn(pipe(server_read, client_write, pause.subscribe()));
                }
            });
            Proxy { port, paused }
        }

        fn pause(&self, paused: bool) {
            self.paused.send_replace(paused);
        }
    }

    /// Copies `from` to `to`; what is read while paused is held until the pause ends.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut paused: watch::Receiver<bool>,
    ) {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if paused.wait_for(|paused| !*paused).await.is_err()
                || to.write_all(&buffer[..read]).await.is_err()
            {
                return;
            }
        }
    }

    /// Against a real RabbitMQ through a proxy that stops passing bytes: a publish whose
    /// confirm cannot come fails after the publish timeout (500 ms here) instead of
    /// waiting for ever, and publishing works again once bytes flow.
    #[tokio::test]
    async fn a_publish_without_an_answer_fails_after_the_publish_timeout() {
        let Some(url) = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") else {
            return;
        };
        let mut proxied = url::Url::parse(&url).unwrap();
        let upstream = format!(
            "{}:{}",
            proxied.host_str().unwrap(),
            proxied.port().unwrap_or(5672)
        );
        let proxy = Proxy::start(upstream).await;
        proxied.set_port(Some(proxy.port)).unwrap();
        proxied.set_query(Some("publish_timeout_ms=500"));
        let broker = RabbitBroker::connect(proxied.as_str()).await.unwrap();
        let run = uuid::Uuid::now_v7().simple();
        let topic = format!("stalled-{run}");
        let mut deliveries = broker
            .subscribe(Subscription::new(format!("patient-{run}"), [&topic]))
            .await
            .unwrap();

        proxy.pause(true);
        let stalled = Envelope::new(&topic, "k", "no answer");
        let outcome = tokio::time::timeout(Duration::from_secs(20), broker.publish(stalled))
            .await
            .expect("publish returns while the broker's answer is held");
        match outcome {
            Err(BrokerError::Publish { detail, .. }) => {
                assert!(detail.contains("500ms"), "{detail}")
            }
            other => panic!("a publish without a confirm: {other:?}"),
        }

        proxy.pause(false);
        let later = Envelope::new(&topic, "k", "answered");
        wait::until(
            "a publish to succeed once bytes flow again",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let (broker, later) = (&broker, later.clone());
                async move { broker.publish(later).await.ok() }
            },
        )
        .await
        .unwrap();
        // Both arrive: the held one was sent, its confirm was only late.
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let delivery = deliveries
                .next_within(Duration::from_secs(10))
                .await
                .expect("both messages");
            ids.push(delivery.envelope().id);
            delivery.ack().await.unwrap();
        }
        assert!(ids.contains(&later.id), "{ids:?}");
        broker.close().await.unwrap();
    }

    /// Against a real RabbitMQ: the server closes the publishing channel (a channel-level
    /// error) while the connection lives on; publishing works again without a reconnect.
    #[tokio::test]
    async fn a_publishing_channel_the_broker_closed_is_opened_again() {
        let Some(url) = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") else {
            return;
        };
        let broker = RabbitBroker::connect(&url).await.unwrap();
        let run = uuid::Uuid::now_v7().simple();
        let topic = format!("reopened-{run}");
        let mut deliveries = broker
            .subscribe(Subscription::new(format!("reopeners-{run}"), [&topic]))
            .await
            .unwrap();
        let generation = broker.shared.current().unwrap().generation;

        broker.break_publisher_channel_for_test().await.unwrap();
        let sent = Envelope::new(&topic, "k", "after the channel closed");
        wait::until(
            "a publish to succeed after the publishing channel was closed",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let (broker, sent) = (&broker, sent.clone());
                async move { broker.publish(sent).await.ok() }
            },
        )
        .await
        .unwrap();
        let delivery = deliveries
            .next_within(Duration::from_secs(10))
            .await
            .expect("the message published on the new channel");
        assert_eq!(delivery.envelope().id, sent.id);
        delivery.ack().await.unwrap();
        // The same connection: only the channel was replaced.
        assert_eq!(broker.shared.current().unwrap().generation, generation);
        broker.close().await.unwrap();
    }
}
