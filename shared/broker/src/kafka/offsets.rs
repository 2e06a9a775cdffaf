//! The offset tracker: which offsets of each assigned partition are still in flight, and
//! so how far the group may commit (only the contiguous settled prefix).
//!
//! Kafka keeps one number per group and partition, the committed offset, which means
//! "everything before this is done, resume here". There is no ack for a single record.
//! This consumer's deliveries are settled in any order, though (handlers run
//! concurrently, a retry comes back later), so the tracker keeps the offsets delivered and
//! not yet settled, and a partition's commit point is the lowest of them: below it,
//! everything is settled without a gap. Say 10, 11, 12 and 13 were delivered and 11 and
//! 12 are settled. 10 is a gap in front of them, so the point stays at 10: committing 13
//! would tell the group that 10 is done, and a crash would lose it. If the consumer dies
//! now, the group resumes at 10 and 11 and 12 come a second time; the envelope id lets
//! consumers deduplicate them (at-least-once). Once 10 is settled, the point moves to 13
//! at once. With nothing in flight, the point is one past the highest offset received.
//!
//! Each assignment of a partition to this consumer gets a new epoch, and a delivery
//! carries the epoch it came in under (its [`Slot`]).
//!
//! The tracker also says which records may have been handed out before: any record that
//! already existed when the partition was assigned here (its timestamp is older than the
//! assignment, give or take [`CLOCK_SKEW`]) may have been fetched by the partition's
//! earlier owner — which may have crashed on it. Kafka cannot say what another member
//! fetched, so this is the conservative answer: after an assignment, the backlog that was
//! there counts as possibly redelivered; what is produced afterwards does not. Settling a delivery after its
//! partition was revoked, even if the partition was assigned back since, changes nothing:
//! the partition's next owner resumes from the last commit and delivers that record again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use rdkafka::{Offset, TopicPartitionList};

/// How far the producers' clocks may be ahead of this consumer's: a record stamped up to
/// this long after the assignment still counts as possibly fetched by the earlier owner.
pub(super) const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(2);

/// Now, in milliseconds since the epoch (what Kafka record timestamps count).
fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where one delivered record sits: the partition state it belongs to (`epoch`
/// identifies one assignment of the partition to this consumer) and its offset.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// Shared with the partition's state, so a delivery costs no copy of the topic name.
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    /// The assignment the record came in under; a slot of an older one is stale.
    epoch: u64,
}

/// One assigned partition's bookkeeping.
struct PartitionState {
    /// Handed to every [`Slot`] and commit of this partition (a reference count, not a copy).
    topic: Arc<str>,
    /// Which assignment of the partition this state belongs to.
    epoch: u64,
    /// Offsets delivered and not settled yet. Ordered, so that the lowest, the commit
    /// point, is `first()`.
    in_flight: BTreeSet<i64>,
    /// One past the highest offset received (-1 before the first record: a commit point
    /// of -1 never beats `committed`, so nothing is committed before anything arrived).
    next: i64,
    /// The offset last committed (or being committed), so that only partitions whose
    /// point moved are committed again; -1 when unknown, which makes the next
    /// [`Tracker::due`] commit the partition whatever its point.
    committed: i64,
    /// Records stamped before this (milliseconds since the epoch: the assignment plus
    /// [`CLOCK_SKEW`]) existed while another member may have owned the partition.
    earlier_owner_until: i64,
}

impl PartitionState {
    fn new(topic: &str, epoch: u64) -> Self {
        PartitionState {
            topic: Arc::from(topic),
            epoch,
            in_flight: BTreeSet::new(),
            next: -1,
            committed: -1,
            earlier_owner_until: now_millis()
                + i64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

impl PartitionState {
    /// Where the group may resume: the lowest unsettled offset, or past everything.
    fn commit_point(&self) -> i64 {
        self.in_flight.first().copied().unwrap_or(self.next)
    }
}

/// The in-flight offsets of every partition assigned to one consumer.
#[derive(Default)]
pub(super) struct Tracker {
    /// topic → partition → state, for the partitions assigned right now.
    partitions: HashMap<String, HashMap<i32, PartitionState>>,
    /// Assignments counted so far: the source of fresh epochs, never reused.
    epochs: u64,
}

impl Tracker {
    /// Starts fresh state, under a new epoch, for each newly assigned partition. A
    /// partition assigned back after a revoke starts over too: whatever was in flight
    /// under the old epoch is its group's to redeliver.
    pub(super) fn assign(&mut self, partitions: &TopicPartitionList) {
        for element in partitions.elements() {
            self.epochs += 1;
            let state = PartitionState::new(element.topic(), self.epochs);
            self.partitions
                .entry(element.topic().to_owned())
                .or_default()
                .insert(element.partition(), state);
        }
    }

    /// Forgets revoked partitions, returning what is settled in them but not committed
    /// (the last chance to commit it while the partitions are still ours).
    pub(super) fn revoke(&mut self, partitions: &TopicPartitionList) -> Vec<(Arc<str>, i32, i64)> {
        let mut due = Vec::new();
        for element in partitions.elements() {
            let Some(topic) = self.partitions.get_mut(element.topic()) else {
                continue;
            };
            if let Some(state) = topic.remove(&element.partition()) {
                let point = state.commit_point();
                if point > state.committed {
                    due.push((state.topic.clone(), element.partition(), point));
                }
            }
        }
        due
    }

    /// A record arrived from the poll loop: it is in flight until settled. Also returns
    /// whether it may have been handed out before (see the module doc): `timestamp` is the
    /// record's, in milliseconds, `None` when it has none (then: maybe).
    pub(super) fn receive(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
    ) -> (Slot, bool) {
        let partitions = self.partitions.entry(topic.to_owned()).or_default();
        let epochs = &mut self.epochs;
        // Records come only for assigned partitions, after the assign callback; a record
        // without state (should not happen) still gets tracked rather than lost.
        let state = partitions.entry(partition).or_insert_with(|| {
            *epochs += 1;
            PartitionState::new(topic, *epochs)
        });
        state.in_flight.insert(offset);
        state.next = state.next.max(offset + 1);
        let slot = Slot {
            topic: state.topic.clone(),
            partition,
            offset,
            epoch: state.epoch,
        };
        let redelivered = timestamp.is_none_or(|stamped| stamped < state.earlier_owner_until);
        (slot, redelivered)
    }

    /// The state the slot belongs to, if its partition is still assigned under the same
    /// epoch.
    fn state(&mut self, slot: &Slot) -> Option<&mut PartitionState> {
        self.partitions
            .get_mut(&*slot.topic)?
            .get_mut(&slot.partition)
            .filter(|state| state.epoch == slot.epoch)
    }

    /// Whether the slot's partition is still assigned as it was when the record came.
    pub(super) fn is_current(&mut self, slot: &Slot) -> bool {
        self.state(slot).is_some()
    }

    /// Marks a record settled; false when its partition has been revoked since.
    pub(super) fn settle(&mut self, slot: &Slot) -> bool {
        match self.state(slot) {
            // The gap closes; the commit point moves if this was the lowest offset.
            Some(state) => state.in_flight.remove(&slot.offset),
            None => false,
        }
    }

    /// The commit points that moved since the last call (and records them as committed).
    pub(super) fn due(&mut self) -> Vec<(Arc<str>, i32, i64)> {
        let mut due = Vec::new();
        for (partition, state) in self.partitions.values_mut().flatten() {
            let point = state.commit_point();
            if point > state.committed {
                // Recorded as committed when handed out, not when the broker confirms:
                // commits are asynchronous, and a failure comes back through
                // `commit_failed`.
                state.committed = point;
                due.push((state.topic.clone(), *partition, point));
            }
        }
        due
    }

    /// A commit failed: commit these partitions again next time.
    pub(super) fn commit_failed(&mut self, offsets: &TopicPartitionList) {
        for element in offsets.elements() {
            let Some(state) = self
                .partitions
                .get_mut(element.topic())
                .and_then(|topic| topic.get_mut(&element.partition()))
            else {
                continue;
            };
            // Only if nothing newer went out since: a later commit covers this one.
            if Offset::Offset(state.committed) == element.offset() {
                state.committed = -1;
            }
        }
    }
}

/// The commit points of [`Tracker::due`] or [`Tracker::revoke`] as librdkafka takes them.
pub(super) fn offsets_list(due: &[(Arc<str>, i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(due.len());
    for (topic, partition, offset) in due {
        // Only fails for an invalid offset, which a commit point never is.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition("t", *partition);
        }
        list
    }

    #[test]
    fn only_the_contiguous_settled_prefix_is_committed() {
        let mut tracker = Tracker::default();
        tracker.assign(&assignment(&[0]));
        let slots: Vec<Slot> = (10..14)
            .map(|offset| tracker.receive("t", 0, offset, None).0)
            .collect();
        assert!(tracker.due().iter().all(|(_, _, offset)| *offset == 10));

        // 11 and 12 settled, 10 still in flight: nothing may be committed past 10.
        tracker.settle(&slots[1]);
        tracker.settle(&slots[2]);
        assert!(tracker.due().is_empty());

        tracker.settle(&slots[0]);
        assert_eq!(
            tracker.due()[0].2,
            13,
            "resume at the first unsettled offset"
        );
        tracker.settle(&slots[3]);
        assert_eq!(
            tracker.due()[0].2,
            14,
            "everything settled: resume after it"
        );
        assert!(tracker.due().is_empty(), "nothing new to commit");
    }

    #[test]
    fn settling_after_a_revoke_commits_nothing() {
        let mut tracker = Tracker::default();
        tracker.assign(&assignment(&[0, 1]));
        let (first, _) = tracker.receive("t", 0, 5, None);
        let (other, _) = tracker.receive("t", 1, 7, None);
        tracker.settle(&other);
        let due = tracker.revoke(&assignment(&[0, 1]));
        assert_eq!(due.len(), 2, "settled work is committed on revoke: {due:?}");
        tracker.assign(&assignment(&[0]));
        assert!(!tracker.settle(&first), "a stale delivery moves nothing");
        assert!(!tracker.is_current(&first));
    }

    #[test]
    fn a_failed_commit_is_committed_again() {
        let mut tracker = Tracker::default();
        tracker.assign(&assignment(&[0]));
        let (slot, _) = tracker.receive("t", 0, 0, None);
        tracker.settle(&slot);
        let due = tracker.due();
        tracker.commit_failed(&offsets_list(&due));
        assert_eq!(tracker.due(), due);
    }

    #[test]
    fn records_older_than_the_assignment_may_have_been_handed_out_before() {
        let mut tracker = Tracker::default();
        tracker.assign(&assignment(&[0]));
        let long_ago = now_millis() - 60_000;
        let far_ahead = now_millis() + 60_000;
        assert!(tracker.receive("t", 0, 0, Some(long_ago)).1, "the backlog");
        assert!(
            !tracker.receive("t", 0, 1, Some(far_ahead)).1,
            "produced after"
        );
        assert!(tracker.receive("t", 0, 2, None).1, "no timestamp: maybe");
    }
}
