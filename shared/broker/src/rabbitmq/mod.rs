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
//! - **Publisher confirms, and nothing unroutable.** The publishing channel is in confirm
//!   mode and every message is published `mandatory`: `publish` returns `Ok` once the
//!   broker has acked the message *and* not handed it back, i.e. once it is stored in at
//!   least one queue (persistent message, durable queue). A message no queue is bound
//!   for comes back (`basic.return`) and fails with [`BrokerError::Unroutable`]: without
//!   `mandatory` the server would drop it and ack it all the same. A return does not say
//!   which publish it answers, so one task owns the channel and matches returns to
//!   messages by their `message_id` (`confirms.rs` explains why that takes care).
//!   `publish_all` hands over the whole batch, whose confirms are then awaited together,
//!   so a batch costs one round trip, not one per message.
//! - **Retry by republish.** RabbitMQ has no "redeliver later with a changed header": a
//!   nack with requeue puts the message back unchanged and at once. So a retry waits for
//!   its delay, republishes the envelope (attempt header raised) straight to the group
//!   queue through the default exchange with a confirm, and only then acks the original.
//!   A crash in between leaves a duplicate (same envelope id, consumers deduplicate),
//!   never a loss; a copy the broker did not store (no confirm, nacked, or returned
//!   because the queue is gone) nacks the original with requeue and fails the settle,
//!   so the original is delivered again rather than held unacked for good. The topic travels in the `message-topic` header on that copy, because
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
//!
//! ## Where things are
//!
//! One concept per file, in the order a message meets them:
//!
//! - `connection.rs`: [`RabbitBroker`] and `connect`; the state every part shares (the
//!   live connection on a `watch`, the shutdown flag); the supervisor task that sees a
//!   connection die and reconnects with backoff; `close`. The cut-twice test lives here.
//! - `topology.rs`: the two exchanges, the group queue with its dead-letter arguments,
//!   `<group>.dlq`, and declarations on a channel of their own.
//! - `publish.rs`: [`Publisher`]. The publishing channel; encoding a batch and turning
//!   each message's outcome into `Ok` or an error, for `publish`, `publish_all` and the
//!   copies that retries and dead letters send straight to a queue.
//! - `confirms.rs`: the publishing channel's task, which writes every message and tells
//!   each publish what became of its own: stored, returned, nacked or unknown.
//! - `consume.rs`: [`Subscriber`]. One task per subscription that consumes, and consumes
//!   again on the next connection after a loss; `backlog`.
//! - `forward.rs`: the hot loop that moves lapin's deliveries into the [`Deliveries`]
//!   channel in batches, and hands each over as a [`Delivery`] (or has the server
//!   dead-letter it).
//! - `settle.rs`: ack, retry (republish, then ack), dead-letter and abandon of one
//!   delivery.
//! - `wire.rs`: an [`Envelope`] to AMQP properties and headers and back, also for what
//!   the server dead-lettered. The format's unit tests live here.
//! - `outage.rs`: a test helper that cuts this client's connections through
//!   `rabbitmqctl`.
//!
//! [`Publisher`]: crate::Publisher
//! [`Subscriber`]: crate::Subscriber
//! [`Deliveries`]: crate::Deliveries
//! [`Delivery`]: crate::Delivery
//! [`Envelope`]: crate::Envelope
//! [`BrokerError::Settle`]: crate::BrokerError::Settle
//! [`BrokerError::Unroutable`]: crate::BrokerError::Unroutable

mod confirms;
mod connection;
mod consume;
mod forward;
mod outage;
mod publish;
mod settle;
mod topology;
mod wire;

pub use connection::RabbitBroker;
pub use outage::close_connections_for_test;
pub use topology::{DEAD_LETTER_EXCHANGE, EXCHANGE};

/// The backend's name in [`BrokerError::Connect`](crate::BrokerError::Connect).
const BACKEND: &str = "rabbitmq";
/// The AMQP reply code of a normal `channel.close` / `connection.close`.
const REPLY_SUCCESS: u16 = 200;
