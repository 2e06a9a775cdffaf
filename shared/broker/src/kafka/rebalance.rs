//! The group consumer's librdkafka callbacks: they keep the offset tracker in step with
//! the partitions assigned to and revoked from the consumer, and with failed commits.

use std::sync::Arc;

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    ClientContext, TopicPartitionList,
};

use super::{broker::lock, consume::Consumption, offsets::offsets_list};

/// The consumer's librdkafka context: keeps the tracker in step with rebalances.
pub(super) struct ConsumerCallbacks {
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
                lock(&self.consumption.tracker).assign(partitions);
                self.consumption
                    .assignments
                    .send_modify(|count| *count += 1);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(group = %self.consumption.group, %error, "kafka rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::debug!(group = %self.consumption.group, %error, "offset commit failed; will retry");
            lock(&self.consumption.tracker).commit_failed(offsets);
            self.consumption.settled.notify_one();
        }
    }
}
