//! The consuming side: [`Subscriber`] for [`RabbitBroker`], and the task behind each
//! [`Deliveries`] that consumes a queue and, whenever the consumer is lost, consumes again
//! on the next connection, feeding the same [`Deliveries`].
//!
//! A graceful stop ([`Deliveries::stop_intake`]) cancels the consumer (`basic.cancel`)
//! but keeps its channel: the server sends nothing more, what it sent before its
//! `cancel-ok` is still handed over, and the deliveries being handled are acked on the
//! channel they came on. Only when the [`Deliveries`] is dropped does the channel close,
//! handing back whatever was left unsettled.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
    Channel, Consumer,
};
use tokio::sync::{mpsc, watch, Notify};
use uuid::Uuid;

use super::{
    connection::{reconnect_backoff, Live, RabbitBroker, Shared, SUPERVISOR_TICK},
    forward::{forward, hand_over, Stop},
    topology::{
        dead_letter_queue, declare_dead_letter_queue, declare_group, is_not_found, on_own_channel,
        GroupNames,
    },
    REPLY_SUCCESS,
};
use crate::{BrokerError, Deliveries, Delivery, Intake, Result, Subscriber, Subscription};

/// Prefetch of a dead-letter consumer (the default prefetch of a [`Subscription`]).
const DEAD_LETTER_PREFETCH: u16 = 64;

impl RabbitBroker {
    /// Opens the first consumer right here, so that a subscription that cannot start
    /// fails `subscribe` itself, then hands it to a [`consume`] task for good.
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
        // As deep as the prefetch: the server never has more than that many deliveries
        // unacked on this consumer, so the task never waits on a full channel for long.
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

/// What one consumer task consumes.
pub(super) struct ConsumeSpec {
    /// The consumer group (handed to every [`Delivery`]).
    pub(super) group: String,
    /// The queue consumed: `<group>`, or `<group>.dlq` for dead letters.
    pub(super) queue: String,
    /// `<group>.dlq`: where [`Delivery::dead_letter`] sends its copy (for a dead-letter
    /// consumer, that is its own queue).
    ///
    /// [`Delivery::dead_letter`]: crate::Delivery::dead_letter
    pub(super) dead_letter_queue: String,
    /// The names checked once, at subscribe time; every re-declaration after a
    /// reconnect uses them again.
    pub(super) names: GroupNames,
    /// `basic.qos`: how many unacked deliveries the server sends this consumer at most.
    pub(super) prefetch: u16,
    /// Consuming the dead-letter queue rather than the group queue.
    pub(super) dead_letters: bool,
}

/// Opens a channel, (re-)declares what the consumer needs, sets the prefetch and starts
/// consuming with manual acks.
async fn open_consumer(live: &Live, spec: &ConsumeSpec) -> lapin::Result<(Channel, Consumer)> {
    let channel = live.connection.create_channel().await?;
    let opened = async {
        // Declared every time, reconnects included: a restarted server may have lost
        // the queue, and consuming a missing queue fails.
        if spec.dead_letters {
            declare_dead_letter_queue(&channel, &spec.names).await?;
        } else {
            declare_group(&channel, &spec.names).await?;
        }
        // At least 1: a prefetch of 0 means "no limit" in AMQP.
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
            // A half-opened channel would otherwise stay open until the connection goes.
            if channel.status().connected() {
                let _ = channel.close(REPLY_SUCCESS, "OK".into()).await;
            }
            Err(error)
        }
    }
}

/// Shared between a consumer task, its [`Deliveries`] guard and the settle handles.
#[derive(Default)]
pub(super) struct ConsumerState {
    /// The [`Deliveries`] was dropped: the channel is about to close, which requeues
    /// every unacked delivery in order, so dropped deliveries need no nack of their own.
    pub(super) stopping: AtomicBool,
    /// [`Deliveries::stop_intake`] was called: cancel the consumer, consume no more (not
    /// even after a reconnect), keep the channel for acks.
    intake_stopped: AtomicBool,
    /// Wakes the consumer task when either flag is set.
    changed: Notify,
}

/// Resolves once [`Deliveries::stop_intake`] has been called.
pub(super) async fn intake_stopped(state: &ConsumerState) {
    loop {
        // Created before the flag is read, so a `notify_waiters` in between reaches it.
        let changed = state.changed.notified();
        if state.intake_stopped.load(Ordering::Acquire) {
            return;
        }
        changed.await;
    }
}

/// Resolves once the [`Deliveries`] has been dropped.
async fn dropped(state: &ConsumerState) {
    loop {
        let changed = state.changed.notified();
        if state.stopping.load(Ordering::Acquire) {
            return;
        }
        changed.await;
    }
}

/// The [`Deliveries`]'s [`Intake`]: stops the intake on request; dropped with the
/// [`Deliveries`], which the consumer task sees (the receiver goes) and closes the channel.
struct ConsumerGuard {
    state: Arc<ConsumerState>,
}

impl Intake for ConsumerGuard {
    fn stop_intake(&self) {
        self.state.intake_stopped.store(true, Ordering::Release);
        self.state.changed.notify_waiters();
    }
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        // Release pairs with the Acquire in `RabbitSettle::abandon`.
        self.state.stopping.store(true, Ordering::Release);
        self.state.changed.notify_waiters();
    }
}

/// The graceful end of one consumer, after [`Deliveries::stop_intake`]: `basic.cancel`,
/// then what the server sent before confirming it is handed over too, then the
/// [`Deliveries`] stream ends. The channel stays open until the [`Deliveries`] is dropped,
/// so the handlers still running ack on it; closed before that, the server would hand
/// their messages to another consumer of the group while they are still being handled.
async fn finish(
    shared: &Arc<Shared>,
    spec: &Arc<ConsumeSpec>,
    state: &Arc<ConsumerState>,
    channel: &Arc<Channel>,
    sender: mpsc::Sender<Delivery>,
    shutdown: &mut watch::Receiver<bool>,
    mut consumer: Consumer,
) {
    let cancelled = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    match cancelled {
        // After `cancel-ok` lapin's stream yields what it had buffered, then ends.
        Ok(()) => loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.wait_for(|closed| *closed) => break,
            };
            let Some(Ok(raw)) = next else { break };
            let permit = tokio::select! {
                permit = sender.reserve() => permit,
                _ = shutdown.wait_for(|closed| *closed) => break,
            };
            // `Err`: the `Deliveries` is gone; the channel closes below.
            let Ok(permit) = permit else { break };
            hand_over(shared, spec, state, channel, raw, permit);
        },
        // The channel is gone already, and with it every unacked delivery went back.
        Err(error) => tracing::debug!(group = %spec.group, %error, "basic.cancel failed"),
    }
    // The stream ends for the application once it has taken what is in the channel.
    drop(sender);
    tokio::select! {
        () = dropped(state) => {}
        // `close` closes the connection, and every channel with it.
        _ = shutdown.wait_for(|closed| *closed) => return,
    }
    if channel.status().connected() {
        let _ = channel
            .close(REPLY_SUCCESS, "consumer stopped".into())
            .await;
    }
}

/// One subscription's task: forwards deliveries into the [`Deliveries`] channel and,
/// whenever the consumer is lost, consumes again on the next connection.
///
/// Each turn of the loop is one consumer's life: [`forward`] until it stops, then, if
/// the stop was a loss, wait for a connection and open a new consumer on it. The
/// `sender` (and so the [`Deliveries`] the application holds) stays the same throughout.
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
        // The hot part: runs as long as this consumer lives.
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
            // `close` closes the connection, and every channel with it.
            Stop::Shutdown => return,
            Stop::IntakeStopped => {
                finish(
                    &shared,
                    &spec,
                    &state,
                    &channel,
                    sender,
                    &mut shutdown,
                    consumer,
                )
                .await;
                return;
            }
            Stop::Lost(error) => {
                let reason =
                    error.map_or_else(|| "cancelled".to_owned(), |error| error.to_string());
                tracing::warn!(
                    group = %spec.group,
                    queue = %spec.queue,
                    %reason,
                    "RabbitMQ consumer lost; consuming again once connected"
                );
                // If the connection is what died, the supervisor should know now.
                shared.saw_failure(&live);
                if live.connection.status().connected() {
                    // Only this consumer went (the server cancelled it, e.g. its queue was
                    // deleted): pause before declaring and consuming again, so that
                    // something that keeps cancelling it cannot make this loop spin.
                    tokio::select! {
                        // The application dropped the `Deliveries` meanwhile.
                        _ = sender.closed() => return,
                        // Or stopped its intake: a stopping consumer does not come back.
                        () = intake_stopped(&state) => return,
                        // `close` was called meanwhile.
                        _ = shutdown.wait_for(|closed| *closed) => return,
                        _ = tokio::time::sleep(reconnect_backoff(1)) => {}
                    }
                }
            }
        }
        // Resume: find a connected connection, re-declare and consume on it. Deliveries
        // of the old channel still held by the application can no longer be acked; the
        // server has requeued them and sends them again on the new consumer.
        let mut attempt = 0;
        loop {
            // A consumer being stopped does not come back: its stream just ends.
            if state.intake_stopped.load(Ordering::Acquire) {
                return;
            }
            let Some(next) = next_live(&shared, &state, &sender, &mut shutdown).await else {
                return;
            };
            match open_consumer(&next, &spec).await {
                // The old `channel` is replaced, not reused: settle handles of old
                // deliveries keep their own reference to it, and acking there fails.
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
                    // Possibly the new connection died already: let the supervisor know.
                    shared.saw_failure(&next);
                    tokio::select! {
                        // The application dropped the `Deliveries` meanwhile.
                        _ = sender.closed() => return,
                        // Or stopped its intake: a stopping consumer does not come back.
                        () = intake_stopped(&state) => return,
                        // `close` was called meanwhile.
                        _ = shutdown.wait_for(|closed| *closed) => return,
                        // Backoff over: look for a connection and try again.
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// Waits until there is a connected connection; `None` if the subscription or the
/// broker ended meanwhile, or the intake was stopped.
async fn next_live(
    shared: &Shared,
    state: &ConsumerState,
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
            // Published but dead, and the supervisor may not have noticed yet.
            shared.nudge.notify_one();
        }
        tokio::select! {
            // The supervisor published a connection (or withdrew one): look again. An
            // error means the sender, i.e. the broker's shared state, is gone.
            changed = changes.changed() => changed.ok()?,
            // The application dropped the `Deliveries`, or stopped its intake.
            _ = sender.closed() => return None,
            () = intake_stopped(state) => return None,
            // `close` was called.
            _ = shutdown.wait_for(|closed| *closed) => return None,
            // The supervisor replaces a dead connection within a tick or two; looking
            // again now and then covers a connection that died after being published.
            _ = tokio::time::sleep(SUPERVISOR_TICK) => {}
        }
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
            // No queue yet: declare it (its count is then 0), so that what is published
            // from now on is kept for the group and counted.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lapin::{
        options::{BasicNackOptions, BasicPublishOptions, QueueDeleteOptions},
        types::AMQPValue,
        BasicProperties, Connection, ConnectionProperties,
    };

    use super::*;

    /// The experiment behind the poison-by-crash choice in `docs/events.md` (run with
    /// `--ignored` against a real RabbitMQ): what a quorum queue with `x-delivery-limit`
    /// does (1) with a message whose consumer's channel closes without settling it, as a
    /// crashed process's would, and (2) to the order of one key's messages after the
    /// first was given back. It prints what it saw and asserts what RabbitMQ 3.10.8 did,
    /// so a server that behaves otherwise shows up.
    #[tokio::test]
    #[ignore = "an experiment about quorum queues; run with --ignored"]
    async fn quorum_queue_delivery_limit_and_order_after_a_return() {
        let Some(url) = orderflow_kit::testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") else {
            return;
        };
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let run = Uuid::now_v7().simple();
        let (queue, dead) = (format!("quorum-{run}"), format!("quorum-{run}.dlq"));
        let setup = connection.create_channel().await.unwrap();
        setup.confirm_select(Default::default()).await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        setup
            .queue_declare(dead.as_str().into(), durable, FieldTable::default())
            .await
            .unwrap();
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(2));
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.as_str().into()),
        );
        setup
            .queue_declare(queue.as_str().into(), durable, arguments)
            .await
            .unwrap();
        let publish = |body: &'static str| {
            let setup = setup.clone();
            let queue = queue.clone();
            async move {
                setup
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        };
        // One consumer's life: a channel with prefetch 1, the first delivery, and then
        // `settle` decides what happens to it.
        let consume_one = |tag: &'static str| {
            let connection = &connection;
            let queue = queue.clone();
            async move {
                let channel = connection.create_channel().await.unwrap();
                channel
                    .basic_qos(1, BasicQosOptions::default())
                    .await
                    .unwrap();
                let mut consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        tag.into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                let delivery = tokio::time::timeout(Duration::from_secs(2), consumer.next())
                    .await
                    .ok()
                    .flatten()
                    .map(Result::unwrap);
                (channel, delivery)
            }
        };

        // (1) Channel-close returns: the consumer "crashes" with the message unacked.
        publish("poison").await;
        let mut deliveries_seen = 0;
        for _ in 0..5 {
            let (channel, delivery) = consume_one("crash").await;
            let Some(delivery) = delivery else { break };
            deliveries_seen += 1;
            let count = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
            println!(
                "delivery {deliveries_seen}: redelivered={} x-delivery-count={count:?}",
                delivery.redelivered
            );
            channel.close(200, "crash".into()).await.unwrap();
        }
        let dead_count = setup
            .queue_declare(
                dead.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        println!("after {deliveries_seen} deliveries ended by a closed channel: {dead_count} in the dead-letter queue");
        assert_eq!(
            (deliveries_seen, dead_count),
            (3, 1),
            "limit 2: delivered three times, then dead-lettered"
        );

        // (2) Order after a return: a1 a2 a3 of one key, a1 given back (nack, requeue).
        for body in ["a1", "a2", "a3"] {
            publish(body).await;
        }
        let (channel, first) = consume_one("order").await;
        let first = first.unwrap();
        assert_eq!(&first.data, b"a1");
        channel
            .basic_nack(
                first.delivery_tag,
                BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                },
            )
            .await
            .unwrap();
        channel.close(200, "done".into()).await.unwrap();
        let mut order = Vec::new();
        for _ in 0..3 {
            let (channel, next) = consume_one("order").await;
            let next = next.unwrap();
            order.push(String::from_utf8(next.data.clone()).unwrap());
            channel
                .basic_ack(next.delivery_tag, Default::default())
                .await
                .unwrap();
            channel.close(200, "done".into()).await.unwrap();
        }
        println!("order after a1 was given back: {order:?}");
        assert_eq!(order, ["a1", "a2", "a3"]);

        // (3) Bystanders: one consumer holds ten messages (prefetch 10) when it crashes,
        // three times. The delivery count is the queue's, per message, not the culprit's.
        let ten = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"];
        for body in ten {
            publish(body).await;
        }
        for _ in 0..3 {
            let channel = connection.create_channel().await.unwrap();
            channel
                .basic_qos(10, BasicQosOptions::default())
                .await
                .unwrap();
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "bystanders".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            for _ in 0..10 {
                tokio::time::timeout(Duration::from_secs(2), consumer.next())
                    .await
                    .expect("ten deliveries")
                    .unwrap()
                    .unwrap();
            }
            channel.close(200, "crash".into()).await.unwrap();
        }
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // The server dead-letters asynchronously after the channel is gone: look until
        // the count stops at ten, or for five seconds.
        let mut dead_now = dead_count;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while dead_now - dead_count < 10 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            dead_now = setup
                .queue_declare(dead.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap()
                .message_count();
        }
        println!(
            "after three crashes of a consumer holding ten: {} more in the dead-letter queue",
            dead_now - dead_count
        );
        assert_eq!(
            dead_now - dead_count,
            10,
            "every bystander is dead-lettered"
        );

        for name in [&queue, &dead] {
            let _ = setup
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "OK".into()).await;
    }
}
