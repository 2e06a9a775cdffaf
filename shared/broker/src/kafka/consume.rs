//! One consumer per subscription: [`start_consumer`] joins the group and waits for the
//! assignment, [`consume`] is the poll loop that forwards records into the channel of
//! the [`Deliveries`] until it is told to stop.
//!
//! A record's way through: the poll loop takes it from librdkafka only once the channel
//! has room, the offset tracker marks its offset in flight, and it goes into the channel
//! as a [`Delivery`] whose settle handle (`settle.rs`) remembers where it came from. The
//! application settles it whenever it likes; the committer (`commit.rs`) then commits the
//! settled prefix of its partition.
//!
//! A graceful stop ([`Deliveries::stop_intake`](crate::Deliveries::stop_intake)) stops
//! the polling but not the consumer: it stays in the group, owning its partitions, while
//! the application settles what it was handed (the committer commits it as it comes);
//! only when the [`Deliveries`] is dropped does it commit once more and leave. Leaving
//! first would give its partitions to another member, which would resume from the last
//! commit and do again what is still being finished here.

use std::sync::{
    atomic::{AtomicBool, AtomicU32, Ordering},
    Arc, Mutex,
};
use std::time::Duration;

use rdkafka::{
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::Message,
};
use tokio::sync::{mpsc, watch, Notify};

use super::{
    broker::{close_in_background, lock, Inner},
    commit::commit_loop,
    config::consumer_config,
    dead_letter::dead_letter_record,
    offsets::{offsets_list, Slot, Tracker},
    rebalance::ConsumerCallbacks,
    reissued::{self, Reissue},
    rejoin,
    settle::KafkaSettle,
    wire::envelope_from,
};
use crate::{BrokerError, Deliveries, Delivery, Intake, Result};

/// How long `subscribe` waits for the consumer to be given its partitions: longer than a
/// dead member of the group may hold them (a session, after which `rejoin.rs` joins
/// again), with room for the rebalance that follows.
const ASSIGNMENT_TIMEOUT: Duration = rejoin::REJOIN_AFTER.saturating_add(Duration::from_secs(30));

pub(super) fn subscribe_error(group: &str, detail: impl ToString) -> BrokerError {
    BrokerError::Subscribe {
        group: group.to_owned(),
        detail: detail.to_string(),
    }
}

/// What a consumer's task, its rebalance callbacks and its deliveries share.
pub(super) struct Consumption {
    /// The broker handle's state: the producer that writes dead letters, the count of
    /// running consumers that `Broker::close` waits on.
    pub(super) inner: Arc<Inner>,
    /// The consumer group, in every delivery and log line.
    pub(super) group: String,
    /// Where this consumer's dead letters go: `<group>.dlq`.
    pub(super) dead_letter_topic: String,
    /// A std mutex, not tokio's: it is held for a few map operations, never across an
    /// await, and is also taken by librdkafka's callbacks, which cannot await.
    pub(super) tracker: Mutex<Tracker>,
    /// Weak, so that the channel closes (and `Deliveries::next` ends) once the consumer
    /// task stops, even while deliveries are still out.
    pub(super) sender: mpsc::WeakSender<Delivery>,
    /// Wakes the committer after a settle.
    pub(super) settled: Notify,
    /// Counts assignments; `subscribe` waits for the first.
    pub(super) assignments: watch::Sender<u64>,
    /// Since when the assignment has been empty; the poll loop rejoins the group when it
    /// stays so (`rejoin.rs`).
    pub(super) empty_since: rejoin::EmptySince,
    /// Rejoins in a row that got an empty assignment again; reset by a non-empty one.
    pub(super) rejoins: AtomicU32,
    /// Revoked partitions handed back unchanged; the poll loop rejoins (`reissued.rs`).
    pub(super) reissue: Reissue,
    /// Set once the consumer task has stopped: nothing is redelivered to it any more.
    pub(super) stopped: AtomicBool,
}

impl Consumption {
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub(super) fn settle(&self, slot: &Slot) {
        if lock(&self.tracker).settle(slot) {
            self.settled.notify_one();
        }
    }
}

pub(super) type GroupConsumer = StreamConsumer<ConsumerCallbacks>;

/// Stops the consumer task when the [`Deliveries`] holding it is dropped, and its polling
/// when the intake is stopped.
struct ConsumerGuard {
    /// Never sent on: dropping it is the signal (`stopped.changed()` in the loop wakes
    /// up with an error).
    _stop: watch::Sender<()>,
    /// Set by [`Intake::stop_intake`].
    intake: watch::Sender<bool>,
}

impl Intake for ConsumerGuard {
    fn stop_intake(&self) {
        self.intake.send_replace(true);
    }
}

/// Starts a consumer for `group` on `topics` and returns once it has its assignment.
pub(super) async fn start_consumer(
    inner: Arc<Inner>,
    group: String,
    topics: Vec<String>,
    dead_letter_topic: String,
    prefetch: u16,
) -> Result<Deliveries> {
    if inner.is_closing() {
        return Err(BrokerError::Closed);
    }
    // The channel's capacity is the prefetch: at most that many deliveries wait for the
    // application before the loop stops taking records.
    let (sender, receiver) = mpsc::channel(usize::from(prefetch.max(1)));
    let (assignments, mut assigned) = watch::channel(0u64);
    let consumption = Arc::new(Consumption {
        inner: inner.clone(),
        group: group.clone(),
        dead_letter_topic,
        tracker: Mutex::new(Tracker::default()),
        // The loop keeps the only strong sender (see the field).
        sender: sender.downgrade(),
        settled: Notify::new(),
        assignments,
        empty_since: watch::Sender::new(None),
        rejoins: AtomicU32::new(0),
        reissue: Reissue::default(),
        stopped: AtomicBool::new(false),
    });
    let callbacks = ConsumerCallbacks {
        consumption: consumption.clone(),
    };
    let consumer: GroupConsumer = consumer_config(&inner.bootstrap, &group)
        .create_with_context(callbacks)
        .map_err(|error| subscribe_error(&group, error))?;
    let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_names)
        .map_err(|error| subscribe_error(&group, error))?;
    let (stop, stopped) = watch::channel(());
    let (intake, intake_stopped) = watch::channel(false);
    // Counted before the task starts, so that a `close` from now on waits for it.
    inner.consumers.send_modify(|running| *running += 1);
    tokio::spawn(consume(
        Arc::new(consumer),
        consumption,
        topics.clone(),
        sender,
        Signals {
            stopped,
            closing: inner.closing.subscribe(),
            intake_stopped,
        },
    ));
    let guard = ConsumerGuard {
        _stop: stop,
        intake,
    };

    // The rebalance callback counts assignments (`rebalance.rs`). Until the first one,
    // this consumer owns no partition, and what is published now would go to others.
    // On an error below the guard is dropped, which stops the task again.
    let joined = tokio::time::timeout(ASSIGNMENT_TIMEOUT, async {
        // `false`: the watch's sender went away with the task's state, before any
        // assignment.
        assigned.wait_for(|count| *count > 0).await.is_ok()
    })
    .await;
    match joined {
        Ok(true) => Ok(Deliveries::new(receiver, Box::new(guard))),
        Ok(false) => Err(subscribe_error(
            &group,
            "the consumer stopped before joining the group",
        )),
        Err(_) => Err(subscribe_error(
            &group,
            format!("no partition assignment within {ASSIGNMENT_TIMEOUT:?}"),
        )),
    }
}

/// What tells the consumer task to stop polling, or to stop altogether.
struct Signals {
    /// Errors once the guard, and so the [`Deliveries`], is dropped.
    stopped: watch::Receiver<()>,
    /// True once the broker handle is closing.
    closing: watch::Receiver<bool>,
    /// True once the application stopped the intake.
    intake_stopped: watch::Receiver<bool>,
}

/// Resolves once the consumer should stop: its guard dropped or the broker closing.
async fn stop_requested(stopped: &mut watch::Receiver<()>, closing: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = stopped.changed() => {}
        _ = closing.wait_for(|closing| *closing) => {}
    }
}

/// Resolves once the intake is stopped (or the guard is gone, which stops it too).
async fn intake_stopped(intake: &mut watch::Receiver<bool>) {
    let _ = intake.wait_for(|stopped| *stopped).await;
}

/// Why the poll loop leaves the group and joins it again.
enum RejoinReason {
    /// Assigned nothing for too long (`rejoin.rs`).
    EmptyAssignment,
    /// Handed back the partitions just revoked (`reissued.rs`).
    Reissued,
}

/// Leaves the group and joins it again as a new member, so that the coordinator
/// computes a new assignment (see `rejoin.rs` and `reissued.rs` for when and why).
fn rejoin_group(
    consumer: &GroupConsumer,
    consumption: &Consumption,
    topics: &[String],
    reason: RejoinReason,
) {
    match reason {
        RejoinReason::EmptyAssignment => {
            let attempt = consumption.rejoins.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::info!(
                group = %consumption.group,
                attempt,
                "kafka: assigned no partition for {:?}; leaving and joining the group again",
                rejoin::REJOIN_AFTER
            );
            consumption.empty_since.send_replace(None);
        }
        RejoinReason::Reissued => {
            tracing::info!(
                group = %consumption.group,
                "kafka: handed back the revoked partitions unchanged; leaving and joining the group again"
            );
            consumption.reissue.rejoining();
        }
    }
    consumer.unsubscribe();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(error) = consumer.subscribe(&names) {
        tracing::warn!(group = %consumption.group, %error, "kafka: joining the group again failed");
    }
}

/// Why the poll loop ended.
#[derive(PartialEq)]
enum Ended {
    /// The [`Deliveries`] was dropped, the broker is closing, or nobody reads any more.
    Stopped,
    /// The application stopped the intake and still settles what it holds.
    IntakeStopped,
}

/// The consumer task: forwards records into the channel until stopped, then commits
/// what is settled and leaves the group.
///
/// It takes a record from librdkafka only when the channel has room for it, so while
/// the application leaves a full channel untouched the consumer is not polled, and
/// rebalances of its group wait for it: for the next free slot when the application is
/// merely busy, at most `max.poll.interval.ms` ([`MAX_POLL_INTERVAL`]) when it is stuck,
/// after which librdkafka leaves the group on its behalf and its partitions (unacked
/// records included) go to the other consumers. Pausing the partitions and polling on
/// was tried instead: a resumed partition is fetched from the middle of a record batch,
/// which tansu 0.6's memory engine answers from the *next* batch, silently skipping
/// records.
///
/// [`MAX_POLL_INTERVAL`]: super::MAX_POLL_INTERVAL
async fn consume(
    consumer: Arc<GroupConsumer>,
    consumption: Arc<Consumption>,
    topics: Vec<String>,
    sender: mpsc::Sender<Delivery>,
    mut signals: Signals,
) {
    let mut empty_since = consumption.empty_since.subscribe();
    // The committer runs beside this loop, so that commits wait neither for the next
    // record nor for a free slot in the channel.
    let committer = tokio::spawn(commit_loop(consumer.clone(), consumption.clone()));
    let ended = loop {
        // Room in the channel first, so that a record taken from librdkafka is never
        // held while the consumer is told to stop.
        let permit = tokio::select! {
            // Stop is checked first (`biased`), so a busy channel cannot starve it.
            biased;
            // The Deliveries were dropped or the broker is closing: leave.
            () = stop_requested(&mut signals.stopped, &mut signals.closing) => break Ended::Stopped,
            // A graceful stop: poll no more, but stay in the group for now.
            () = intake_stopped(&mut signals.intake_stopped) => break Ended::IntakeStopped,
            // A free slot, or the receiver is gone (`Err`): nobody reads any more.
            permit = sender.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break Ended::Stopped,
            },
        };
        let received = tokio::select! {
            biased;
            // Told to stop while waiting for a record: the unused slot is given back.
            () = stop_requested(&mut signals.stopped, &mut signals.closing) => break Ended::Stopped,
            () = intake_stopped(&mut signals.intake_stopped) => break Ended::IntakeStopped,
            // Assigned nothing for too long: leave and join again (`rejoin.rs`).
            () = rejoin::empty_for_too_long(&mut empty_since),
                if consumption.rejoins.load(Ordering::Acquire) < rejoin::MAX_REJOINS =>
            {
                rejoin_group(&consumer, &consumption, &topics, RejoinReason::EmptyAssignment);
                continue;
            }
            // Given back the partitions just revoked: rejoin (`reissued.rs`).
            () = consumption.reissue.due.notified() => {
                if reissued::owns_every_partition(consumer.clone(), topics.clone()).await {
                    tracing::debug!(group = %consumption.group, "kafka: handed back every partition; nothing can be unowned");
                } else {
                    rejoin_group(&consumer, &consumption, &topics, RejoinReason::Reissued);
                }
                continue;
            }
            // The next record. Polling is also what runs librdkafka's callbacks for this
            // consumer: rebalances (`rebalance.rs`) and commit results happen in here.
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                // Transport errors and the like: librdkafka recovers by itself.
                tracing::debug!(group = %consumption.group, %error, "kafka consumer error");
                continue;
            }
        };
        // In flight from now on: nothing at or past this offset is committed until the
        // delivery is settled.
        let (slot, redelivered) = lock(&consumption.tracker).receive(
            message.topic(),
            message.partition(),
            message.offset(),
            message.timestamp().to_millis(),
        );
        match envelope_from(&message) {
            Ok(envelope) => {
                let settle = KafkaSettle {
                    consumption: consumption.clone(),
                    slot,
                    envelope: envelope.clone(),
                };
                // Into the reserved slot: this never waits.
                permit.send(
                    Delivery::new(envelope, consumption.group.clone(), Box::new(settle))
                        .with_redelivered(redelivered),
                );
            }
            Err(reason) => {
                // Not an envelope: no delivery for the application. A task of its own
                // moves it to the dead-letter topic (retrying while the broker is away)
                // and only then settles its offset, so the loop goes on meanwhile.
                drop(permit);
                tokio::spawn(dead_letter_record(
                    consumption.clone(),
                    message.detach(),
                    reason,
                    slot,
                ));
            }
        }
    };
    // The last strong sender: the channel closes, and `Deliveries::next` ends once the
    // application has taken what is still in it. No in-process redelivery (retry,
    // abandon) reaches it any more either: they stay uncommitted for the next owner.
    drop(sender);
    if ended == Ended::IntakeStopped {
        // Still a member, still owning the partitions: the application settles what it
        // holds and the committer commits it, until the `Deliveries` is dropped.
        stop_requested(&mut signals.stopped, &mut signals.closing).await;
    }
    // Whatever is still out goes back to the group with everything else unacked; it
    // must not be handed to this consumer again on the way out.
    consumption.stop();
    // The committer lets go of its handle on the consumer; the consumer closes (leaves
    // the group) when the last handle is dropped, below.
    committer.abort();
    let _ = committer.await;
    // The last settled offsets, asynchronously: closing the consumer waits for
    // outstanding commits, so they still reach the broker before the group is left.
    let due = lock(&consumption.tracker).due();
    if !due.is_empty() {
        if let Err(error) = consumer.commit(&offsets_list(&due), CommitMode::Async) {
            tracing::debug!(group = %consumption.group, %error, "final commit failed");
        }
    }
    let consumers = consumption.inner.consumers.clone();
    // Leaving the group can block for as long as the broker is away: on a thread of its
    // own, which lowers the count `Broker::close` waits on when done.
    close_in_background(consumer, move || {
        consumers.send_modify(|running| *running = running.saturating_sub(1));
    });
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use uuid::Uuid;

    use super::super::KafkaBroker;
    use crate::{Broker, Envelope, Publisher, Subscriber, Subscription};

    /// Against a live broker: a consumer whose application leaves its full channel
    /// untouched holds up a rebalance only until `MAX_POLL_INTERVAL`, then its partitions
    /// and unacked messages go to the consumer that joined.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "waits MAX_POLL_INTERVAL (60 s); run with --ignored"]
    async fn a_stuck_consumer_gives_way_to_a_new_one() {
        let Some(url) =
            orderflow_kit::testenv::require("ORDERFLOW_KAFKA_URL", "a Kafka-protocol broker")
        else {
            return;
        };
        let broker = KafkaBroker::connect(&url).await.unwrap();
        let run = Uuid::now_v7().simple();
        let topic = format!("stuck-{run}");
        let subscription = Subscription::new(format!("stuck-{run}"), [&topic]).with_prefetch(1);
        let stuck = broker.subscribe(subscription.clone()).await.unwrap();
        let sent: Vec<Envelope> = (0..30)
            .map(|key| Envelope::new(&topic, format!("key-{key}"), "work"))
            .collect();
        broker.publish_all(sent.clone()).await.unwrap();

        let joined = tokio::time::Instant::now();
        let mut second = broker.subscribe(subscription.clone()).await.unwrap();
        println!("the second consumer joined after {:?}", joined.elapsed());

        let mut seen = HashSet::new();
        while seen.len() < sent.len() {
            let delivery = second
                .next_within(Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("only {} of {} arrived", seen.len(), sent.len()));
            seen.insert(delivery.envelope().id);
            delivery.ack().await.unwrap();
        }
        drop((stuck, second));
        broker.close().await.unwrap();
    }
}
