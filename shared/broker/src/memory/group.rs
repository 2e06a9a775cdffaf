//! One consumer group's queue: messages kept in publish order, per-key ownership (while a
//! consumer holds unacked messages of a key, the group's other consumers skip that key —
//! except an injected duplicate's twin, which seeks out another consumer; see `faults.rs`),
//! a bounded capacity that makes publishers wait, and the backlog count.

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::Notify;

use super::lock;
use crate::Envelope;

/// Waiting messages a group queue holds before `publish` waits for room.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How far a consumer looks past messages of keys another consumer owns.
const SCAN_LIMIT: usize = 4_096;

/// A message in a group queue.
pub(super) struct Message {
    /// Its place in the queue: publish order across the broker.
    pub(super) sequence: u64,
    /// The hash of its key, what per-key ownership is tracked by.
    pub(super) key_hash: u64,
    pub(super) envelope: Envelope,
    /// An injected duplicate (see `faults.rs`): it stands outside per-key ownership and
    /// goes to a consumer *other* than the one holding its key, so the two copies run at
    /// the same time on two consumers — the race a real broker produces when it redelivers
    /// a message whose first delivery is still running (a channel loss, a rebalance).
    pub(super) twin: bool,
}

/// One consumer group's queue.
pub(super) struct Group {
    pub(super) capacity: usize,
    /// The broker's sequence counter (shared by all its groups).
    sequences: Arc<AtomicU64>,
    pub(super) state: Mutex<GroupState>,
    /// Signalled when a message may have become deliverable.
    pub(super) available: Notify,
    /// Signalled when a full queue got room.
    room: Notify,
}

#[derive(Default)]
pub(super) struct GroupState {
    /// Waiting messages, sorted by sequence.
    pub(super) ready: VecDeque<Message>,
    /// Delivered, not settled.
    in_flight: u64,
    /// Held back by an injected reorder or delay, not yet in `ready`.
    pub(super) held: u64,
    /// Consumers waiting for a message they may take.
    sleepers: usize,
    /// Reordered messages waiting for `pass` more messages to overtake them.
    pub(super) reordered: Vec<(u64, u8, Message)>,
    /// Key hash → (the consumer holding unacked messages of that key, how many).
    owners: HashMap<u64, (u64, u32)>,
}

impl Group {
    pub(super) fn new(capacity: usize, sequences: Arc<AtomicU64>) -> Arc<Group> {
        Arc::new(Group {
            capacity,
            sequences,
            state: Mutex::new(GroupState::default()),
            available: Notify::new(),
            room: Notify::new(),
        })
    }

    /// A sequence after every message published so far.
    pub(super) fn next_sequence(&self) -> u64 {
        self.sequences.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts a message at its place by sequence (at the back for a new one).
    pub(super) fn insert(state: &mut GroupState, message: Message) {
        match state.ready.back() {
            Some(last) if last.sequence > message.sequence => {
                let at = state
                    .ready
                    .partition_point(|waiting| waiting.sequence < message.sequence);
                state.ready.insert(at, message);
            }
            _ => state.ready.push_back(message),
        }
    }

    /// Enqueues a new message and lets reordered ones that waited for it follow.
    pub(super) fn enqueue(&self, state: &mut GroupState, message: Message) {
        Group::insert(state, message);
        if !state.reordered.is_empty() {
            let mut index = 0;
            while index < state.reordered.len() {
                let entry = &mut state.reordered[index];
                entry.1 -= 1;
                if entry.1 == 0 {
                    let (_, _, held) = state.reordered.swap_remove(index);
                    state.held -= 1;
                    // A fresh sequence puts it behind the messages that overtook it.
                    let released = Message {
                        sequence: self.next_sequence(),
                        ..held
                    };
                    Group::insert(state, released);
                } else {
                    index += 1;
                }
            }
        }
    }

    /// Moves up to `most` waiting messages `consumer` may have (their key is free or
    /// already held by this consumer) into `batch`, under one lock. When there are none
    /// and `sleep` is set, counts the consumer as sleeping, so publishers and settlers
    /// know to wake it (see [`Group::wake`]).
    pub(super) fn take_batch(
        &self,
        consumer: u64,
        most: usize,
        batch: &mut Vec<Message>,
        sleep: bool,
    ) {
        let mut state = lock(&self.state);
        let was_full = state.ready.len() >= self.capacity;
        let mut scanned = 0;
        let mut index = 0;
        while batch.len() < most && index < state.ready.len() && scanned < SCAN_LIMIT {
            scanned += 1;
            let key_hash = state.ready[index].key_hash;
            let twin = state.ready[index].twin;
            let owner = state.owners.get(&key_hash).map(|(owner, _)| *owner);
            let free = match (owner, twin) {
                (None, _) => true,
                (Some(owner), false) => owner == consumer,
                // A twin avoids the consumer that holds its key (likely its original).
                (Some(owner), true) => owner != consumer,
            };
            if !free {
                index += 1;
                continue;
            }
            let message = state.ready.remove(index).expect("index is in bounds");
            if !twin {
                state
                    .owners
                    .entry(key_hash)
                    .and_modify(|(_, held)| *held += 1)
                    .or_insert((consumer, 1));
            }
            state.in_flight += 1;
            batch.push(message);
        }
        if batch.is_empty() && sleep {
            state.sleepers += 1;
        }
        let has_room = state.ready.len() < self.capacity;
        drop(state);
        if was_full && has_room {
            self.room.notify_waiters();
        }
    }

    /// A consumer that slept is awake again.
    pub(super) fn woke(&self) {
        lock(&self.state).sleepers -= 1;
    }

    /// Releases the lock and wakes sleeping consumers, if there are any: a consumer only
    /// sleeps when it found nothing it may take, so waking is needed only then — and
    /// skipping it keeps the hot path (a busy consumer) free of notifications.
    pub(super) fn wake(&self, state: MutexGuard<'_, GroupState>) {
        let sleepers = state.sleepers;
        drop(state);
        if sleepers > 0 {
            self.available.notify_waiters();
        }
    }

    /// A delivery is settled, releasing its consumer's hold on `owned_key` (`None` for a
    /// twin, which never held it); if `requeue`, the message goes back to its place.
    pub(super) fn settle(&self, owned_key: Option<u64>, requeue: Option<Message>) {
        let mut state = lock(&self.state);
        state.in_flight -= 1;
        if let Some(key_hash) = owned_key {
            if let Some((_, held)) = state.owners.get_mut(&key_hash) {
                *held -= 1;
                if *held == 0 {
                    state.owners.remove(&key_hash);
                }
            }
        }
        if let Some(message) = requeue {
            Group::insert(&mut state, message);
        }
        self.wake(state);
    }

    /// Waits while the group's queue is full.
    pub(super) async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if lock(&self.state).ready.len() < self.capacity {
                return;
            }
            room.await;
        }
    }

    /// Waiting, in flight and held back: everything the group has not acked.
    pub(super) fn backlog(&self) -> u64 {
        let state = lock(&self.state);
        state.ready.len() as u64 + state.in_flight + state.held
    }
}

/// The hash per-key ownership is tracked by.
pub(super) fn hash_key(key: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::super::MemoryBroker;
    use crate::{Envelope, Publisher, Subscriber, Subscription};

    #[tokio::test]
    async fn a_full_queue_makes_the_publisher_wait() {
        let name = format!("memory://full-{}?capacity=2", uuid::Uuid::now_v7().simple());
        let broker = Arc::new(MemoryBroker::from_url(&name).unwrap());
        let subscription = Subscription::new("g", ["t"]);
        broker.declare(&subscription).await.unwrap();
        broker.publish(Envelope::new("t", "k", "1")).await.unwrap();
        broker.publish(Envelope::new("t", "k", "2")).await.unwrap();
        let blocked = tokio::spawn({
            let broker = broker.clone();
            async move { broker.publish(Envelope::new("t", "k", "3")).await }
        });
        // The third publish cannot finish before a consumer makes room.
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        let mut deliveries = broker.subscribe(subscription).await.unwrap();
        let first = deliveries
            .next_within(Duration::from_secs(5))
            .await
            .unwrap();
        first.ack().await.unwrap();
        blocked.await.unwrap().unwrap();
    }
}
