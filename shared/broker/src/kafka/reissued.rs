//! Rejoining a group whose coordinator handed back the assignment it had just revoked.
//!
//! A consumer killed with SIGKILL leaves no LeaveGroup behind; if another member joins
//! before the dead one's session expires (its replacement, restarted at once), the group
//! forms *with* the dead member, and the dead member is assigned its share of the
//! partitions. When its session then expires, tansu 0.6 removes it and answers the next
//! heartbeat of a survivor with REBALANCE_IN_PROGRESS, but the rejoin that follows keeps
//! the generation and hands every survivor the assignment it already had: the dead
//! member's partitions stay assigned to nobody alive, for good (seen in the chaos suite:
//! `payment.succeeded/1` unowned, about 200 texts never sent). Real Kafka computes a new
//! assignment there.
//!
//! The sign is visible from here: librdkafka revokes this consumer's partitions for the
//! rebalance and is then given exactly the same ones back. Unless those are every
//! partition of its topics (then none can be unowned: a group of one after a broker
//! restart, say), the consumer leaves and joins again as a new member, which makes tansu
//! start a real rebalance, without the dead member. A real rebalance can also give a member back what it had (a newcomer that
//! gets nothing, or a member's share that happens not to move), so the cost of a false
//! alarm is one more rebalance; [`COOLDOWN`] keeps two members from answering each other's
//! rejoins for ever. An empty assignment is `rejoin.rs`'s business.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{consumer::Consumer, TopicPartitionList};
use tokio::{sync::Notify, time::Instant};

use super::consume::GroupConsumer;

/// How long the metadata look-up of [`owns_every_partition`] may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// After a rejoin for a re-issued assignment, re-issues are believed for this long: the
/// rejoin's own rebalance hands most members their partitions back, and without a pause
/// the members would take turns rejoining.
pub(super) const COOLDOWN: Duration = Duration::from_secs(12);

/// What the rebalance callbacks and the poll loop know about re-issued assignments.
#[derive(Default)]
pub(super) struct Reissue {
    /// The partitions of the last revoke, sorted.
    revoked: Mutex<Vec<(String, i32)>>,
    /// When this consumer last rejoined for a re-issue.
    last_rejoin: Mutex<Option<Instant>>,
    /// Wakes the poll loop for a rejoin (a stored permit, so a wake-up is never lost
    /// between two waits).
    pub(super) due: Notify,
}

impl Reissue {
    /// Called on every revoke, before the partitions go.
    pub(super) fn revoked(&self, partitions: &TopicPartitionList) {
        *lock(&self.revoked) = sorted(partitions);
    }

    /// Called on every assignment: wakes the poll loop if it is the revoked one again.
    pub(super) fn assigned(&self, partitions: &TopicPartitionList) -> bool {
        let assigned = sorted(partitions);
        let reissued = !assigned.is_empty() && assigned == *lock(&self.revoked);
        let cooling = lock(&self.last_rejoin).is_some_and(|at| at.elapsed() < COOLDOWN);
        if reissued && !cooling {
            self.due.notify_one();
        }
        reissued && !cooling
    }

    /// Called by the poll loop when it rejoins for a re-issue.
    pub(super) fn rejoining(&self) {
        *lock(&self.last_rejoin) = Some(Instant::now());
        lock(&self.revoked).clear();
    }
}

/// Whether `consumer` is assigned every partition of `topics` (so that no partition of
/// them can be left to a dead member). `false` when the metadata cannot be had: a rejoin
/// too many costs less than a partition nobody reads.
pub(super) async fn owns_every_partition(
    consumer: Arc<GroupConsumer>,
    topics: Vec<String>,
) -> bool {
    // librdkafka's metadata call blocks: off the async workers.
    tokio::task::spawn_blocking(move || {
        let Ok(assignment) = consumer.assignment() else {
            return false;
        };
        let mut total = 0;
        for topic in &topics {
            let Ok(metadata) = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) else {
                return false;
            };
            total += metadata
                .topics()
                .iter()
                .map(|topic| topic.partitions().len())
                .sum::<usize>();
        }
        total > 0 && assignment.count() >= total
    })
    .await
    .unwrap_or(false)
}

fn sorted(partitions: &TopicPartitionList) -> Vec<(String, i32)> {
    let mut list: Vec<(String, i32)> = partitions
        .elements()
        .iter()
        .map(|element| (element.topic().to_owned(), element.partition()))
        .collect();
    list.sort();
    list
}

/// A poisoned lock only means a callback panicked halfway through a few assignments;
/// the lists are still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Offset;

    fn list(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition_offset("t", *partition, Offset::Invalid)
                .unwrap();
        }
        list
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_revoked_partitions_handed_back_call_for_a_rejoin() {
        let reissue = Reissue::default();
        reissue.revoked(&list(&[0, 1, 2]));
        assert!(!reissue.assigned(&list(&[0, 1])), "a new share");
        reissue.revoked(&list(&[0, 1]));
        assert!(!reissue.assigned(&list(&[])), "nothing: rejoin.rs decides");
        reissue.revoked(&list(&[1, 0]));
        assert!(
            reissue.assigned(&list(&[0, 1])),
            "the same share, in any order"
        );
        reissue.rejoining();
        reissue.revoked(&list(&[0, 1]));
        assert!(!reissue.assigned(&list(&[0, 1])), "within the cooldown");
        tokio::time::advance(COOLDOWN).await;
        reissue.revoked(&list(&[0, 1]));
        assert!(reissue.assigned(&list(&[0, 1])), "after the cooldown");
    }
}
