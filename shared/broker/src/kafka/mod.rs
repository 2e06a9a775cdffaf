//! The Kafka backend: [`KafkaBroker`], through rdkafka (librdkafka), for Kafka or any
//! Kafka-protocol broker (tansu in the tests). URL: `kafka://host:port[,host:port]`.
//!
//! ## Where to read what
//!
//! | file | what it holds |
//! | --- | --- |
//! | `broker.rs` | [`KafkaBroker`]: connecting, the state the handle shares with its consumers, and the `Publisher` / `Subscriber` / `Broker` impls that hand over to the files below |
//! | `config.rs` | the librdkafka settings of every client (producer, consumer, admin; public, the raw benchmark uses them too), and the `kafka://` URL |
//! | `produce.rs` | publishing: enqueue a batch, then await its delivery reports; replacing a fatally failed producer |
//! | `wire.rs` | envelope ↔ record: key, payload and the `message-id` / `published-at` headers |
//! | `topics.rs` | creating topics through the admin API, once per topic |
//! | `groups.rs` | a group's committed offsets read from outside it: positioning a new group (`declare`) and its lag (`backlog`) |
//! | `watermarks.rs` | reading where each partition ends, by fetching (tansu's ListOffsets is not to be trusted) |
//! | `consume.rs` | one consumer per subscription: joining the group, the poll loop feeding the channel, stopping |
//! | `rebalance.rs` | the consumer's librdkafka callbacks: partitions assigned and revoked, failed commits |
//! | `rejoin.rs` | leaving and joining again when a restarted consumer was assigned nothing (a tansu quirk) |
//! | `offsets.rs` | the offset tracker: only the contiguous settled prefix of a partition is committed |
//! | `commit.rs` | the committer task that batches offset commits |
//! | `settle.rs` | ack, in-process retry and dead letter of one delivery |
//! | `dead_letter.rs` | a record that is not an envelope, moved to `<group>.dlq` |
//!
//! The path of a record, for a first reading: `consume.rs` (the poll loop) →
//! `offsets.rs` (in flight until settled) → `settle.rs` (ack, retry, dead letter) →
//! `commit.rs` (the settled prefix committed).
//!
//! ## How the contract maps onto Kafka
//!
//! - **Topics** are created explicitly through the admin API with [`PARTITIONS`]
//!   partitions (tansu, like many production clusters, does not auto-create them): every
//!   topic published to, every topic subscribed to, and each group's dead-letter topic
//!   `<group>.dlq`. The broker handle remembers which topics it knows exist, so the admin
//!   round trip happens once per topic, not once per publish.
//! - **Publishing** uses one idempotent producer (`enable.idempotence=true`, `acks=all`):
//!   [`Publisher::publish`] returns once the delivery report for its own record arrives;
//!   [`Publisher::publish_all`] enqueues the whole batch first and only then awaits the
//!   reports, so a batch costs about one round trip, not one per message. The record key
//!   is the envelope key (the order id), so one order's events hash onto one partition and
//!   stay in order (contract point 4); the id and publish time travel as headers
//!   (`docs/events.md`).
//! - **Consuming** is one `StreamConsumer` per [`Subscriber::subscribe`] call, in the
//!   Kafka consumer group named after the subscription's group, with auto-commit off. A
//!   task forwards records into the bounded channel of the [`Deliveries`] (capacity =
//!   prefetch). `subscribe` returns only once the consumer has joined the group and got
//!   its assignment, so that whatever is published afterwards reaches it (or its
//!   competitors) and two consumers subscribed one after the other already share the
//!   partitions. Dropping the `Deliveries` closes the consumer, which leaves the group at
//!   once: its partitions, unacked records included, go to the next consumer. Order holds
//!   per key (one key, one partition), not across keys: records of different partitions
//!   arrive in whatever order the fetches return them.
//! - **Offsets are committed only for the contiguous settled prefix** of each partition.
//!   Kafka has no per-message ack, only "everything before offset N is done". Deliveries
//!   are settled out of order (retries, concurrent handlers), so the consumer tracks the
//!   in-flight offsets of every partition and commits the lowest one still in flight (or
//!   the next offset when none is). A crash therefore redelivers every unsettled record,
//!   and possibly some settled ones after it: at-least-once, as promised; consumers
//!   deduplicate on the envelope id. Commits are batched by a small committer task (one
//!   asynchronous commit per [`COMMIT_INTERVAL`] at most) because a commit per ack would
//!   cost a broker round trip per message.
//! - **Retry is in-process.** Kafka cannot redeliver one record of a partition on its
//!   own. Producing the retried message to the topic again would hand a copy to every
//!   *other* group subscribed to it as well, so instead the envelope (its attempt header
//!   raised) goes back into this consumer's channel after the delay, while its offset
//!   stays uncommitted. If the consumer dies in between, the group redelivers the original
//!   record from the last commit (with the attempt count back at its published value): the
//!   message is not lost, only the count. An abandoned (dropped) delivery is put back into
//!   the channel the same way.
//! - **Dead letters** are produced to the topic `<group>.dlq` (awaiting the delivery
//!   report) before the original is marked settled. A record that cannot even be turned
//!   into an [`Envelope`] (no `message-id`, headers that are not UTF-8) goes there too,
//!   with the reason, so that one foreign record never blocks the partition; its copy
//!   there is made a readable envelope (a fresh id if it had none), so the dead-letter
//!   reader can hand it out like any other.
//!   [`Subscriber::subscribe_dead_letters`] reads `<group>.dlq` in the group
//!   `<group>.dlq-reader`.
//! - **Declare and backlog.** A consumer group only exists on the broker once it commits,
//!   so [`Subscriber::declare`] commits the current end offsets for every partition the
//!   group has no committed offset for yet: messages published from then on are kept for
//!   it, and [`Subscriber::backlog`] (high watermark minus committed offset, summed over
//!   partitions) counts them. The high watermark is read by fetching, not from
//!   ListOffsets (see the tansu notes below).
//! - **Outages.** librdkafka reconnects on its own, and the consumer loop treats errors as
//!   transient. If the idempotent producer hits a fatal error (its producer id fenced or
//!   forgotten by a restarted broker), the handle replaces the producer with a new one so
//!   that publishing works again once the broker is back. Closing a consumer while the
//!   broker is away blocks until it answers, so consumers are closed on threads of their
//!   own that nothing waits for past [`Broker::close`]'s timeout.
//!
//! ## tansu 0.6, the test broker
//!
//! Two of its quirks shape this file. Its `memory://` engine answers ListOffsets(latest)
//! with the base offset of the last record *batch* plus one, so the backlog reads the
//! end of each partition by fetching (and then is right on Kafka too). And that engine
//! serves a fetch that starts in the middle of a batch from the *next* batch, skipping the
//! rest of the one asked for: so this backend never seeks or pauses and resumes a
//! partition (which fetch from the middle of batches); only a group's committed offset,
//! when a partition changes hands, can still land mid-batch there. Its `sqlite://` engine
//! stores records one by one and has neither problem; fixed upstream after 0.6.
//!
//! [`Publisher::publish`]: crate::Publisher::publish
//! [`Publisher::publish_all`]: crate::Publisher::publish_all
//! [`Subscriber::subscribe`]: crate::Subscriber::subscribe
//! [`Subscriber::subscribe_dead_letters`]: crate::Subscriber::subscribe_dead_letters
//! [`Subscriber::declare`]: crate::Subscriber::declare
//! [`Subscriber::backlog`]: crate::Subscriber::backlog
//! [`Broker::close`]: crate::Broker::close
//! [`Deliveries`]: crate::Deliveries
//! [`Envelope`]: crate::Envelope

mod broker;
mod commit;
pub mod config;
mod consume;
mod dead_letter;
mod groups;
mod offsets;
mod produce;
mod rebalance;
mod reissued;
mod rejoin;
mod settle;
mod topics;
mod watermarks;
mod wire;

pub use broker::KafkaBroker;
pub use commit::COMMIT_INTERVAL;
pub use config::MAX_POLL_INTERVAL;
pub use topics::PARTITIONS;
