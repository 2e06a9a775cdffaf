//! The group consumer's librdkafka callbacks: they keep the offset tracker in step with
//! the partitions assigned to and revoked from the consumer, and with failed commits.
//!
//! librdkafka calls them from inside a poll of the consumer, that is, from the poll loop's
//! `consumer.recv()` (`consume.rs`): a rebalance of the group waits until this consumer
//! is polled again, and a callback must not block, or the loop stops with it.

use std::sync::{atomic::Ordering, Arc};

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    ClientContext, TopicPartitionList,
};

use super::{broker::lock, consume::Consumption, offsets::offsets_list};

/// The consumer's librdkafka context: keeps the tracker in step with rebalances.
pub(super) struct ConsumerCallbacks {
    /// The state the consumer task and its deliveries share, tracker included.
    pub(super) consumption: Arc<Consumption>,
}

impl ClientContext for ConsumerCallbacks {
    fn error(&self, error: KafkaError, reason: &str) {
        // rdkafka logs these at error level by default, but a consumer sees them for every
        // broker hiccup and recovers by itself; the consumer loop gets them too.
        tracing::warn!(group = %self.consumption.group, %error, reason, "kafka consumer");
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.consumption.reissue.revoked(partitions);
            // Commit what is settled while the partitions are still ours, so that their
            // next owner does not redo it. Not when the assignment was lost (the broker
            // unreachable for a session timeout): the commit would be refused, after
            // blocking this poll for as long as the broker stays away.
            let due = lock(&self.consumption.tracker).revoke(partitions);
            if !due.is_empty() && !consumer.assignment_lost() {
                // Asynchronous: a synchronous commit would block this poll (and a
                // consumer's close) for as long as the broker does not answer.
                if let Err(error) = consumer.commit(&offsets_list(&due), CommitMode::Async) {
                    tracing::debug!(group = %self.consumption.group, %error, "commit on revoke failed");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let owned: Vec<String> = partitions
                    .elements()
                    .iter()
                    .map(|element| format!("{}/{}", element.topic(), element.partition()))
                    .collect();
                tracing::info!(group = %self.consumption.group, partitions = ?owned, "kafka partitions assigned");
                // The revoked partitions handed back as they were: wakes the poll loop to
                // rejoin (`reissued.rs`).
                if self.consumption.reissue.assigned(partitions) {
                    tracing::info!(group = %self.consumption.group, "kafka: the revoked partitions were handed back unchanged");
                }
                // An empty assignment starts the clock of `rejoin.rs`; a real one stops
                // it and forgives the earlier rejoins.
                if owned.is_empty() {
                    self.consumption
                        .empty_since
                        .send_replace(Some(tokio::time::Instant::now()));
                } else {
                    self.consumption.empty_since.send_replace(None);
                    self.consumption.rejoins.store(0, Ordering::Release);
                }
                // Fresh state, under new epochs, for the partitions now ours; then wake
                // `start_consumer`, which waits for the first assignment.
                lock(&self.consumption.tracker).assign(partitions);
                self.consumption
                    .assignments
                    .send_modify(|count| *count += 1);
            }
            // Already forgotten and committed in `pre_rebalance`.
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(group = %self.consumption.group, %error, "kafka rebalance error")
            }
        }
    }

    /// The broker's answer to an asynchronous commit, whichever place made it.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            // Mark the points uncommitted and wake the committer: it commits them again
            // (or whatever the points have moved on to by then).
            tracing::debug!(group = %self.consumption.group, %error, "offset commit failed; will retry");
            lock(&self.consumption.tracker).commit_failed(offsets);
            self.consumption.settled.notify_one();
        }
    }
}
