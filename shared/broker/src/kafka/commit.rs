//! The committer: a small task per consumer that commits the settled prefixes of its
//! partitions, batched, because a commit per ack would cost a broker round trip per
//! message.

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
        consumption.settled.notified().await;
        tokio::time::sleep(COMMIT_INTERVAL).await;
        let due = lock(&consumption.tracker).due();
        if due.is_empty() {
            continue;
        }
        let offsets = offsets_list(&due);
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(group = %consumption.group, %error, "offset commit failed; will retry");
            lock(&consumption.tracker).commit_failed(&offsets);
            consumption.settled.notify_one();
        }
    }
}
