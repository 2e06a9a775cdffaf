//! The offset tracker: which offsets of each assigned partition are still in flight, and
//! so how far the group may commit (only the contiguous settled prefix).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use rdkafka::{Offset, TopicPartitionList};

/// Where one delivered record sits: the partition state it belongs to (`epoch`
/// identifies one assignment of the partition to this consumer) and its offset.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    epoch: u64,
}

/// One assigned partition's bookkeeping.
struct PartitionState {
    topic: Arc<str>,
    epoch: u64,
    /// Offsets delivered and not settled yet.
    in_flight: BTreeSet<i64>,
    /// One past the highest offset received (-1 before the first record).
    next: i64,
    /// The offset last committed (or being committed); -1 when unknown.
    committed: i64,
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
    partitions: HashMap<String, HashMap<i32, PartitionState>>,
    epochs: u64,
}

impl Tracker {
    pub(super) fn assign(&mut self, partitions: &TopicPartitionList) {
        for element in partitions.elements() {
            self.epochs += 1;
            let state = PartitionState {
                topic: Arc::from(element.topic()),
                epoch: self.epochs,
                in_flight: BTreeSet::new(),
                next: -1,
                committed: -1,
            };
            self.partitions
                .entry(element.topic().to_owned())
                .or_default()
                .insert(element.partition(), state);
        }
    }

    /// Forgets revoked partitions, returning what is settled in them but not committed.
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

    pub(super) fn receive(&mut self, topic: &str, partition: i32, offset: i64) -> Slot {
        let partitions = self.partitions.entry(topic.to_owned()).or_default();
        let epochs = &mut self.epochs;
        // Records come only for assigned partitions, after the assign callback; a record
        // without state (should not happen) still gets tracked rather than lost.
        let state = partitions.entry(partition).or_insert_with(|| {
            *epochs += 1;
            PartitionState {
                topic: Arc::from(topic),
                epoch: *epochs,
                in_flight: BTreeSet::new(),
                next: -1,
                committed: -1,
            }
        });
        state.in_flight.insert(offset);
        state.next = state.next.max(offset + 1);
        Slot {
            topic: state.topic.clone(),
            partition,
            offset,
            epoch: state.epoch,
        }
    }

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
            if Offset::Offset(state.committed) == element.offset() {
                state.committed = -1;
            }
        }
    }
}

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
            .map(|offset| tracker.receive("t", 0, offset))
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
        let first = tracker.receive("t", 0, 5);
        let other = tracker.receive("t", 1, 7);
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
        let slot = tracker.receive("t", 0, 0);
        tracker.settle(&slot);
        let due = tracker.due();
        tracker.commit_failed(&offsets_list(&due));
        assert_eq!(tracker.due(), due);
    }
}
