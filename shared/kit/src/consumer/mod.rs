//! The consumer loop every service runs, written once.
//!
//! ```text
//! Deliveries ──► decode ──► handler ──► ack            (Outcome::Done / Duplicate)
//!                  │            └──────► retry later  (HandlerError::Retry, attempts left)
//!                  └─(poison)───────────► dead-letter (undecodable, Reject, attempts used up)
//! ```
//!
//! - **Bounded concurrency**: at most `concurrency` handlers run at once.
//! - **Per-key order**: two messages with the same key (order id) never run at the same
//!   time; the later one waits for the earlier, so concurrency does not reorder an order's
//!   events.
//! - **Rate limit** (optional): handlers start at most `rate_per_s` times a second — the
//!   knob that protects a slow downstream (the SMS gateway) while the queue absorbs the peak.
//! - **Retry with backoff, then dead-letter**: a failing handler is retried with growing
//!   delays ([`RetryPolicy`]); after its `max_attempts` the message goes to `<group>.dlq`
//!   with the last error.
//!   A payload that cannot be decoded goes there at once: retrying it can never help.
//!   A handler that panics counts as a failed attempt (watermill's `Recoverer`): it is
//!   retried and dead-lettered like any other failure, and the loop goes on. So does one
//!   that hangs: a handler still running after `handler_timeout` is cancelled and counts
//!   as a failed attempt.
//! - **Poison by crash** ([`crashes`]): a message that kills its consumer's process (or
//!   hangs it until it is killed) leaves no retried copy to count on, so for deliveries
//!   the backend marks as possibly handed out before, the loop counts handler starts in
//!   the service database and dead-letters a message handed out `max_crashes` times
//!   without being settled. First deliveries skip that bookkeeping entirely.
//! - **Measured** ([`crate::metrics::deliveries`]): every delivery's outcome, every
//!   handler call's duration and every wait for the rate limit, labelled by group.
//! - **Graceful stop, bounded**: when `shutdown` is cancelled the loop stops the intake
//!   ([`Deliveries::stop_intake`]: RabbitMQ `basic.cancel`, Kafka stops polling), handles
//!   what it was already handed — running handlers, messages waiting for their key, what
//!   the backend still buffered — and acks it on the still-open subscription, then lets
//!   go of the subscription. Finishing rather than releasing what was handed over matters
//!   on Kafka: a released record leaves a gap below which the group cannot commit, and
//!   every record after it that this consumer finished would be done again by the
//!   partition's next owner. The whole stop is bounded by `stop_timeout`: past it, the
//!   handlers still running are cancelled and everything unsettled goes back to the
//!   group (a hung handler or a vanished broker cannot keep the process alive).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::FutureExt;
use orderflow_broker::{Deliveries, Delivery, Envelope};
use orderflow_events::Event;
use tokio::{sync::Mutex, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    db::Db,
    metrics::{deliveries as measured, names::outcome as delivered},
    retry::RetryPolicy,
};

pub mod crashes;
pub use crashes::CrashPolicy;

/// What a handler did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The effect is committed.
    Done,
    /// The message had been processed before; nothing was done again.
    Duplicate,
    /// The message is not for this handler (an event type it does not act on).
    Ignored,
}

/// Why a handler did not finish.
#[derive(Debug)]
pub enum HandlerError {
    /// Might work later (database or gateway hiccup): retry with backoff.
    Retry(anyhow::Error),
    /// Will never work (the message makes no sense): dead-letter now.
    Reject(anyhow::Error),
}

impl From<anyhow::Error> for HandlerError {
    fn from(error: anyhow::Error) -> Self {
        HandlerError::Retry(error)
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        HandlerError::Retry(error.into())
    }
}

/// A service's reaction to the events it subscribes to.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one decoded event. Must be idempotent (see [`crate::idempotency`]).
    async fn handle(&self, event: Event, envelope: &Envelope) -> Result<Outcome, HandlerError>;
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Handlers running at once.
    pub concurrency: usize,
    /// Handler starts per second, if limited.
    pub rate_per_s: Option<f64>,
    /// How a failing handler is retried: the backoff between deliveries, and after how many
    /// deliveries the message is dead-lettered.
    pub retry: RetryPolicy,
    /// The service database: where duplicates and dead letters are counted persistently
    /// (for reconciliation), and crashes are counted (see [`crashes`]; without a database
    /// a message that crashes its consumer is not recognised as poison).
    pub counters: Option<Db>,
    /// How long one handler call may take before it is cancelled and counts as a failed
    /// attempt (`ORDERFLOW_HANDLER_TIMEOUT`).
    pub handler_timeout: Duration,
    /// When a message that keeps crashing its consumer is dead-lettered.
    pub crashes: CrashPolicy,
    /// How long a graceful stop may take to finish what was handed over before it gives
    /// up on it (the rest is delivered again).
    pub stop_timeout: Duration,
}

/// The default bound of a graceful stop (`ORDERFLOW_SHUTDOWN_TIMEOUT`).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound of one handler call (`ORDERFLOW_HANDLER_TIMEOUT`).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            concurrency: 16,
            rate_per_s: None,
            retry: RetryPolicy::default(),
            counters: None,
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            crashes: CrashPolicy::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

/// Counters of one loop (since the process started).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Effects committed.
    pub handled: AtomicU64,
    /// Redeliveries recognised and acked without an effect.
    pub duplicates_ignored: AtomicU64,
    /// Retries scheduled.
    pub retried: AtomicU64,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Deliveries that may have been handed out before (see [`counters::REDELIVERIES`]).
    pub redeliveries: AtomicU64,
}

/// Persisted counter names.
pub mod counters {
    /// Duplicates recognised by an idempotent handler.
    pub const DUPLICATES_IGNORED: &str = "duplicates_ignored";
    /// Messages this service dead-lettered.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Deliveries that may have been handed out before: a retry (attempt above 1), or
    /// one the broker marks as possibly delivered already (RabbitMQ's redelivered flag,
    /// the memory broker's redeliveries, on Kafka a record that was already in the
    /// partition when it was assigned — an over-count after a rebalance, never an
    /// under-count). Counted only for those, so a first delivery costs no statement.
    pub const REDELIVERIES: &str = "redeliveries";
}

/// Spaces handler starts `1 / rate` seconds apart, shared by all of a loop's tasks.
struct RateLimiter {
    period: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate_per_s: f64) -> Self {
        RateLimiter {
            period: Duration::from_secs_f64(1.0 / rate_per_s.max(1e-3)),
            next_slot: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot; returns how long that was (zero: the slot was free).
    async fn acquire(&self) -> Duration {
        let asked = Instant::now();
        let slot = {
            let mut next_slot = self.next_slot.lock().await;
            let slot = (*next_slot).max(asked);
            *next_slot = slot + self.period;
            slot
        };
        tokio::time::sleep_until(slot).await;
        slot - asked
    }
}

/// Runs `handler` over `deliveries` until the subscription ends, or until `shutdown` is
/// cancelled and what was handed over is finished (at most `options.stop_timeout`).
pub async fn run(
    mut deliveries: Deliveries,
    handler: Arc<dyn Handler>,
    options: ConsumerOptions,
    stats: Arc<ConsumerStats>,
    shutdown: CancellationToken,
) {
    // One limiter for the whole loop, shared by its handler tasks: the rate is the
    // loop's, not each task's.
    let limiter = options
        .rate_per_s
        .map(|rate| Arc::new(RateLimiter::new(rate)));
    let options = Arc::new(options);
    // The handlers running now. Each task returns its message's key, so that when it
    // finishes the loop knows which key became free.
    let mut running: JoinSet<String> = JoinSet::new();
    // Keys with a handler running, and deliveries waiting for their key to be free.
    let mut busy_keys: HashSet<String> = HashSet::new();
    let mut waiting: HashMap<String, VecDeque<Delivery>> = HashMap::new();
    // False once the subscription has handed over its last delivery: closed by the
    // broker, or drained after a stop.
    let mut intake_open = true;
    // Set when the stop begins: when finishing what was handed over must be done by.
    let mut stop_by: Option<Instant> = None;

    // Starts a handler task for `delivery`. The rate limit is waited for inside the task,
    // so a slow limit holds up that task only, never the loop (which must go on noticing
    // finished handlers and shutdown).
    let start = |running: &mut JoinSet<String>, delivery: Delivery| {
        let handler = handler.clone();
        let options = options.clone();
        let stats = stats.clone();
        let limiter = limiter.clone();
        running.spawn(async move {
            let key = delivery.envelope().key.clone();
            if let Some(limiter) = limiter {
                let waited = limiter.acquire().await;
                measured::rate_limit_wait(delivery.group(), waited);
            }
            // Settles the delivery (ack, retry or dead-letter) before the task ends.
            handle_one(delivery, handler.as_ref(), &options, &stats).await;
            key
        });
    };

    // Running handlers are always empty when nothing waits: a waiting delivery starts
    // when its key's running handler finishes.
    while intake_open || !running.is_empty() {
        // The stop's deadline, or never before the stop.
        let deadline = async {
            match stop_by {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // `biased` polls the arms in the order written instead of at random: the stop
            // and its deadline first; finished handlers before new deliveries, so a freed
            // slot and a freed key are accounted for before the next delivery is taken.
            biased;

            // The stop begins: the backend takes nothing more from the broker; what it
            // took already still comes through `deliveries`, then it ends.
            () = shutdown.cancelled(), if stop_by.is_none() => {
                deliveries.stop_intake();
                stop_by = Some(Instant::now() + options.stop_timeout);
            }

            // Finishing took too long: give up on what is left (below the loop).
            () = deadline => {
                tracing::warn!(
                    running = running.len(),
                    waiting = waiting.values().map(VecDeque::len).sum::<usize>(),
                    timeout = ?options.stop_timeout,
                    "graceful stop timed out: the unfinished messages will be delivered again"
                );
                break;
            }

            // A handler finished (the guard keeps this arm out of the race when nothing
            // runs: `join_next` on an empty set would return `None` at once).
            Some(finished) = running.join_next(), if !running.is_empty() => {
                // Every task returns its key: a handler's panic is caught inside the task
                // (see `handle_one`). An `Err` would be a task aborted, which this loop
                // only does after it.
                let Ok(key) = finished else { continue };
                match waiting.get_mut(&key).and_then(VecDeque::pop_front) {
                    // The key stays busy: its next waiting message starts now, in publish
                    // order, and holds the key as the finished one did. The key is freed
                    // only when none of its messages waits.
                    Some(next) => start(&mut running, next),
                    None => {
                        waiting.remove(&key);
                        busy_keys.remove(&key);
                    }
                }
            }

            // A new delivery, taken only while fewer than `concurrency` handlers run: a
            // full loop leaves deliveries in the channel, and the broker's prefetch then
            // stops sending more (back-pressure all the way up). `next` is cancel-safe: when
            // another arm wins, no delivery is lost.
            delivery = deliveries.next(), if intake_open && running.len() < options.concurrency => {
                // `None`: the subscription has nothing more to hand over (the broker
                // handle was closed, or the stop drained it).
                let Some(delivery) = delivery else {
                    intake_open = false;
                    continue;
                };
                let key = &delivery.envelope().key;
                if busy_keys.contains(key) {
                    // Per-key order: a handler of this key is running, so this one waits
                    // its turn (behind any others of the key) instead of running beside it.
                    waiting.entry(key.clone()).or_default().push_back(delivery);
                } else {
                    busy_keys.insert(key.clone());
                    start(&mut running, delivery);
                }
            }
        }
    }
    // Only after a timed-out stop is anything left here. Cancelled handlers drop their
    // deliveries unsettled, as do the waiting ones, so the broker hands them out again.
    running.shutdown().await;
    drop(waiting);
    // Only now let go of the subscription: its acks travelled on it until here; what it
    // still holds goes back to the group.
    drop(deliveries);
}

async fn handle_one(
    delivery: Delivery,
    handler: &dyn Handler,
    options: &ConsumerOptions,
    stats: &ConsumerStats,
) {
    let envelope = delivery.envelope().clone();
    // Owned: the delivery is moved into its settlement, and the outcome is counted after.
    let group = delivery.group().to_owned();
    measured::delivery(&group, delivered::CONSUMED);
    let span = tracing::info_span!(
        "message",
        order_id = envelope.correlation_id().unwrap_or(envelope.key.as_str()),
        topic = %envelope.topic,
        message_id = %envelope.id,
        attempt = delivery.attempt(),
    );
    async {
        let event = match Event::decode(&envelope.payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "poison message: dead-lettering");
                dead_letter(delivery, &format!("undecodable payload: {error}"), options, stats).await;
                return;
            }
        };
        if delivery.redelivered() || delivery.attempt() > 1 {
            bump(options, counters::REDELIVERIES).await;
            stats.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        // Poison by crash: counted only for a delivery that may have been handed out
        // before, and only where there is a database to count in.
        let counted = match (&options.counters, delivery.redelivered()) {
            (Some(db), true) => Some((db, delivery.group().to_owned(), envelope.id.to_string())),
            _ => None,
        };
        if let Some((db, group, message_id)) = &counted {
            match crashes::record_start(db, group, message_id).await {
                Ok(times) if options.crashes.is_poison(times) => {
                    let reason = options.crashes.reason(times);
                    tracing::error!(%reason, "dead-lettering");
                    // Forgotten only once it is on the dead-letter queue: if that failed,
                    // the message comes again and is still recognised.
                    if dead_letter(delivery, &reason, options, stats).await {
                        forget_crashes(db, group, message_id).await;
                    }
                    return;
                }
                Ok(_) => {}
                // The handler runs anyway: a database hiccup must not stop the flow, at
                // the price of this start going uncounted.
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "could not record the start of a redelivered message"
                ),
            }
        }
        // A panic becomes a failed attempt, as if the handler had returned
        // `HandlerError::Retry`: the delivery is retried and, its attempts used up,
        // dead-lettered with the panic message. Left to unwind, it would drop the delivery
        // unsettled (redelivered at once, to panic again) and lose its key's place in the
        // loop. `AssertUnwindSafe`: after a panic this function uses only `envelope`,
        // which the handler could only read; what the panic leaves in the handler's own
        // state is the handler's concern, as it is after any error it returns.
        let call = AssertUnwindSafe(handler.handle(event, &envelope)).catch_unwind();
        // A hang becomes a failed attempt too: the call is dropped (cancelled) at the
        // timeout. Only an await point can be cancelled; a handler stuck in blocking code
        // holds its thread until the process is killed, which the crash count covers.
        let started = Instant::now();
        let returned = tokio::time::timeout(options.handler_timeout, call).await;
        measured::handler_call(&group, started.elapsed());
        let handled = match returned {
            Ok(returned) => returned
                .unwrap_or_else(|panic| Err(HandlerError::Retry(panicked(panic.as_ref())))),
            Err(_) => Err(HandlerError::Retry(anyhow::anyhow!(
                "the handler did not finish within {:?} (ORDERFLOW_HANDLER_TIMEOUT)",
                options.handler_timeout
            ))),
        };
        // It came back: whatever it returned, this start did not crash the consumer.
        // Forgotten before settling, so a crash between the two costs no count.
        if let Some((db, group, message_id)) = &counted {
            forget_crashes(db, group, message_id).await;
        }
        match handled {
            Ok(outcome) => {
                match outcome {
                    Outcome::Done => stats.handled.fetch_add(1, Ordering::Relaxed),
                    Outcome::Duplicate => {
                        tracing::info!("duplicate delivery ignored");
                        bump(options, counters::DUPLICATES_IGNORED).await;
                        stats.duplicates_ignored.fetch_add(1, Ordering::Relaxed)
                    }
                    Outcome::Ignored => 0,
                };
                match delivery.ack().await {
                    Ok(()) => {
                        measured::delivery(&group, delivered::ACKED);
                        // Counted once acked, so that `duplicate` stays a part of `acked`.
                        if outcome == Outcome::Duplicate {
                            measured::delivery(&group, delivered::DUPLICATE);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "ack failed; the message will be redelivered and deduplicated"),
                }
            }
            Err(HandlerError::Retry(error)) if delivery.attempt() < options.retry.max_attempts => {
                let delay = options.retry.backoff(delivery.attempt());
                tracing::warn!(error = format!("{error:#}"), ?delay, "handler failed: retrying");
                stats.retried.fetch_add(1, Ordering::Relaxed);
                measured::delivery(&group, delivered::RETRIED);
                if let Err(error) = delivery.retry(delay).await {
                    tracing::warn!(%error, "scheduling the retry failed; the broker will redeliver");
                }
            }
            Err(HandlerError::Retry(error)) => {
                let reason = format!("gave up after {} attempts: {error:#}", delivery.attempt());
                tracing::error!(%reason, "dead-lettering");
                dead_letter(delivery, &reason, options, stats).await;
            }
            Err(HandlerError::Reject(error)) => {
                let reason = format!("rejected: {error:#}");
                tracing::error!(%reason, "dead-lettering");
                dead_letter(delivery, &reason, options, stats).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// The error a handler's panic is turned into, with the panic's message.
fn panicked(panic: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    anyhow::anyhow!("the handler panicked: {message}")
}

/// Dead-letters `delivery`; false if that failed (the broker then delivers it again).
async fn dead_letter(
    delivery: Delivery,
    reason: &str,
    options: &ConsumerOptions,
    stats: &ConsumerStats,
) -> bool {
    let group = delivery.group().to_owned();
    match delivery.dead_letter(reason).await {
        Ok(()) => {
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            measured::delivery(&group, delivered::DEAD_LETTERED);
            bump(options, counters::DEAD_LETTERED).await;
            true
        }
        Err(error) => {
            tracing::warn!(%error, "dead-lettering failed; the broker will redeliver");
            false
        }
    }
}

async fn forget_crashes(db: &Db, group: &str, message_id: &str) {
    if let Err(error) = crashes::forget(db, group, message_id).await {
        // A row left behind only makes a later redelivery of this id look closer to the
        // limit than it is.
        tracing::warn!(
            error = format!("{error:#}"),
            "could not clear a crash count"
        );
    }
}

async fn bump(options: &ConsumerOptions, name: &str) {
    if let Some(db) = &options.counters {
        if let Err(error) = db.bump_counter(name, 1).await {
            tracing::warn!(
                error = format!("{error:#}"),
                counter = name,
                "could not persist counter"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use orderflow_broker::{headers, memory::MemoryBroker, Publisher, Subscriber, Subscription};
    use orderflow_events::{
        domain::{Phone, TotalCents, UserId},
        OrderPlaced,
    };

    use super::*;
    use crate::wait;

    /// Panics on the customer 13's orders, handles the others.
    struct PanicsOnCustomer13;

    #[async_trait]
    impl Handler for PanicsOnCustomer13 {
        async fn handle(&self, event: Event, _: &Envelope) -> Result<Outcome, HandlerError> {
            match event {
                Event::OrderPlaced(order) if order.user_id.get() == 13 => panic!("customer 13"),
                _ => Ok(Outcome::Done),
            }
        }
    }

    fn order(order_id: uuid::Uuid, user_id: i64) -> Envelope {
        Event::OrderPlaced(OrderPlaced {
            order_id,
            user_id: UserId::parse(user_id).unwrap(),
            phone: Phone::parse("+8613800138000").unwrap(),
            items: Vec::new(),
            total_cents: TotalCents::parse(100).unwrap(),
            placed_at: chrono::Utc::now(),
        })
        .to_envelope()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_retried_then_dead_lettered_and_its_key_goes_on() {
        let metrics = crate::metrics::install();
        let broker = MemoryBroker::from_url(&format!(
            "memory://consumer-panic-{}",
            uuid::Uuid::now_v7().simple()
        ))
        .unwrap();
        // Two messages of one key: the first panics, the second must still be handled.
        let key = uuid::Uuid::now_v7();
        let poisoned = order(key, 13);
        let healthy = order(key, 1);
        // A group name of the test's own: the metrics registry is the whole test binary's.
        let group = format!("panic-{}", uuid::Uuid::now_v7().simple());
        let subscription = Subscription::new(group.clone(), [poisoned.topic.clone()]);
        let deliveries = broker.subscribe(subscription).await.unwrap();
        let mut dead_letters = broker.subscribe_dead_letters(&group).await.unwrap();
        let options = ConsumerOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                initial: Duration::from_millis(1),
                jitter: 0.0,
                ..RetryPolicy::default()
            },
            ..ConsumerOptions::default()
        };
        let stats = Arc::new(ConsumerStats::default());
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(run(
            deliveries,
            Arc::new(PanicsOnCustomer13),
            options,
            stats.clone(),
            shutdown.clone(),
        ));
        broker
            .publish_all(vec![poisoned.clone(), healthy])
            .await
            .unwrap();

        let dead = dead_letters
            .next_within(Duration::from_secs(10))
            .await
            .expect("the panicking message is dead-lettered");
        assert_eq!(dead.envelope().id, poisoned.id);
        let reason = dead
            .envelope()
            .header(headers::DEAD_LETTER_REASON)
            .unwrap_or("");
        assert!(
            reason.contains("gave up after 2 attempts")
                && reason.contains("the handler panicked: customer 13"),
            "{reason}"
        );
        dead.ack().await.unwrap();
        wait::until(
            "the second message of the key to be handled",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async { (stats.handled.load(Ordering::Relaxed) == 1).then_some(()) },
        )
        .await
        .unwrap();
        assert_eq!(stats.retried.load(Ordering::Relaxed), 1);
        // The retried copy (attempt 2) is the one redelivery.
        assert_eq!(stats.redeliveries.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
        shutdown.cancel();
        consumer.await.unwrap();

        // The same story in /metrics: three handler calls (the poison twice, the healthy
        // one once), one retry, one dead letter, one ack.
        let samples = crate::metrics::scraped::parse(&metrics.render()).unwrap();
        let deliveries = |outcome: &str| {
            crate::metrics::scraped::sum(
                &samples,
                crate::metrics::names::DELIVERIES,
                &[("group", &group), ("outcome", outcome)],
            )
        };
        assert_eq!(deliveries(delivered::CONSUMED), Some(3.0));
        assert_eq!(deliveries(delivered::RETRIED), Some(1.0));
        assert_eq!(deliveries(delivered::DEAD_LETTERED), Some(1.0));
        assert_eq!(deliveries(delivered::ACKED), Some(1.0));
        assert_eq!(deliveries(delivered::DUPLICATE), None);
        let calls = crate::metrics::scraped::sum(
            &samples,
            &format!("{}_count", crate::metrics::names::HANDLER_DURATION),
            &[("group", &group)],
        );
        assert_eq!(calls, Some(3.0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_says_how_long_each_start_waited() {
        let limiter = RateLimiter::new(10.0);
        // Three starts at once, 10 a second: the first slot is free, the next two are
        // 100 ms and 200 ms away.
        let waits =
            futures::future::join3(limiter.acquire(), limiter.acquire(), limiter.acquire()).await;
        let mut waits = [waits.0, waits.1, waits.2];
        waits.sort();
        assert_eq!(
            waits,
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(200)
            ]
        );
        // One more, after the others: its slot is 100 ms after the last one's.
        assert_eq!(limiter.acquire().await, Duration::from_millis(100));
    }

    /// Holds every message until released, and says when it has started one.
    struct Gated {
        started: tokio::sync::Notify,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl Handler for Gated {
        async fn handle(&self, _: Event, _: &Envelope) -> Result<Outcome, HandlerError> {
            self.started.notify_one();
            let _permit = self.release.acquire().await.expect("never closed");
            Ok(Outcome::Done)
        }
    }

    /// A graceful stop while a handler runs: the handler finishes and acks on the
    /// subscription it came from, so the message is not handed to another consumer of the
    /// group as well. Before the fix, the loop dropped its subscription first, and the
    /// broker gave the running message to the group's other consumer.
    async fn a_stop_lets_the_running_handler_finish_before_letting_go(broker_url: &str) {
        let broker = orderflow_broker::connect(broker_url).await.unwrap();
        let run_id = uuid::Uuid::now_v7().simple();
        let topic = format!("test.graceful-stop.{run_id}");
        let subscription = Subscription::new(format!("graceful-stop-{run_id}"), [&topic]);
        let deliveries = broker.subscribe(subscription.clone()).await.unwrap();
        let handler = Arc::new(Gated {
            started: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(run(
            deliveries,
            handler.clone(),
            ConsumerOptions::default(),
            Arc::new(ConsumerStats::default()),
            shutdown.clone(),
        ));
        let mut held = order(uuid::Uuid::now_v7(), 1);
        held.topic = topic.clone();
        broker.publish(held.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), handler.started.notified())
            .await
            .expect("the handler starts");

        // Another consumer of the group, as another replica would be.
        let mut other = broker.subscribe(subscription).await.unwrap();
        shutdown.cancel();
        handler.release.add_permits(1);
        tokio::time::timeout(Duration::from_secs(30), consumer)
            .await
            .expect("the loop stops")
            .unwrap();

        // A sentinel published after the stop: everything the other consumer got before it
        // was redelivered from the stopped one.
        let mut sentinel = order(uuid::Uuid::now_v7(), 2);
        sentinel.topic = topic;
        broker.publish(sentinel.clone()).await.unwrap();
        let mut redelivered = Vec::new();
        loop {
            let delivery = other
                .next_within(Duration::from_secs(30))
                .await
                .expect("the sentinel arrives");
            let id = delivery.envelope().id;
            delivery.ack().await.unwrap();
            if id == sentinel.id {
                break;
            }
            redelivered.push(id);
        }
        assert!(
            !redelivered.contains(&held.id),
            "the message handled during the stop was handed to another consumer too"
        );
        drop(other);
        let _ = broker.close().await;
    }

    #[tokio::test]
    async fn memory_a_stop_lets_the_running_handler_finish_before_letting_go() {
        let url = format!("memory://graceful-stop-{}", uuid::Uuid::now_v7().simple());
        a_stop_lets_the_running_handler_finish_before_letting_go(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq_a_stop_lets_the_running_handler_finish_before_letting_go() {
        if let Some(url) = crate::testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") {
            a_stop_lets_the_running_handler_finish_before_letting_go(&url).await;
        }
    }
}
