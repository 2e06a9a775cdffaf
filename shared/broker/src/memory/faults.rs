//! Fault injection: the seeded decisions (drop, lose, duplicate, reorder, delay) taken per
//! published message, the holding back of reordered and delayed messages, and the counters
//! [`fault_stats`] reads.
//!
//! Two of them stage what no consumer-side cure can see coming:
//!
//! - `duplicate` enqueues a *twin* of the message that stands outside per-key ownership
//!   and goes to a consumer other than the one holding the original (see `group.rs`): with
//!   two or more consumers in a group, both copies run at the same time, as when a real
//!   broker redelivers a message whose first delivery is still being handled. With one
//!   consumer, the twin follows its original.
//! - `lose` confirms the publish (`Ok`) and then loses the message for every group — a
//!   broker that acknowledged and then failed. No retry can help, since the publisher was
//!   told it worked; only reconciliation sees the missing effects.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rand::{rngs::SmallRng, Rng, SeedableRng};

use super::{
    broker,
    group::{Group, Message},
    lock, url,
};

/// A reordered message waits at most this long for later messages to overtake it.
const REORDER_WINDOW: Duration = Duration::from_millis(20);

/// What fault injection did so far, per broker name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Publishes that were "lost in transit" (the publisher got an error).
    pub dropped: u64,
    /// Publishes confirmed (`Ok`) and then lost: no group received them.
    pub lost: u64,
    /// Extra copies delivered to a group.
    pub duplicated: u64,
    /// Messages a group received after later ones.
    pub reordered: u64,
    /// Messages a group received late.
    pub delayed: u64,
}

/// The faults injected into messages published through one handle.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Probability that a publish is lost before the broker takes it (an error).
    pub drop: f64,
    /// Probability that a publish is confirmed and then lost (`Ok`, never delivered).
    pub lose: f64,
    /// Probability that a group gets a message twice.
    pub duplicate: f64,
    /// Probability that a group gets a message after later ones.
    pub reorder: f64,
    /// Probability that a group gets a message late.
    pub delay: f64,
    /// The longest injected delay.
    pub delay_max: Duration,
    /// Seed of the random decisions (random when absent).
    pub seed: Option<u64>,
}

impl Faults {
    fn any(&self) -> bool {
        self.drop > 0.0
            || self.lose > 0.0
            || self.duplicate > 0.0
            || self.reorder > 0.0
            || self.delay > 0.0
    }
}

/// Fault counts of the broker a `memory://` URL names, if it exists in this process.
pub fn fault_stats(url: &str) -> Option<FaultStats> {
    let (name, _) = url::split_url(url);
    let inner = broker::registered(&name)?;
    Some(inner.faults.snapshot())
}

/// What fault injection did, counted once per named broker (shared by its handles).
#[derive(Default)]
pub(super) struct FaultCounters {
    pub(super) dropped: AtomicU64,
    pub(super) lost: AtomicU64,
    pub(super) duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
}

impl FaultCounters {
    fn snapshot(&self) -> FaultStats {
        FaultStats {
            dropped: self.dropped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
        }
    }
}

/// One handle's faults and the seeded generator that decides them.
pub(super) struct FaultInjector {
    pub(super) faults: Faults,
    rng: Mutex<SmallRng>,
}

impl FaultInjector {
    pub(super) fn new(faults: Faults) -> FaultInjector {
        let rng = match faults.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        FaultInjector {
            faults,
            rng: Mutex::new(rng),
        }
    }

    /// Decides the faults of one message published to `groups` groups.
    pub(super) fn decide(&self, groups: usize) -> Decisions {
        if !self.faults.any() {
            return Decisions {
                dropped: false,
                lost: false,
                per_group: vec![GroupFault::default(); groups],
            };
        }
        let faults = self.faults;
        let mut rng = lock(&self.rng);
        let dropped = rng.random_bool(faults.drop);
        // Drawn only when asked for, so a seed gives the same other faults as before.
        let lost = !dropped && faults.lose > 0.0 && rng.random_bool(faults.lose);
        let per_group = (0..groups)
            .map(|_| GroupFault {
                duplicate: rng.random_bool(faults.duplicate),
                reorder: rng
                    .random_bool(faults.reorder)
                    .then(|| rng.random_range(1..=3u8)),
                delay: rng.random_bool(faults.delay).then(|| {
                    let most = faults.delay_max.as_millis().max(1) as u64;
                    Duration::from_millis(rng.random_range(1..=most))
                }),
            })
            .collect();
        Decisions {
            dropped,
            lost,
            per_group,
        }
    }
}

/// The faults decided for one published message.
pub(super) struct Decisions {
    /// Lost before the broker takes it.
    pub(super) dropped: bool,
    /// Confirmed, then lost.
    pub(super) lost: bool,
    /// What happens on the way to each bound group.
    pub(super) per_group: Vec<GroupFault>,
}

/// The faults of one message on its way to one group.
#[derive(Clone, Copy, Default)]
pub(super) struct GroupFault {
    pub(super) duplicate: bool,
    /// Overtaken by this many later messages.
    pub(super) reorder: Option<u8>,
    pub(super) delay: Option<Duration>,
}

/// Holds `message` back for `delay`, then enqueues it behind what was published meanwhile.
pub(super) fn hold_delayed(
    group: &Arc<Group>,
    counters: &FaultCounters,
    message: Message,
    delay: Duration,
) {
    counters.delayed.fetch_add(1, Ordering::Relaxed);
    lock(&group.state).held += 1;
    let group = group.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let message = Message {
            sequence: group.next_sequence(),
            ..message
        };
        let mut state = lock(&group.state);
        state.held -= 1;
        group.enqueue(&mut state, message);
        group.wake(state);
    });
}

/// Holds `message` back until `pass` later messages have overtaken it (see
/// [`Group::enqueue`]), or [`REORDER_WINDOW`] has passed.
pub(super) fn hold_reordered(
    group: &Arc<Group>,
    counters: &FaultCounters,
    message: Message,
    pass: u8,
) {
    counters.reordered.fetch_add(1, Ordering::Relaxed);
    let token = message.sequence;
    {
        let mut state = lock(&group.state);
        state.held += 1;
        state.reordered.push((token, pass, message));
    }
    // If fewer than `pass` messages follow, release it after a short wait.
    let group = group.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REORDER_WINDOW).await;
        let mut state = lock(&group.state);
        if let Some(index) = state.reordered.iter().position(|(t, _, _)| *t == token) {
            let (_, _, message) = state.reordered.swap_remove(index);
            state.held -= 1;
            let sequence = group.next_sequence();
            Group::insert(
                &mut state,
                Message {
                    sequence,
                    ..message
                },
            );
            group.wake(state);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{super::MemoryBroker, fault_stats};
    use crate::{Envelope, Publisher, Subscriber, Subscription};

    #[tokio::test]
    async fn duplicate_fault_delivers_twice_with_one_id() {
        let url = format!(
            "memory://dup-{}?duplicate=1&seed=1",
            uuid::Uuid::now_v7().simple()
        );
        let broker = MemoryBroker::from_url(&url).unwrap();
        let mut deliveries = broker
            .subscribe(Subscription::new("g", ["t"]))
            .await
            .unwrap();
        let sent = Envelope::new("t", "k", "x");
        broker.publish(sent.clone()).await.unwrap();
        for _ in 0..2 {
            let delivery = deliveries
                .next_within(Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(delivery.envelope().id, sent.id);
            delivery.ack().await.unwrap();
        }
        assert_eq!(fault_stats(&url).unwrap().duplicated, 1);
    }

    /// The race a real broker produces on a channel loss or a rebalance: the second copy
    /// reaches another consumer of the group while the first is still unacked.
    #[tokio::test]
    async fn duplicate_fault_delivers_the_copies_at_once_to_two_consumers() {
        let url = format!(
            "memory://dup-race-{}?duplicate=1&seed=1",
            uuid::Uuid::now_v7().simple()
        );
        let broker = MemoryBroker::from_url(&url).unwrap();
        let mut first = broker
            .subscribe(Subscription::new("g", ["t"]))
            .await
            .unwrap();
        let mut second = broker
            .subscribe(Subscription::new("g", ["t"]))
            .await
            .unwrap();
        let sent = Envelope::new("t", "k", "x");
        broker.publish(sent.clone()).await.unwrap();
        let patience = Duration::from_secs(5);
        // Whichever consumer got a copy first holds it unacked while the other must get
        // the second copy.
        let (held, other) = tokio::select! {
            delivery = first.next_within(patience) => (delivery, &mut second),
            delivery = second.next_within(patience) => (delivery, &mut first),
        };
        let held = held.expect("one consumer gets a copy");
        let twin = other
            .next_within(patience)
            .await
            .expect("the other consumer gets the second copy while the first is unacked");
        assert_eq!(held.envelope().id, sent.id);
        assert_eq!(twin.envelope().id, sent.id);
        held.ack().await.unwrap();
        twin.ack().await.unwrap();
        let subscription = Subscription::new("g", ["t"]);
        assert_eq!(broker.backlog(&subscription).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn lose_fault_confirms_the_publish_and_delivers_nothing() {
        let url = format!("memory://lose-{}?lose=1", uuid::Uuid::now_v7().simple());
        let broker = MemoryBroker::from_url(&url).unwrap();
        let subscription = Subscription::new("g", ["t"]);
        broker.declare(&subscription).await.unwrap();
        broker
            .publish(Envelope::new("t", "k", "x"))
            .await
            .expect("confirmed");
        assert_eq!(
            broker.backlog(&subscription).await.unwrap(),
            0,
            "no group holds it"
        );
        let stats = fault_stats(&url).unwrap();
        assert_eq!((stats.lost, stats.dropped), (1, 0));
    }

    #[tokio::test]
    async fn drop_fault_fails_the_publish() {
        let url = format!("memory://drop-{}?drop=1", uuid::Uuid::now_v7().simple());
        let broker = MemoryBroker::from_url(&url).unwrap();
        let error = broker
            .publish(Envelope::new("t", "k", "x"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("injected drop"), "{error}");
        assert_eq!(fault_stats(&url).unwrap().dropped, 1);
    }
}
