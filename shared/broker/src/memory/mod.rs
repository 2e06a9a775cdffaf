//! The embedded broker: a real broker in miniature, living inside the process.
//!
//! It is the default backend (`cargo run --release -- demo` needs nothing installed) and
//! the lab where the four classic costs of a message queue are staged on purpose.
//!
//! ## What it models
//!
//! - **Named brokers.** `memory://shop` in two places of one process is the same broker,
//!   so five services started as tasks of one process (the demo) talk to each other.
//!   `memory://` is the broker called `default`.
//! - **Topics and groups.** A group's queue receives every message of the topics it is
//!   bound to (fan-out between groups); the consumers of one group compete for it.
//! - **Unacked tracking and redelivery.** A delivery that is dropped unsettled (handler
//!   crashed, consumer gone) goes back into the queue *at its original place*, so it is
//!   delivered again before the messages published after it.
//! - **Per-key order with competing consumers.** While a consumer holds unacked messages
//!   of a key, no other consumer of the group is given messages of that key — the dynamic
//!   cousin of Kafka's partition ownership. One consumer may hold several messages of a key
//!   (up to its prefetch); they reach it in publish order. The one exception is staged on
//!   purpose: the second copy of an injected `duplicate` goes to another consumer at once.
//! - **Bounded capacity with back-pressure.** A group queue holds at most `capacity`
//!   waiting messages (default 100,000); `publish` waits for room instead of growing
//!   without bound — what a real broker's flow control does to a fast producer.
//! - **Dead letters.** `<group>.dlq` is a group queue of its own.
//!
//! ## Fault injection (`memory://name?drop=0.05&lose=0.01&duplicate=0.2&reorder=0.1&delay=0.1&seed=7`)
//!
//! Each fault is a probability, decided per message with a seeded random generator:
//!
//! | parameter | what happens | what pays it down |
//! | --- | --- | --- |
//! | `drop` | the message is lost on its way to the broker: `publish` gets no confirm and returns an error | publisher confirms + the outbox relay publishing again |
//! | `lose` | the broker confirms the publish (`Ok`), then loses the message: no group ever sees it | nothing on the way can — the publisher was told it worked; reconciliation finds the missing effects |
//! | `duplicate` | a group receives the message twice (same id); with two or more consumers in the group the copies run at the same time on two of them | idempotent consumers, idempotency keys at the gateways |
//! | `reorder` | a group receives the message after up to 3 later ones (or 20 ms later) | per-key serialisation, state checks |
//! | `delay` | a group receives the message up to `delay_ms` (default 100) later | nothing needed but patience; reconciliation waits |
//!
//! `seed` makes the decisions repeatable for a given sequence of publishes; `capacity`
//! sets the queue bound. Counts of what was injected: [`fault_stats`].
//!
//! ## The map
//!
//! | file | concept |
//! | --- | --- |
//! | `url.rs` | `memory://name?…`: the broker's name, its fault settings and capacity |
//! | `faults.rs` | the seeded drop / lose / duplicate / reorder / delay decisions and their counters |
//! | `group.rs` | one group's queue: per-key ownership, back-pressure, backlog |
//! | `consumer.rs` | one consumer of a group: prefetch credit, taking batches, settling (ack, retry, dead letter, redelivery at the original place) |
//! | `broker.rs` | the named registry, [`MemoryBroker`] and its `Publisher` / `Subscriber` / `Broker` impls |

use std::sync::{Mutex, MutexGuard};

mod broker;
mod consumer;
mod faults;
mod group;
mod url;

pub use broker::MemoryBroker;
pub use faults::{fault_stats, FaultStats, Faults};
pub use group::DEFAULT_CAPACITY;

/// Locks one of the embedded broker's mutexes.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every critical
    // section is a few field updates), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
