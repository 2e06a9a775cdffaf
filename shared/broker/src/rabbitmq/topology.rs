//! The topology this backend declares (see the diagram in the module doc): the two
//! exchanges, a group's queue with its dead-letter arguments and bindings, and
//! `<group>.dlq`. Every declaration is idempotent, so a consumer re-declares all it needs
//! each time it (re)connects.

use std::future::Future;

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable, ShortString},
    Channel, ErrorKind, ExchangeKind,
};

use super::{connection::Live, wire::short, REPLY_SUCCESS};

/// The topic exchange every event is published to.
pub const EXCHANGE: &str = "orderflow";
/// The direct exchange that routes server-side dead letters to `<group>.dlq`.
pub const DEAD_LETTER_EXCHANGE: &str = "orderflow.dlx";

/// Declares `orderflow` (topic) and `orderflow.dlx` (direct), both durable so that they
/// survive a broker restart.
pub(super) async fn declare_exchanges(channel: &Channel) -> lapin::Result<()> {
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
///
/// Checked once, when the subscription is made, so that a name too long for AMQP fails
/// `subscribe` with a clear error instead of every later declaration.
pub(super) struct GroupNames {
    /// `<group>`: the queue the group's consumers share.
    pub(super) queue: ShortString,
    /// `<group>.dlq`.
    pub(super) dead_letters: ShortString,
    /// The routing keys the group queue is bound with (one per topic).
    pub(super) topics: Vec<ShortString>,
}

impl GroupNames {
    pub(super) fn new(group: &str, topics: &[String]) -> std::result::Result<Self, String> {
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

/// `<group>.dlq`, named by `orderflow_events` so that every backend agrees on it.
pub(super) fn dead_letter_queue(group: &str) -> String {
    orderflow_events::topics::dead_letter_of(group)
}

/// Durable: the queue (and, with persistent messages, its content) survives a restart.
/// No `x-queue-type`, so a classic queue (the module doc says why).
fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the exchanges, `<group>.dlq` and its binding, then `<group>` with its
/// dead-letter arguments and one binding per topic. Returns the group queue's ready
/// message count.
pub(super) async fn declare_group(channel: &Channel, names: &GroupNames) -> lapin::Result<u32> {
    // `<group>.dlq` first: a message the server dead-letters from `<group>` is dropped if
    // nothing is bound to the dead-letter exchange under its routing key yet.
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

/// Declares the exchanges, `<group>.dlq` and its binding to `orderflow.dlx` (routing key
/// `<group>.dlq`, the group queue's `x-dead-letter-routing-key`).
pub(super) async fn declare_dead_letter_queue(
    channel: &Channel,
    names: &GroupNames,
) -> lapin::Result<()> {
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
pub(super) async fn on_own_channel<T, F, Fut>(live: &Live, work: F) -> lapin::Result<T>
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

/// The server answered `404 NOT_FOUND` (a passive declare of a queue that does not exist).
pub(super) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}
