//! # orderflow-broker
//!
//! One publish/subscribe abstraction, three backends. Services talk to [`Broker`] (a
//! [`Publisher`] and a [`Subscriber`]) and never to lapin or rdkafka directly, so the same
//! service code runs on:
//!
//! | URL | backend | file |
//! | --- | --- | --- |
//! | `memory://[name][?drop=0.05&duplicate=0.2&reorder=0.1&delay=0.1&seed=7]` | embedded broker with fault injection | `memory/` |
//! | `amqp://user:pass@host:5672/%2f` | RabbitMQ through lapin | `rabbitmq/` |
//! | `kafka://host:9092[,host:9093]` | Kafka (or tansu) through rdkafka | `kafka/` |
//!
//! ## The contract (what every backend guarantees; `tests/contract.rs` checks it on all three)
//!
//! 1. [`Publisher::publish`] returns `Ok` only once the broker has taken responsibility for
//!    the message (publisher confirm / acks=all / enqueued). [`Publisher::publish_all`]
//!    pipelines a batch: everything is sent first, then the confirms are awaited together.
//!    `Ok` also means the message is kept for someone: where a backend
//!    [refuses unroutable messages](Capabilities::refuses_unroutable) (RabbitMQ), a
//!    message for a topic no group is bound to fails with [`BrokerError::Unroutable`]
//!    instead of being dropped behind an `Ok`; on Kafka the topic itself keeps it.
//! 2. Every consumer group subscribed to a topic gets every message; the consumers inside
//!    one group compete for them.
//! 3. At-least-once: a [`Delivery`] that is not acked — the handler failed, the process died,
//!    the delivery was dropped — is delivered to the group again.
//! 4. Messages with the same key reach a group in publish order.
//! 5. [`Delivery::retry`] redelivers later with the attempt count raised;
//!    [`Delivery::dead_letter`] moves the message to `<group>.dlq` with the reason in the
//!    [`headers::DEAD_LETTER_REASON`] header, readable through
//!    [`Subscriber::subscribe_dead_letters`].
//! 6. [`Subscriber::backlog`] says how many messages a group has not yet acked.
//! 7. A broker restart or a cut connection is survived: the client reconnects and goes on.
//!
//! Where a backend truly cannot do something, it says so in its [`Capabilities`].
//!
//! Each backend is a folder whose `mod.rs` doc is its map. Beside them: `delivery.rs`
//! (a [`Delivery`] and its settlement), `error.rs` ([`BrokerError`]) and `backoff.rs` (the
//! backends' own reconnect and republish backoff).

use std::sync::Arc;

use async_trait::async_trait;
pub use orderflow_events::{headers, Envelope};

mod backoff;
mod delivery;
mod error;
pub mod kafka;
pub mod memory;
pub mod rabbitmq;

use backoff::retry_backoff;
pub use delivery::{Deliveries, Delivery, Settle};
pub use error::BrokerError;

/// Result with [`BrokerError`].
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// The sending half.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one message; `Ok` once the broker has taken responsibility for it.
    ///
    /// Concurrent calls are pipelined (each waits only for its own confirm), so many tasks
    /// publishing at once do not wait for each other's round trips.
    async fn publish(&self, envelope: Envelope) -> Result<()>;

    /// Publishes a batch: sends every message, then awaits all the confirms. `Ok` once
    /// every message is confirmed; on error, some messages may have been taken and others
    /// not (publishing again is safe: consumers deduplicate on the envelope id).
    async fn publish_all(&self, envelopes: Vec<Envelope>) -> Result<()>;
}

/// What a consumer group wants to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The consumer group (the service name in the order flow). Groups each get every
    /// message; consumers inside a group share them.
    pub group: String,
    /// The topics the group receives.
    pub topics: Vec<String>,
    /// How many unacked deliveries one consumer may hold at once (RabbitMQ prefetch; the
    /// channel capacity on the others). Bounds the work in flight.
    pub prefetch: u16,
}

impl Subscription {
    /// A subscription with the default prefetch of 64.
    pub fn new<T: Into<String>>(
        group: impl Into<String>,
        topics: impl IntoIterator<Item = T>,
    ) -> Self {
        Subscription {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            prefetch: 64,
        }
    }

    /// Sets the prefetch (at least 1).
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }
}

/// The receiving half.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Creates what the group needs on the broker (queue and bindings, topics, the group's
    /// queue) without consuming, so messages published from now on are kept for the group.
    async fn declare(&self, subscription: &Subscription) -> Result<()>;

    /// Declares, then starts consuming. Messages published after this returns reach the
    /// group. Dropping the returned [`Deliveries`] stops the consumer; whatever it had not
    /// acked is delivered again to the group.
    async fn subscribe(&self, subscription: Subscription) -> Result<Deliveries>;

    /// Consumes the group's dead-letter queue (`<group>.dlq`).
    async fn subscribe_dead_letters(&self, group: &str) -> Result<Deliveries>;

    /// Messages the group has not acked yet: waiting plus in flight (memory), ready in the
    /// queue (RabbitMQ), consumer lag summed over partitions (Kafka).
    async fn backlog(&self, subscription: &Subscription) -> Result<u64>;
}

/// Which backend a [`Broker`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The embedded broker.
    Memory,
    /// RabbitMQ through lapin.
    RabbitMq,
    /// Kafka (or a Kafka-protocol broker) through rdkafka.
    Kafka,
}

impl Backend {
    /// Short lowercase name: `memory`, `rabbitmq`, `kafka`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::RabbitMq => "rabbitmq",
            Backend::Kafka => "kafka",
        }
    }
}

/// What a backend can and cannot do; the contract suite reads this instead of skipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The broker runs in another process that can be cut off and come back (false for
    /// the embedded broker: it lives and dies with the process using it).
    pub broker_restart: bool,
    /// Faults (drop, duplicate, reorder, delay) can be injected on purpose.
    pub fault_injection: bool,
    /// A publish that no group will ever see (no group is bound to its topic) fails with
    /// [`BrokerError::Unroutable`] instead of returning `Ok` (RabbitMQ, memory). False
    /// for Kafka: the topic itself keeps the record, and a group that starts reading it
    /// later still finds it, so nothing is lost by accepting it.
    pub refuses_unroutable: bool,
}

/// A connected broker: publisher and subscriber in one handle. Cheap to share as
/// `Arc<dyn Broker>`.
#[async_trait]
pub trait Broker: Publisher + Subscriber {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Flushes what is pending and closes connections. Deliveries not yet acked will be
    /// delivered again.
    async fn close(&self) -> Result<()>;
}

/// Connects to the broker a URL names: `memory://…`, `amqp://…` or `kafka://…`.
pub async fn connect(url: &str) -> Result<Arc<dyn Broker>> {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .unwrap_or("");
    match scheme {
        "memory" => Ok(Arc::new(memory::MemoryBroker::from_url(url)?)),
        "amqp" | "amqps" => Ok(Arc::new(rabbitmq::RabbitBroker::connect(url).await?)),
        "kafka" => Ok(Arc::new(kafka::KafkaBroker::connect(url).await?)),
        _ => Err(BrokerError::InvalidUrl {
            url: url.to_owned(),
            reason: "the scheme must be memory://, amqp:// or kafka://".into(),
        }),
    }
}
