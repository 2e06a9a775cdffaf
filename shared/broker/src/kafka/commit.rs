//! The committer: a small task per consumer that commits the settled prefixes of its
//! partitions, batched, because a commit per ack would cost a broker round trip per
//! message.
//!
//! It is one of four places that commit, all asynchronously and all from the tracker's
//! commit points: this task while the consumer runs, the rebalance callback when
//! partitions are revoked (`rebalance.rs`), the consumer task once more on its way out
//! (`consume.rs`), and a commit that failed is marked to be made again
//! (`Tracker::commit_failed`).

use std::{sync::Arc, time::Duration};

use rdkafka::consumer::{CommitMode, Consumer};

use super::{
    broker::lock,
    consume::{Consumption, GroupConsumer},
    offsets::offsets_list,
};

/// How often at most a consumer commits its settled offsets.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// Commits the settled prefixes, at most once per [`COMMIT_INTERVAL`].
pub(super) async fn commit_loop(consumer: Arc<GroupConsumer>, consumption: Arc<Consumption>) {
    loop {
        // Sleep until something is settled. `Notify` keeps a wake-up that comes while
        // this task is busy below, so a settle is never missed.
        consumption.settled.notified().await;
        // Then let the settles of the next moment gather, so that one commit covers them.
        tokio::time::sleep(COMMIT_INTERVAL).await;
        // Only partitions whose commit point moved; the tracker records the new points as
        // committed as it hands them out.
        let due = lock(&consumption.tracker).due();
        if due.is_empty() {
            // What was settled sits behind a gap: the points did not move.
            continue;
        }
        let offsets = offsets_list(&due);
        // Asynchronous: the broker's answer arrives in `commit_callback` (`rebalance.rs`),
        // which undoes a failed one. An error here means the commit was not even sent.
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(group = %consumption.group, %error, "offset commit failed; will retry");
            lock(&consumption.tracker).commit_failed(&offsets);
            // Come round again, after the interval, to commit these points once more.
            consumption.settled.notify_one();
        }
    }
}
