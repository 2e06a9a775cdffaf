//! The transactional outbox: "no change without its event, no event without its change".
//!
//! Publishing straight from a handler has two bad endings: commit then crash before
//! publishing (the change happened, nobody hears of it), or publish then fail to commit (an
//! event about something that never happened). Instead the event is written as a row in the
//! same transaction as the change ([`enqueue`]); a [`Relay`] reads unsent rows, publishes
//! them, and marks them sent only after the broker confirmed. A crash between publish and
//! mark publishes the row again later — a duplicate with the same envelope id, which the
//! idempotent consumers drop.
//!
//! ## One round of the relay
//!
//! ```text
//! take or renew the lease     one UPDATE          (lease.rs)   not the holder? stand by
//! claim a batch of rows       one short SELECT    (rows.rs)    oldest unsent first
//! publish                     no transaction open (publish.rs) each key in order, all keys at once,
//!                                                              until a deadline
//! [failpoint outbox-after-confirm]                             (failpoints feature only)
//! mark the confirmed rows     one short UPDATE    (rows.rs)
//! prune, now and then         short DELETEs       (retention.rs)
//! ```
//!
//! No database transaction or connection is held while the broker works. That matters
//! most on SQLite, where the pool has one connection: a relay waiting on a slow broker
//! inside a transaction would stop every request of the service. The publish has a
//! deadline ([`RelaySettings::publish_timeout`]); what is not confirmed by then stays
//! unsent and goes out in a later round.
//!
//! ## Replicas: one publisher at a time, by lease
//!
//! Several replicas of a service (`docker compose --scale`, a rolling restart) share one
//! database and so one outbox. Two relays publishing at once could publish one row twice
//! at the same moment, and — worse — publish two rows of one order out of order: relay A
//! claims an order's first event, relay B its second, and B's broker is quicker. Locking
//! rows (`FOR UPDATE SKIP LOCKED`) keeps a row from being taken twice but not that, and
//! it needs the lock held across the publish, which is the very transaction this module
//! avoids.
//!
//! So the relay *role* is leased (`lease.rs`): one row, `outbox_relay_lease`, names the
//! replica that may publish and until when, by the database's clock. A relay takes it when
//! it is free or expired, renews it every round, and releases it on a graceful stop so a
//! replacement takes over at once. The holder publishes only within the time it knows its
//! lease is still valid (measured from before it asked, so on its own clock the lease
//! ends no later than on the database's), and a round's publish ends by its deadline, so
//! two relays never publish at the same time. The lease lasts twice the publish timeout:
//! messages of an expired round that were already on their way have the other half to
//! land before anyone else publishes.
//!
//! Why a lease and not claiming whole keys: per-key claims need a claim per key that also
//! covers every later row of that key, expiry for a dead claimant, and a per-key pass
//! over the table each round — a lot of machinery to parallelise a part that is not the
//! bottleneck (one relay publishes thousands of rows a second, pipelined). The price of
//! the lease: after a replica is killed (no release), the others wait for the lease to
//! expire — twice the publish timeout — before they publish its backlog.
//!
//! ## Per-key order
//!
//! Rows are claimed in `seq` order. Two transactions that write events of one order are
//! serialised by that order's row (the second reads or updates what the first wrote), so
//! within a key `seq` order is commit order. Within a batch the rows of one key are
//! published one after the other, each only once the one before it was confirmed; if one
//! fails, the later rows of its key wait for the next round, which starts again with it.
//! Different keys are published at once, so their confirms are pipelined.
//!
//! ## Retention
//!
//! Sent rows and the consumers' processed message ids ([`crate::idempotency`]) are
//! deleted once older than [`RelaySettings::retention`] (`ORDERFLOW_RETENTION`, default
//! 7 days) by the lease holder, so one replica prunes each database. The retention must
//! outlast the longest time a duplicate can still arrive — a broker's redelivery horizon,
//! a consumer down for a long time, a replayed Kafka topic: a copy of a message whose id
//! was pruned is applied again.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `enqueue.rs` | [`enqueue`]: the row written in the business transaction |
//! | `hand_back.rs` | [`handing_back`]: the synchronous wiring's rows, written sent and handed back to the HTTP caller instead of published |
//! | `rows.rs` | the outbox table: claiming unsent rows, marking them sent, counting |
//! | `lease.rs` | the relay lease: who may publish, until when |
//! | `publish.rs` | publishing a batch: per-key order, pipelined, with a deadline |
//! | `retention.rs` | pruning sent rows and processed ids after the retention window |
//! | `relay.rs` | [`Relay`]: the rounds, the wake-ups, the back-off, the failpoint |

mod enqueue;
mod hand_back;
mod lease;
mod publish;
mod relay;
mod retention;
mod rows;
#[cfg(test)]
mod tests;

pub use enqueue::enqueue;
pub use hand_back::handing_back;
pub use relay::{Relay, RelaySettings};
pub(crate) use retention::delete_in_chunks;
pub use retention::{prune, Pruned};
