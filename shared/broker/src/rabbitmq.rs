//! The RabbitMQ backend, through lapin 4 on tokio.
//!
//! ## Topology (declared idempotently; `docs/events.md` is the wire-level description)
//!
//! ```text
//!   publish(topic) ──► exchange `orderflow` (topic, durable)
//!                           │ binding: routing key = topic, one per subscribed topic
//!                           ▼
//!                      queue `<group>` (durable, classic)
//!                           │ x-dead-letter-exchange    = orderflow.dlx
//!                           │ x-dead-letter-routing-key = <group>.dlq
//!                           ▼
//!                      exchange `orderflow.dlx` (direct, durable)
//!                           │ binding: routing key = <group>.dlq
//!                           ▼
//!                      queue `<group>.dlq` (durable)
//! ```
//!
//! - **One queue per consumer group.** Every group bound to a topic gets its own copy of
//!   each message (fan-out, contract point 2); the consumers of one group compete on that
//!   queue. A classic queue with a single consumer delivers in publish order (point 4).
//! - **Publisher confirms.** The publishing channel is in confirm mode: `publish` returns
//!   once the broker has acked the message, i.e. once it is stored (persistent message,
//!   durable queue). `publish_all` writes the whole batch, then awaits the confirms
//!   together, so a batch costs one round trip, not one per message.
//! - **Retry by republish.** RabbitMQ has no "redeliver later with a changed header": a
//!   nack with requeue puts the message back unchanged and at once. So a retry waits for
//!   its delay, republishes the envelope (attempt header raised) straight to the group
//!   queue through the default exchange with a confirm, and only then acks the original.
//!   A crash in between leaves a duplicate (same envelope id, consumers deduplicate),
//!   never a loss. The topic travels in the `message-topic` header on that copy, because
//!   its routing key is now the queue name.
//! - **Dead letters.** [`Delivery::dead_letter`] republishes the envelope (reason headers
//!   set) to `<group>.dlq` with a confirm, then acks the original. The dead-letter
//!   exchange on the group queue is for what the *server* dead-letters: messages this
//!   backend cannot even turn into an [`Envelope`] (no or bad `message_id`, …) are
//!   rejected without requeue and land in `<group>.dlq` through it, and so would expired
//!   messages or a length limit set by an operator policy.
//! - **Reconnection (point 7) is ours, not lapin's.** lapin 4 has an `auto_recover` mode,
//!   but its recent changelog is a run of recovery fixes (qos not reapplied until 4.12.1,
//!   acks of old channels until 4.12.3), and it replays consumers as it recorded them,
//!   which does not fit consumers that come and go with their [`Deliveries`]. Instead a
//!   supervisor task watches the connection, reconnects with backoff and publishes the new
//!   connection on a `watch` channel; each subscription's task re-declares and
//!   re-consumes on it, feeding the *same* [`Deliveries`]. Deliveries from the dead
//!   channel can no longer be acked (their [`Delivery::ack`] fails with
//!   [`BrokerError::Settle`]); the server has already put them back in the queue.
//! - **Backlog** is the queue's *ready* message count (passive `queue.declare`): messages
//!   delivered to a consumer and not yet acked are not counted.
//!
//! [`Delivery::dead_letter`]: crate::Delivery::dead_letter
//! [`Delivery::ack`]: crate::Delivery::ack

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{FutureExt, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind,
    ExchangeKind, PublisherConfirm,
};
use tokio::sync::{mpsc, watch, Notify};
use uuid::Uuid;

use crate::{
    headers, Backend, Broker, BrokerError, Capabilities, Deliveries, Delivery, Envelope, Publisher,
    Result, Settle, Subscriber, Subscription,
};

/// The topic exchange every event is published to.
pub const EXCHANGE: &str = "orderflow";
/// The direct exchange that routes server-side dead letters to `<group>.dlq`.
pub const DEAD_LETTER_EXCHANGE: &str = "orderflow.dlx";

const BACKEND: &str = "rabbitmq";
const CONTENT_TYPE: &str = "application/json";
/// AMQP delivery mode 2: the broker writes the message to disk (with a durable queue).
const PERSISTENT: u8 = 2;
/// How often the supervisor looks at the connection's state when nobody nudges it.
const SUPERVISOR_TICK: Duration = Duration::from_millis(200);
const REPLY_SUCCESS: u16 = 200;
/// Prefetch of a dead-letter consumer (the default prefetch of a [`Subscription`]).
const DEAD_LETTER_PREFETCH: u16 = 64;
/// How long one attempt to connect (TCP, AMQP handshake, channel, declarations) may take:
/// a peer that accepts nothing must not stall the reconnect loop forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Closes the server-side connections whose client-provided name is `name` (test helper
/// for contract point 7): `rabbitmqctl list_connections pid client_properties`, then
/// `rabbitmqctl close_connection <pid> "orderflow test: staged outage"` for each match.
/// Returns how many were closed.
pub async fn close_connections_for_test(name: &str) -> Result<usize> {
    let failed = |detail: String| BrokerError::Connect {
        backend: BACKEND,
        address: "rabbitmqctl".into(),
        detail,
    };
    let listing = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .map_err(|error| failed(format!("cannot run rabbitmqctl: {error}")))?;
    if !listing.status.success() {
        return Err(failed(format!(
            "rabbitmqctl list_connections failed: {}",
            String::from_utf8_lossy(&listing.stderr).trim()
        )));
    }
    let listing = String::from_utf8_lossy(&listing.stdout);
    // One line per connection: the pid, a tab, client_properties as an Erlang term in
    // which the name is a quoted string: `…{"connection_name","orderflow-…"}…` (3.10;
    // `user_provided_name` as a column only exists from 3.11 on). The name holds a UUID,
    // so a quoted match cannot hit another connection.
    let quoted = format!("\"{name}\"");
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains("connection_name") && line.contains(&quoted))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let mut closed = 0;
    for pid in pids {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "orderflow test: staged outage"])
            .output()
            .await
            .map_err(|error| failed(format!("cannot run rabbitmqctl: {error}")))?;
        if output.status.success() {
            closed += 1;
        } else {
            return Err(failed(format!(
                "rabbitmqctl close_connection {pid} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(closed)
}

/// The RabbitMQ backend: one connection (re-established after failures), one publishing
/// channel in confirm mode, one channel per consumer.
pub struct RabbitBroker {
    shared: Arc<Shared>,
}

/// State shared by the broker handle, the supervisor, the consumer tasks and the settle
/// handles of deliveries in flight.
struct Shared {
    url: String,
    /// The URL without credentials, for error messages.
    address: String,
    connection_name: String,
    /// The current connection; `None` while reconnecting or after `close`.
    live: watch::Sender<Option<Arc<Live>>>,
    /// Set once by `close`.
    shutdown: watch::Sender<bool>,
    /// Wakes the supervisor early when someone saw the connection fail.
    nudge: Arc<Notify>,
    generation: AtomicU64,
}

/// One established connection and its publishing channel.
struct Live {
    generation: u64,
    connection: Connection,
    publisher: Channel,
}

impl RabbitBroker {
    /// Connects to `url` (`amqp://user:pass@host:5672/%2f`), opens the publishing channel
    /// in confirm mode, declares the two exchanges and starts the reconnecting supervisor.
    pub async fn connect(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|error| BrokerError::InvalidUrl {
            url: redact(url),
            reason: error.to_string(),
        })?;
        let address = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5672)
        );
        let (live, _) = watch::channel(None);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            address,
            connection_name: format!("orderflow-{}", Uuid::now_v7()),
            live,
            shutdown,
            nudge: Arc::new(Notify::new()),
            generation: AtomicU64::new(0),
        });
        let first = shared
            .open()
            .await
            .map_err(|error| shared.connect_error(error))?;
        shared.live.send_replace(Some(Arc::new(first)));
        tokio::spawn(supervise(Arc::downgrade(&shared)));
        Ok(RabbitBroker { shared })
    }

    /// The client-provided connection name the server shows (`orderflow-<uuid>`), kept
    /// across reconnections.
    pub fn connection_name(&self) -> &str {
        &self.shared.connection_name
    }

    async fn start_consumer(&self, spec: ConsumeSpec) -> Result<Deliveries> {
        let spec = Arc::new(spec);
        let subscribe_error = |detail: String| BrokerError::Subscribe {
            group: spec.group.clone(),
            detail,
        };
        let live = self.shared.current_or(subscribe_error)?;
        let (channel, consumer) = open_consumer(&live, &spec)
            .await
            .map_err(|error| subscribe_error(error.to_string()))?;
        let (sender, receiver) = mpsc::channel(usize::from(spec.prefetch.max(1)));
        let state = Arc::new(ConsumerState::default());
        tokio::spawn(consume(
            self.shared.clone(),
            spec,
            state.clone(),
            sender,
            live,
            channel,
            consumer,
        ));
        Ok(Deliveries::new(receiver, Box::new(ConsumerGuard { state })))
    }
}

impl Shared {
    /// Opens a connection and its publishing channel, and declares the exchanges.
    async fn open(&self) -> std::result::Result<Live, String> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.open_once()).await {
            Ok(opened) => opened.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
    }

    async fn open_once(&self) -> lapin::Result<Live> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let connection = Connection::connect(&self.url, properties).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_exchanges(&publisher).await?;
        Ok(Live {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            connection,
            publisher,
        })
    }

    fn connect_error(&self, detail: impl ToString) -> BrokerError {
        BrokerError::Connect {
            backend: BACKEND,
            address: self.address.clone(),
            detail: detail.to_string(),
        }
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The live connection, or why there is none.
    fn current(&self) -> Result<Arc<Live>> {
        if self.is_shut_down() {
            return Err(BrokerError::Closed);
        }
        self.live
            .borrow()
            .clone()
            .ok_or_else(|| BrokerError::Connect {
                backend: BACKEND,
                address: self.address.clone(),
                detail: "connection lost, reconnecting".into(),
            })
    }

    /// [`Shared::current`] for declaring, consuming and counting: `Closed` stays `Closed`,
    /// anything else is wrapped into the operation's own error.
    fn current_or(&self, wrap: impl FnOnce(String) -> BrokerError) -> Result<Arc<Live>> {
        self.current().map_err(|error| match error {
            BrokerError::Closed => BrokerError::Closed,
            other => wrap(other.to_string()),
        })
    }

    /// A lapin call failed: if the connection is the reason, have the supervisor look now
    /// instead of at its next tick.
    fn saw_failure(&self, live: &Live) {
        if !live.connection.status().connected() {
            self.nudge.notify_one();
        }
    }

    /// Publishes envelopes and awaits all their confirms. The batch is written first and
    /// the confirms awaited afterwards, so their round trips overlap.
    async fn publish_confirmed(&self, envelopes: &[Envelope], route: Route<'_>) -> Result<()> {
        let fail = |envelope: &Envelope, detail: String| BrokerError::Publish {
            topic: envelope.topic.clone(),
            detail,
        };
        let Some(first) = envelopes.first() else {
            return Ok(());
        };
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
            let properties = properties_of(envelope, matches!(route, Route::Queue(_)))
                .map_err(|detail| fail(envelope, detail))?;
            let mut write = Box::pin(live.publisher.basic_publish(
                exchange.clone(),
                routing_key,
                options,
                &envelope.payload,
                properties,
            ));
            let queued = match write.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(written) => Some(written),
                Poll::Pending => None,
            };
            writes.push((queued, write));
        }
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
        for (confirm, envelope) in confirms.into_iter().zip(envelopes) {
            match confirm.await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                Ok(Confirmation::Ack(Some(returned))) => {
                    return Err(fail(
                        envelope,
                        format!(
                            "returned by the broker: {} {}",
                            returned.reply_code, returned.reply_text
                        ),
                    ))
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(fail(envelope, "the broker nacked the message".into()))
                }
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
enum Route<'a> {
    /// Exchange `orderflow`, routing key = the envelope's topic.
    Topic,
    /// Straight to one queue through the default exchange (retries, dead letters).
    Queue(&'a str),
}

/// Watches the connection; when it is gone, reconnects with backoff and publishes the new
/// one. Holds only a weak reference so that the broker, its consumers and settle handles
/// decide how long the connection lives.
async fn supervise(shared: Weak<Shared>) {
    let (mut shutdown, nudge) = match shared.upgrade() {
        Some(shared) => (shared.shutdown.subscribe(), shared.nudge.clone()),
        None => return,
    };
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|closed| *closed) => return,
            _ = tokio::time::sleep(SUPERVISOR_TICK) => {}
            _ = nudge.notified() => {}
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let alive = strong
            .live
            .borrow()
            .as_ref()
            .is_some_and(|live| live.connection.status().connected());
        if alive || strong.is_shut_down() {
            continue;
        }
        strong.live.send_replace(None);
        tracing::warn!(
            connection = %strong.connection_name,
            address = %strong.address,
            "RabbitMQ connection lost; reconnecting"
        );
        drop(strong);
        let mut attempt = 0;
        loop {
            // Upgraded per attempt: once the broker and everything using it are dropped,
            // there is nothing left to reconnect for.
            let Some(strong) = shared.upgrade() else {
                return;
            };
            if strong.is_shut_down() {
                return;
            }
            attempt += 1;
            match strong.open().await {
                Ok(live) => {
                    tracing::info!(
                        connection = %strong.connection_name,
                        generation = live.generation,
                        attempt,
                        "RabbitMQ connection re-established"
                    );
                    if strong.is_shut_down() {
                        let _ = live.connection.close(REPLY_SUCCESS, "OK".into()).await;
                        return;
                    }
                    strong.live.send_replace(Some(Arc::new(live)));
                    break;
                }
                Err(error) => {
                    let delay = reconnect_backoff(attempt);
                    tracing::warn!(
                        connection = %strong.connection_name,
                        %error,
                        attempt,
                        retry_in = ?delay,
                        "reconnecting to RabbitMQ failed"
                    );
                    drop(strong);
                    tokio::select! {
                        _ = shutdown.wait_for(|closed| *closed) => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// 100 ms doubling, capped at 5 s.
fn reconnect_backoff(attempt: u32) -> Duration {
    let millis = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    Duration::from_millis(millis.min(5_000))
}

async fn declare_exchanges(channel: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
}

/// The queue names of a group, checked to fit AMQP short strings.
struct GroupNames {
    queue: ShortString,
    dead_letters: ShortString,
    topics: Vec<ShortString>,
}

impl GroupNames {
    fn new(group: &str, topics: &[String]) -> std::result::Result<Self, String> {
        Ok(GroupNames {
            queue: short(group)?,
            dead_letters: short(&dead_letter_queue(group))?,
            topics: topics
                .iter()
                .map(|topic| short(topic))
                .collect::<std::result::Result<_, _>>()?,
        })
    }
}

fn dead_letter_queue(group: &str) -> String {
    orderflow_events::topics::dead_letter_of(group)
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the exchanges, `<group>.dlq` and its binding, then `<group>` with its
/// dead-letter arguments and one binding per topic. Returns the group queue's ready
/// message count.
async fn declare_group(channel: &Channel, names: &GroupNames) -> lapin::Result<u32> {
    declare_dead_letter_queue(channel, names).await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(names.dead_letters.as_str().into()),
    );
    let queue = channel
        .queue_declare(names.queue.clone(), durable_queue(), arguments)
        .await?;
    for topic in &names.topics {
        channel
            .queue_bind(
                names.queue.clone(),
                EXCHANGE.into(),
                topic.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue.message_count())
}

async fn declare_dead_letter_queue(channel: &Channel, names: &GroupNames) -> lapin::Result<()> {
    declare_exchanges(channel).await?;
    channel
        .queue_declare(
            names.dead_letters.clone(),
            durable_queue(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.dead_letters.clone(),
            DEAD_LETTER_EXCHANGE.into(),
            names.dead_letters.clone(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Runs `work` on a channel of its own and closes it afterwards. Declarations get their
/// own channel because a failed one (a passive declare of a missing queue, arguments
/// that differ from an existing queue's) closes the channel it ran on; the publishing
/// channel and its confirms must not go with it.
async fn on_own_channel<T, F, Fut>(live: &Live, work: F) -> lapin::Result<T>
where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = lapin::Result<T>>,
{
    let channel = live.connection.create_channel().await?;
    let result = work(channel.clone()).await;
    if channel.status().connected() {
        let _ = channel.close(REPLY_SUCCESS, "OK".into()).await;
    }
    result
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// What one consumer task consumes.
struct ConsumeSpec {
    /// The consumer group (handed to every [`Delivery`]).
    group: String,
    /// The queue consumed: `<group>`, or `<group>.dlq` for dead letters.
    queue: String,
    /// `<group>.dlq`.
    dead_letter_queue: String,
    names: GroupNames,
    prefetch: u16,
    /// Consuming the dead-letter queue rather than the group queue.
    dead_letters: bool,
}

/// Opens a channel, (re-)declares what the consumer needs, sets the prefetch and starts
/// consuming with manual acks.
async fn open_consumer(live: &Live, spec: &ConsumeSpec) -> lapin::Result<(Channel, Consumer)> {
    let channel = live.connection.create_channel().await?;
    let opened = async {
        if spec.dead_letters {
            declare_dead_letter_queue(&channel, &spec.names).await?;
        } else {
            declare_group(&channel, &spec.names).await?;
        }
        channel
            .basic_qos(spec.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let queue = if spec.dead_letters {
            spec.names.dead_letters.clone()
        } else {
            spec.names.queue.clone()
        };
        channel
            .basic_consume(
                queue,
                format!("orderflow-{}", Uuid::now_v7().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }
    .await;
    match opened {
        Ok(consumer) => Ok((channel, consumer)),
        Err(error) => {
            if channel.status().connected() {
                let _ = channel.close(REPLY_SUCCESS, "OK".into()).await;
            }
            Err(error)
        }
    }
}

/// Shared between a consumer task, its [`Deliveries`] guard and the settle handles.
#[derive(Default)]
struct ConsumerState {
    /// The [`Deliveries`] was dropped: the channel is about to close, which requeues
    /// every unacked delivery in order, so dropped deliveries need no nack of their own.
    stopping: AtomicBool,
}

/// Dropped with the [`Deliveries`]; the consumer task sees the receiver go and closes the
/// channel.
struct ConsumerGuard {
    state: Arc<ConsumerState>,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::Release);
    }
}

/// Why a consumer stopped forwarding.
enum Stop {
    /// The [`Deliveries`] was dropped.
    Dropped,
    /// `close` was called on the broker.
    Shutdown,
    /// The consumer stream ended: channel or connection lost, or the server cancelled.
    Lost(Option<lapin::Error>),
}

/// One subscription's task: forwards deliveries into the [`Deliveries`] channel and,
/// whenever the consumer is lost, consumes again on the next connection.
async fn consume(
    shared: Arc<Shared>,
    spec: Arc<ConsumeSpec>,
    state: Arc<ConsumerState>,
    sender: mpsc::Sender<Delivery>,
    mut live: Arc<Live>,
    channel: Channel,
    mut consumer: Consumer,
) {
    // Shared with the settle handles, which ack on it: one reference count per delivery
    // instead of a clone of the whole channel.
    let mut channel = Arc::new(channel);
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let stop = forward(
            &shared,
            &spec,
            &state,
            &channel,
            &sender,
            &mut shutdown,
            &mut consumer,
        )
        .await;
        match stop {
            Stop::Dropped => {
                // Closing the channel hands every unacked delivery back to the queue, in
                // queue order, for the group's next consumer.
                if channel.status().connected() {
                    let _ = channel
                        .close(REPLY_SUCCESS, "consumer dropped".into())
                        .await;
                }
                return;
            }
            Stop::Shutdown => return,
            Stop::Lost(error) => {
                let reason =
                    error.map_or_else(|| "cancelled".to_owned(), |error| error.to_string());
                tracing::warn!(
                    group = %spec.group,
                    queue = %spec.queue,
                    %reason,
                    "RabbitMQ consumer lost; consuming again once connected"
                );
                shared.saw_failure(&live);
                if live.connection.status().connected() {
                    // Only this consumer went (the server cancelled it, e.g. its queue was
                    // deleted): pause before declaring and consuming again, so that
                    // something that keeps cancelling it cannot make this loop spin.
                    tokio::select! {
                        _ = sender.closed() => return,
                        _ = shutdown.wait_for(|closed| *closed) => return,
                        _ = tokio::time::sleep(reconnect_backoff(1)) => {}
                    }
                }
            }
        }
        let mut attempt = 0;
        loop {
            let Some(next) = next_live(&shared, &sender, &mut shutdown).await else {
                return;
            };
            match open_consumer(&next, &spec).await {
                Ok((new_channel, new_consumer)) => {
                    tracing::info!(
                        group = %spec.group,
                        queue = %spec.queue,
                        generation = next.generation,
                        "RabbitMQ consumer resumed"
                    );
                    live = next;
                    channel = Arc::new(new_channel);
                    consumer = new_consumer;
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    let delay = reconnect_backoff(attempt);
                    tracing::warn!(
                        group = %spec.group,
                        queue = %spec.queue,
                        %error,
                        retry_in = ?delay,
                        "consuming again failed"
                    );
                    shared.saw_failure(&next);
                    tokio::select! {
                        _ = sender.closed() => return,
                        _ = shutdown.wait_for(|closed| *closed) => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// Waits until there is a connected connection; `None` if the subscription or the
/// broker ended meanwhile.
async fn next_live(
    shared: &Shared,
    sender: &mpsc::Sender<Delivery>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Arc<Live>> {
    let mut changes = shared.live.subscribe();
    loop {
        let current = changes.borrow_and_update().clone();
        if let Some(live) = current {
            if live.connection.status().connected() {
                return Some(live);
            }
            shared.nudge.notify_one();
        }
        tokio::select! {
            changed = changes.changed() => changed.ok()?,
            _ = sender.closed() => return None,
            _ = shutdown.wait_for(|closed| *closed) => return None,
            // The supervisor replaces a dead connection within a tick or two; looking
            // again now and then covers a connection that died after being published.
            _ = tokio::time::sleep(SUPERVISOR_TICK) => {}
        }
    }
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
async fn forward(
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
        let permits = tokio::select! {
            biased;
            permits = sender.reserve_many(batch) => match permits {
                Ok(permits) => permits,
                Err(_) => return Stop::Dropped,
            },
            stop = &mut stopped => return stop,
        };
        let mut waited = false;
        for permit in permits {
            let next = if waited {
                match consumer.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            } else {
                waited = true;
                tokio::select! {
                    biased;
                    next = consumer.next() => next,
                    stop = &mut stopped => return stop,
                }
            };
            match next {
                Some(Ok(raw)) => hand_over(shared, spec, state, channel, raw, permit),
                Some(Err(error)) => return Stop::Lost(Some(error)),
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

/// Settles one delivery on the channel it came from.
///
/// It acks with `Channel::basic_ack` rather than lapin's `Acker`: the acker goes through
/// lapin's internal RPC task and a spawned future before the frame is written, three
/// extra task hops per message on the hottest path. What the acker adds on top (refusing
/// once its channel died, being single-use) holds here anyway: this channel object is
/// never reused after its connection dies (a reconnect opens a new one, and a dead one
/// refuses every method), and [`Settle`] is called at most once.
struct RabbitSettle {
    id: Uuid,
    delivery_tag: u64,
    channel: Arc<Channel>,
    shared: Arc<Shared>,
    spec: Arc<ConsumeSpec>,
    state: Arc<ConsumerState>,
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

    async fn republish(&self, envelope: Envelope, queue: &str) -> Result<()> {
        self.shared
            .publish_confirmed(std::slice::from_ref(&envelope), Route::Queue(queue))
            .await
            .map_err(|error| self.error(format!("republishing to `{queue}` failed: {error}")))
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.ack_original().await
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
        tokio::time::sleep(delay).await;
        // The copy first, then the ack: a crash in between duplicates, never loses.
        self.republish(envelope, &self.spec.queue).await?;
        self.ack_original().await
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()> {
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

/// An AMQP short string (at most 255 bytes), or why not.
fn short(value: &str) -> std::result::Result<ShortString, String> {
    ShortString::try_new(value).map_err(|error| format!("`{value}`: {error}"))
}

/// The AMQP properties of an envelope, as `docs/events.md` describes them. With
/// `keep_topic` (a copy sent straight to a queue, whose routing key is then the queue
/// name) the topic travels in the `message-topic` header.
fn properties_of(
    envelope: &Envelope,
    keep_topic: bool,
) -> std::result::Result<BasicProperties, String> {
    let mut table = BTreeMap::new();
    for (name, value) in &envelope.headers {
        table.insert(
            short(name)?,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    table.insert(
        ShortString::from(headers::MESSAGE_KEY),
        AMQPValue::LongString(LongString::from(envelope.key.as_bytes())),
    );
    table.insert(
        ShortString::from(headers::PUBLISHED_AT),
        AMQPValue::LongString(LongString::from(
            envelope
                .published_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )),
    );
    if keep_topic {
        table
            .entry(ShortString::from(headers::MESSAGE_TOPIC))
            .or_insert_with(|| AMQPValue::LongString(LongString::from(envelope.topic.as_bytes())));
    }
    Ok(BasicProperties::default()
        .with_message_id(ShortString::from(
            envelope
                .id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()) as &str,
        ))
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from(CONTENT_TYPE))
        .with_timestamp(u64::try_from(envelope.published_at.timestamp()).unwrap_or(0))
        .with_headers(FieldTable::from(table)))
}

/// A header value as a string; `None` for values that have no string form (tables and
/// arrays such as the server's `x-death`).
fn header_text(name: &str, value: &AMQPValue) -> std::result::Result<Option<String>, String> {
    let not_utf8 = |_| format!("header `{name}` is not UTF-8");
    Ok(Some(match value {
        AMQPValue::LongString(text) => {
            String::from_utf8(text.as_bytes().to_vec()).map_err(not_utf8)?
        }
        AMQPValue::ShortString(text) => text.as_str().to_owned(),
        AMQPValue::Boolean(value) => value.to_string(),
        AMQPValue::ShortShortInt(value) => value.to_string(),
        AMQPValue::ShortShortUInt(value) => value.to_string(),
        AMQPValue::ShortInt(value) => value.to_string(),
        AMQPValue::ShortUInt(value) => value.to_string(),
        AMQPValue::LongInt(value) => value.to_string(),
        AMQPValue::LongUInt(value) => value.to_string(),
        AMQPValue::LongLongInt(value) => value.to_string(),
        AMQPValue::Timestamp(value) => value.to_string(),
        AMQPValue::Float(value) => value.to_string(),
        AMQPValue::Double(value) => value.to_string(),
        _ => return Ok(None),
    }))
}

/// Turns a delivery into an envelope, or says why it cannot be one.
///
/// - `id` from the `message_id` property (required: without it nobody can deduplicate);
/// - `key` from the `message-key` header (empty if absent);
/// - `published_at` from the `published-at` header, else the `timestamp` property;
/// - `topic`: the routing key when published to `orderflow`; for a copy sent straight to
///   a queue (retry, dead letter), the `message-topic` header;
/// - `headers`: the other headers as strings. `message-topic` stays only on dead letters
///   (where it is part of the documented format); on a retried copy it was transport.
fn envelope_of(
    raw: &lapin::message::Delivery,
    payload: Bytes,
) -> std::result::Result<Envelope, String> {
    let id = match raw.properties.message_id() {
        Some(id) => Uuid::parse_str(id.as_str())
            .map_err(|error| format!("message_id `{id}` is not a UUID: {error}"))?,
        None => return Err("no message_id property".into()),
    };
    // The two transport headers are read in place: this runs for every delivery, and an
    // envelope without other headers then needs no map allocation at all.
    let mut header_map = BTreeMap::new();
    let mut key = None;
    let mut published_at = None;
    if let Some(table) = raw.properties.headers() {
        for (name, value) in table {
            match name.as_str() {
                headers::MESSAGE_KEY => key = header_text(headers::MESSAGE_KEY, value)?,
                headers::PUBLISHED_AT => {
                    let text = match value {
                        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
                        AMQPValue::ShortString(text) => Some(text.as_str()),
                        _ => None,
                    }
                    .ok_or("the published-at header is not a string")?;
                    published_at = Some(
                        DateTime::parse_from_rfc3339(text)
                            .map_err(|error| {
                                format!("published-at `{text}` is not RFC 3339: {error}")
                            })?
                            .with_timezone(&Utc),
                    );
                }
                other => {
                    if let Some(text) = header_text(other, value)? {
                        header_map.insert(other.to_owned(), text);
                    }
                }
            }
        }
    }
    let key = key.unwrap_or_default();
    let published_at = match published_at {
        Some(published_at) => published_at,
        None => match raw.properties.timestamp() {
            Some(seconds) => i64::try_from(*seconds)
                .ok()
                .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
                .ok_or_else(|| format!("timestamp {seconds} is out of range"))?,
            None => return Err("neither a published-at header nor a timestamp property".into()),
        },
    };
    let topic = if raw.exchange.as_str() == EXCHANGE {
        raw.routing_key.as_str().to_owned()
    } else {
        let dead_letter = header_map.contains_key(headers::DEAD_LETTER_REASON);
        let carried = if dead_letter {
            header_map.get(headers::MESSAGE_TOPIC).cloned()
        } else {
            header_map.remove(headers::MESSAGE_TOPIC)
        };
        carried.unwrap_or_else(|| raw.routing_key.as_str().to_owned())
    };
    Ok(Envelope {
        id,
        topic,
        key,
        headers: header_map,
        payload,
        published_at,
    })
}

/// Envelopes on a dead-letter queue: what [`envelope_of`] gives, and for what the
/// server dead-lettered because it was malformed, the best envelope that can be made
/// (a fresh id if it has none), with the reason in [`headers::DEAD_LETTER_REASON`].
/// Rejecting those again would drop them: a dead-letter queue has no dead-letter queue.
fn envelope_of_dead_letter(raw: &lapin::message::Delivery, payload: Bytes) -> Envelope {
    match envelope_of(raw, payload.clone()) {
        Ok(envelope) => envelope,
        Err(reason) => {
            let mut header_map = BTreeMap::new();
            if let Some(table) = raw.properties.headers() {
                for (name, value) in table {
                    if let Ok(Some(text)) = header_text(name.as_str(), value) {
                        header_map.insert(name.as_str().to_owned(), text);
                    }
                }
            }
            let key = header_map.remove(headers::MESSAGE_KEY).unwrap_or_default();
            header_map
                .entry(headers::DEAD_LETTER_REASON.to_owned())
                .or_insert_with(|| format!("malformed message: {reason}"));
            let id = raw
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| Uuid::parse_str(id.as_str()).ok())
                .unwrap_or_else(Uuid::now_v7);
            let topic = header_map
                .get(headers::MESSAGE_TOPIC)
                .cloned()
                .or_else(|| first_death_routing_key(raw))
                .unwrap_or_else(|| raw.routing_key.as_str().to_owned());
            Envelope {
                id,
                topic,
                key,
                headers: header_map,
                payload,
                published_at: Utc::now(),
            }
        }
    }
}

/// For a message the server dead-lettered: the routing key it had before, i.e. its
/// topic (`x-death[0].routing-keys[0]`; the dead-letter routing key replaced it).
fn first_death_routing_key(raw: &lapin::message::Delivery) -> Option<String> {
    let headers = raw.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    let AMQPValue::FieldArray(keys) = death.inner().get("routing-keys")? else {
        return None;
    };
    match keys.as_slice().first()? {
        AMQPValue::LongString(key) => String::from_utf8(key.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(key) => Some(key.as_str().to_owned()),
        _ => None,
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
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

#[async_trait]
impl Subscriber for RabbitBroker {
    async fn declare(&self, subscription: &Subscription) -> Result<()> {
        let error = |detail: String| BrokerError::Subscribe {
            group: subscription.group.clone(),
            detail,
        };
        let names = GroupNames::new(&subscription.group, &subscription.topics).map_err(error)?;
        let live = self.shared.current_or(error)?;
        on_own_channel(&live, |channel| async move {
            declare_group(&channel, &names).await
        })
        .await
        .map_err(|failure| {
            self.shared.saw_failure(&live);
            error(failure.to_string())
        })?;
        Ok(())
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<Deliveries> {
        let names =
            GroupNames::new(&subscription.group, &subscription.topics).map_err(|detail| {
                BrokerError::Subscribe {
                    group: subscription.group.clone(),
                    detail,
                }
            })?;
        self.start_consumer(ConsumeSpec {
            queue: subscription.group.clone(),
            dead_letter_queue: dead_letter_queue(&subscription.group),
            group: subscription.group,
            names,
            prefetch: subscription.prefetch,
            dead_letters: false,
        })
        .await
    }

    async fn subscribe_dead_letters(&self, group: &str) -> Result<Deliveries> {
        let names = GroupNames::new(group, &[]).map_err(|detail| BrokerError::Subscribe {
            group: group.to_owned(),
            detail,
        })?;
        self.start_consumer(ConsumeSpec {
            group: group.to_owned(),
            queue: dead_letter_queue(group),
            dead_letter_queue: dead_letter_queue(group),
            names,
            prefetch: DEAD_LETTER_PREFETCH,
            dead_letters: true,
        })
        .await
    }

    /// The group queue's *ready* messages (passive `queue.declare`); deliveries held by
    /// consumers and not yet acked are not counted. Declares the group first if its queue
    /// does not exist yet.
    async fn backlog(&self, subscription: &Subscription) -> Result<u64> {
        let error = |detail: String| BrokerError::Backlog {
            group: subscription.group.clone(),
            detail,
        };
        let names = GroupNames::new(&subscription.group, &subscription.topics).map_err(error)?;
        let live = self.shared.current_or(error)?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = names.queue.clone();
        let counted = on_own_channel(&live, |channel| async move {
            channel
                .queue_declare(queue, passive, FieldTable::default())
                .await
        })
        .await;
        let count = match counted {
            Ok(queue) => queue.message_count(),
            Err(failure) if is_not_found(&failure) => on_own_channel(&live, |channel| async move {
                declare_group(&channel, &names).await
            })
            .await
            .map_err(|failure| error(failure.to_string()))?,
            Err(failure) => {
                self.shared.saw_failure(&live);
                return Err(error(failure.to_string()));
            }
        };
        Ok(u64::from(count))
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    fn backend(&self) -> Backend {
        Backend::RabbitMq
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            broker_restart: true,
            fault_injection: false,
        }
    }

    /// Stops the supervisor and the consumers, closes the publishing channel and the
    /// connection. Unacked deliveries go back to their queues.
    async fn close(&self) -> Result<()> {
        self.shared.shutdown.send_replace(true);
        let Some(live) = self.shared.live.send_replace(None) else {
            return Ok(());
        };
        if live.publisher.status().connected() {
            let _ = live.publisher.close(REPLY_SUCCESS, "OK".into()).await;
        }
        if live.connection.status().connected() {
            // lapin reports a consumer channel that was closing at the same moment as an
            // error of the whole close; the connection is closed (or dropped with `live`)
            // either way, and nothing is left for the caller to do about it.
            if let Err(error) = live.connection.close(REPLY_SUCCESS, "OK".into()).await {
                tracing::debug!(%error, "closing the RabbitMQ connection");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;

    fn delivered(
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> lapin::message::Delivery {
        let mut raw = lapin::message::Delivery::mock(
            1,
            exchange.into(),
            routing_key.into(),
            false,
            b"{}".to_vec(),
        );
        raw.properties = properties;
        raw
    }

    fn sample() -> Envelope {
        Envelope::new("order.placed", "order-1", "{}")
            .with_header(headers::CORRELATION_ID, "order-1")
            .with_header(headers::EVENT_TYPE, "OrderPlaced")
    }

    #[test]
    fn an_envelope_survives_the_wire() {
        let sent = sample();
        let properties = properties_of(&sent, false).unwrap();
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(sent.id.to_string().as_str())
        );
        let raw = delivered(EXCHANGE, &sent.topic, properties);
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        // published_at keeps its sub-second precision through the header.
        assert_eq!(received, sent);
    }

    #[test]
    fn a_retried_copy_gets_its_topic_back_and_no_transport_header() {
        let sent = sample().with_header(headers::ATTEMPT, "2");
        let raw = delivered("", "payment", properties_of(&sent, true).unwrap());
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        assert_eq!(received.topic, "order.placed");
        assert_eq!(received.header(headers::MESSAGE_TOPIC), None);
        assert_eq!(received, sent);
    }

    #[test]
    fn a_dead_letter_keeps_its_reason_and_topic_headers() {
        let sent = sample()
            .with_header(headers::DEAD_LETTER_REASON, "no")
            .with_header(headers::MESSAGE_TOPIC, "order.placed");
        let raw = delivered("", "payment.dlq", properties_of(&sent, true).unwrap());
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        assert_eq!(received, sent);
    }

    #[test]
    fn messages_without_a_usable_id_are_refused_not_panicked_on() {
        let no_id = delivered(EXCHANGE, "order.placed", BasicProperties::default());
        assert!(envelope_of(&no_id, Bytes::new())
            .unwrap_err()
            .contains("message_id"));
        let bad_id = delivered(
            EXCHANGE,
            "order.placed",
            BasicProperties::default().with_message_id("42".into()),
        );
        assert!(envelope_of(&bad_id, Bytes::new())
            .unwrap_err()
            .contains("not a UUID"));
        let too_long = Envelope::new("t".repeat(300), "k", "");
        assert!(short(&too_long.topic).is_err());
        let long_header = sample().with_header(&"h".repeat(300), "v");
        assert!(properties_of(&long_header, false).is_err());
    }

    #[test]
    fn a_message_the_server_dead_lettered_is_still_readable_from_the_dlq() {
        let mut death = FieldTable::default();
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                "order.placed".into(),
            )])),
        );
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        table.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("rejected".into()),
        );
        let raw = delivered(
            DEAD_LETTER_EXCHANGE,
            "payment.dlq",
            BasicProperties::default().with_headers(table),
        );
        let envelope = envelope_of_dead_letter(&raw, Bytes::from_static(b"?"));
        assert_eq!(envelope.topic, "order.placed");
        assert!(envelope
            .header(headers::DEAD_LETTER_REASON)
            .unwrap()
            .starts_with("malformed message: no message_id"));
        assert_eq!(envelope.header("x-first-death-reason"), Some("rejected"));
        assert_eq!(envelope.payload, Bytes::from_static(b"?"));
    }

    #[test]
    fn foreign_header_types_are_read_as_text() {
        let sent = sample();
        let mut properties = properties_of(&sent, false).unwrap();
        let mut table = properties.headers().clone().unwrap();
        table.insert("schema-version".into(), AMQPValue::LongInt(1));
        table.insert("flag".into(), AMQPValue::Boolean(true));
        properties = properties.with_headers(table);
        let raw = delivered(EXCHANGE, &sent.topic, properties);
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        assert_eq!(received.header(headers::SCHEMA_VERSION), Some("1"));
        assert_eq!(received.header("flag"), Some("true"));
    }

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

        // A foreign producer that sets no message_id.
        let live = broker.shared.current().unwrap();
        live.publisher
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

    /// Against a real RabbitMQ: the connection is cut twice while a publisher and a
    /// consumer are busy; every message still arrives on the same `Deliveries` (some twice:
    /// deliveries in flight when the channel died come again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_publisher_and_consumer_survive_two_cuts() {
        let Ok(url) = std::env::var("ORDERFLOW_AMQP_URL") else {
            println!("ORDERFLOW_AMQP_URL not set; skipped");
            return;
        };
        let broker = Arc::new(RabbitBroker::connect(&url).await.unwrap());
        let run = Uuid::now_v7().simple();
        let topic = format!("cut-{run}");
        let mut deliveries = broker
            .subscribe(Subscription::new(format!("cut-{run}"), [&topic]).with_prefetch(16))
            .await
            .unwrap();
        let sent: Vec<Envelope> = (0..2_000)
            .map(|index| Envelope::new(&topic, format!("k{}", index % 7), index.to_string()))
            .collect();
        let expected: std::collections::HashSet<Uuid> = sent.iter().map(|e| e.id).collect();
        let publisher = {
            let broker = broker.clone();
            tokio::spawn(async move {
                for batch in sent.chunks(50) {
                    // Publishing again after an error is safe: ids are stable.
                    while broker.publish_all(batch.to_vec()).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        };
        let mut received = std::collections::HashSet::new();
        let (mut cuts, mut stale_acks_refused) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !expected.is_subset(&received) {
            let delivery = tokio::time::timeout_at(deadline, deliveries.next())
                .await
                .unwrap_or_else(|_| panic!("{} of 2000 after 90 s", received.len()))
                .expect("the subscription survives");
            received.insert(delivery.envelope().id);
            if (cuts == 0 && received.len() >= 400) || (cuts == 1 && received.len() >= 1_200) {
                cuts += 1;
                let closed = close_connections_for_test(broker.connection_name())
                    .await
                    .unwrap();
                assert_eq!(closed, 1, "cut {cuts}");
                // Held across the cut: its channel is gone, so the ack must say so.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let error = delivery.ack().await.unwrap_err();
                assert!(matches!(error, BrokerError::Settle { .. }), "{error:?}");
                stale_acks_refused += 1;
            } else {
                let _ = delivery.ack().await;
            }
        }
        assert_eq!((cuts, stale_acks_refused), (2, 2));
        publisher.await.unwrap();
        broker.close().await.unwrap();
    }
}
