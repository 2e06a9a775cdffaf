//! The embedded broker: a real broker in miniature, living inside the process.
//!
//! It is the default backend (`cargo run --release -- demo` needs nothing installed) and
//! the lab where the four classic costs of a message queue are staged on purpose.
//!
//! ## What it models
//!
//! - **Named brokers.** `memory://shop` in two places of one process is the same broker,
//!   so five services started as tasks of one process (the demo) talk to each other.
//!   `memory://` is the broker called `default`.
//! - **Topics and groups.** A group's queue receives every message of the topics it is
//!   bound to (fan-out between groups); the consumers of one group compete for it.
//! - **Unacked tracking and redelivery.** A delivery that is dropped unsettled (handler
//!   crashed, consumer gone) goes back into the queue *at its original place*, so it is
//!   delivered again before the messages published after it.
//! - **Per-key order with competing consumers.** While a consumer holds unacked messages
//!   of a key, no other consumer of the group is given messages of that key — the dynamic
//!   cousin of Kafka's partition ownership. One consumer may hold several messages of a key
//!   (up to its prefetch); they reach it in publish order.
//! - **Bounded capacity with back-pressure.** A group queue holds at most `capacity`
//!   waiting messages (default 100,000); `publish` waits for room instead of growing
//!   without bound — what a real broker's flow control does to a fast producer.
//! - **Dead letters.** `<group>.dlq` is a group queue of its own.
//!
//! ## Fault injection (`memory://name?drop=0.05&duplicate=0.2&reorder=0.1&delay=0.1&seed=7`)
//!
//! Each fault is a probability, decided per message with a seeded random generator:
//!
//! | parameter | what happens | what pays it down |
//! | --- | --- | --- |
//! | `drop` | the message is lost on its way to the broker: `publish` gets no confirm and returns an error | publisher confirms + the outbox relay publishing again |
//! | `duplicate` | a group receives the message twice (same id) | idempotent consumers |
//! | `reorder` | a group receives the message after up to 3 later ones (or 20 ms later) | per-key serialisation, state checks |
//! | `delay` | a group receives the message up to `delay_ms` (default 100) later | nothing needed but patience; reconciliation waits |
//!
//! `seed` makes the decisions repeatable for a given sequence of publishes; `capacity`
//! sets the queue bound. Counts of what was injected: [`fault_stats`].

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, LazyLock, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use async_trait::async_trait;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use crate::{
    Backend, Broker, BrokerError, Capabilities, Deliveries, Delivery, Envelope, Publisher, Result,
    Settle, Subscriber, Subscription,
};

/// Waiting messages a group queue holds before `publish` waits for room.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How far a consumer looks past messages of keys another consumer owns.
const SCAN_LIMIT: usize = 4_096;
/// Messages a consumer takes from its group under one lock (bounded by its credit).
const TAKE_AT_ONCE: usize = 64;
/// A reordered message waits at most this long for later messages to overtake it.
const REORDER_WINDOW: Duration = Duration::from_millis(20);

/// Every named broker of this process. Weak: a broker lives as long as a handle to it.
static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<Inner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every critical
    // section is a few field updates), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What fault injection did so far, per broker name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Publishes that were "lost in transit" (the publisher got an error).
    pub dropped: u64,
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
    /// Probability that a publish is lost before the broker takes it.
    pub drop: f64,
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
        self.drop > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0 || self.delay > 0.0
    }
}

/// Fault counts of the broker a `memory://` URL names, if it exists in this process.
pub fn fault_stats(url: &str) -> Option<FaultStats> {
    let (name, _) = split_url(url);
    let inner = lock(&REGISTRY).get(&name).and_then(Weak::upgrade)?;
    let counters = &inner.faults;
    Some(FaultStats {
        dropped: counters.dropped.load(Ordering::Relaxed),
        duplicated: counters.duplicated.load(Ordering::Relaxed),
        reordered: counters.reordered.load(Ordering::Relaxed),
        delayed: counters.delayed.load(Ordering::Relaxed),
    })
}

#[derive(Default)]
struct FaultCounters {
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
}

/// One broker, shared by every handle with the same name.
struct Inner {
    capacity: usize,
    /// Topic → the groups bound to it; group name → its queue.
    routes: Mutex<Routes>,
    faults: FaultCounters,
    /// Publish order across the broker; a message's place in any queue.
    next_sequence: Arc<AtomicU64>,
    next_consumer: AtomicU64,
}

#[derive(Default)]
struct Routes {
    bindings: HashMap<String, Vec<Arc<Group>>>,
    groups: HashMap<String, Arc<Group>>,
}

/// A message in a group queue.
struct Message {
    sequence: u64,
    key_hash: u64,
    envelope: Envelope,
}

/// One consumer group's queue.
struct Group {
    capacity: usize,
    /// The broker's sequence counter (shared by all its groups).
    sequences: Arc<AtomicU64>,
    state: Mutex<GroupState>,
    /// Signalled when a message may have become deliverable.
    available: Notify,
    /// Signalled when a full queue got room.
    room: Notify,
}

#[derive(Default)]
struct GroupState {
    /// Waiting messages, sorted by sequence.
    ready: VecDeque<Message>,
    /// Delivered, not settled.
    in_flight: u64,
    /// Held back by an injected reorder or delay, not yet in `ready`.
    held: u64,
    /// Consumers waiting for a message they may take.
    sleepers: usize,
    /// Reordered messages waiting for `pass` more messages to overtake them.
    reordered: Vec<(u64, u8, Message)>,
    /// Key hash → (the consumer holding unacked messages of that key, how many).
    owners: HashMap<u64, (u64, u32)>,
}

impl Group {
    fn new(capacity: usize, sequences: Arc<AtomicU64>) -> Arc<Group> {
        Arc::new(Group {
            capacity,
            sequences,
            state: Mutex::new(GroupState::default()),
            available: Notify::new(),
            room: Notify::new(),
        })
    }

    /// A sequence after every message published so far.
    fn next_sequence(&self) -> u64 {
        self.sequences.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts a message at its place by sequence (at the back for a new one).
    fn insert(state: &mut GroupState, message: Message) {
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
    fn enqueue(&self, state: &mut GroupState, message: Message) {
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
    fn take_batch(&self, consumer: u64, most: usize, batch: &mut Vec<Message>, sleep: bool) {
        let mut state = lock(&self.state);
        let was_full = state.ready.len() >= self.capacity;
        let mut scanned = 0;
        let mut index = 0;
        while batch.len() < most && index < state.ready.len() && scanned < SCAN_LIMIT {
            scanned += 1;
            let key_hash = state.ready[index].key_hash;
            let free = match state.owners.get(&key_hash) {
                None => true,
                Some((owner, _)) => *owner == consumer,
            };
            if !free {
                index += 1;
                continue;
            }
            let message = state.ready.remove(index).expect("index is in bounds");
            state
                .owners
                .entry(key_hash)
                .and_modify(|(_, held)| *held += 1)
                .or_insert((consumer, 1));
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
    fn woke(&self) {
        lock(&self.state).sleepers -= 1;
    }

    /// Releases the lock and wakes sleeping consumers, if there are any: a consumer only
    /// sleeps when it found nothing it may take, so waking is needed only then — and
    /// skipping it keeps the hot path (a busy consumer) free of notifications.
    fn wake(&self, state: MutexGuard<'_, GroupState>) {
        let sleepers = state.sleepers;
        drop(state);
        if sleepers > 0 {
            self.available.notify_waiters();
        }
    }

    /// A delivery of `key_hash` is settled; if `requeue`, the message goes back to its place.
    fn settle(&self, key_hash: u64, requeue: Option<Message>) {
        let mut state = lock(&self.state);
        state.in_flight -= 1;
        if let Some((_, held)) = state.owners.get_mut(&key_hash) {
            *held -= 1;
            if *held == 0 {
                state.owners.remove(&key_hash);
            }
        }
        if let Some(message) = requeue {
            Group::insert(&mut state, message);
        }
        self.wake(state);
    }

    fn backlog(&self) -> u64 {
        let state = lock(&self.state);
        state.ready.len() as u64 + state.in_flight + state.held
    }
}

/// A handle to a named embedded broker.
pub struct MemoryBroker {
    name: String,
    inner: Arc<Inner>,
    faults: Faults,
    rng: Mutex<SmallRng>,
    closed: AtomicBool,
    /// Tells this handle's consumers to stop when it is closed.
    closing: Arc<Notify>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MemoryBroker")
            .field("name", &self.name)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

fn split_url(url: &str) -> (String, &str) {
    let rest = url.strip_prefix("memory://").unwrap_or(url);
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    let name = name.trim_matches('/');
    let name = if name.is_empty() { "default" } else { name };
    (name.to_owned(), query)
}

impl MemoryBroker {
    /// Connects to (creating if needed) the broker `memory://name?faults…` names.
    pub fn from_url(url: &str) -> Result<Self> {
        if !url.starts_with("memory://") {
            return Err(invalid(url, "a memory broker URL starts with memory://"));
        }
        let (name, query) = split_url(url);
        let mut faults = Faults {
            delay_max: Duration::from_millis(100),
            ..Faults::default()
        };
        let mut capacity = DEFAULT_CAPACITY;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (parameter, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(url, &format!("`{pair}` is not parameter=value")))?;
            let probability = || -> Result<f64> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| {
                        invalid(
                            url,
                            &format!("{parameter}={value}: a probability between 0 and 1"),
                        )
                    })
            };
            let number = || -> Result<u64> {
                value
                    .parse::<u64>()
                    .map_err(|_| invalid(url, &format!("{parameter}={value}: a whole number")))
            };
            match parameter {
                "drop" => faults.drop = probability()?,
                "duplicate" => faults.duplicate = probability()?,
                "reorder" => faults.reorder = probability()?,
                "delay" => faults.delay = probability()?,
                "delay_ms" => faults.delay_max = Duration::from_millis(number()?),
                "seed" => faults.seed = Some(number()?),
                "capacity" => capacity = number()?.max(1) as usize,
                other => {
                    return Err(invalid(
                        url,
                        &format!(
                            "unknown parameter `{other}` (known: drop, duplicate, reorder, delay, \
                             delay_ms, seed, capacity)"
                        ),
                    ))
                }
            }
        }
        let inner = {
            let mut registry = lock(&REGISTRY);
            registry.retain(|_, broker| broker.strong_count() > 0);
            match registry.get(&name).and_then(Weak::upgrade) {
                Some(inner) => inner,
                None => {
                    let inner = Arc::new(Inner {
                        capacity,
                        routes: Mutex::new(Routes::default()),
                        faults: FaultCounters::default(),
                        next_sequence: Arc::new(AtomicU64::new(1)),
                        next_consumer: AtomicU64::new(1),
                    });
                    registry.insert(name.clone(), Arc::downgrade(&inner));
                    inner
                }
            }
        };
        let rng = match faults.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        Ok(MemoryBroker {
            name,
            inner,
            faults,
            rng: Mutex::new(rng),
            closed: AtomicBool::new(false),
            closing: Arc::new(Notify::new()),
        })
    }

    /// The broker's name (`default` for `memory://`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The faults this handle injects.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(BrokerError::Closed)
        } else {
            Ok(())
        }
    }

    /// The group's queue, created (and bound to `topics`) if missing.
    fn group(&self, name: &str, topics: &[String]) -> Arc<Group> {
        let mut routes = lock(&self.inner.routes);
        let group = routes
            .groups
            .entry(name.to_owned())
            .or_insert_with(|| Group::new(self.inner.capacity, self.inner.next_sequence.clone()))
            .clone();
        for topic in topics {
            let bound = routes.bindings.entry(topic.clone()).or_default();
            if !bound.iter().any(|existing| Arc::ptr_eq(existing, &group)) {
                bound.push(group.clone());
            }
        }
        group
    }

    fn dead_letter_group(&self, group: &str) -> Arc<Group> {
        self.group(&orderflow_events::topics::dead_letter_of(group), &[])
    }

    fn consume(&self, group_name: String, group: Arc<Group>, prefetch: u16) -> Deliveries {
        let prefetch = usize::from(prefetch.max(1));
        let (sender, receiver) = mpsc::channel(prefetch);
        let consumer = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        let credit = Arc::new(Semaphore::new(prefetch));
        let closing = self.closing.clone();
        let dead_letters = self.dead_letter_group(&group_name);
        tokio::spawn(async move {
            let group_name: Arc<str> = group_name.into();
            let mut batch = Vec::new();
            let mut credits = Vec::new();
            'consuming: loop {
                // Credit first: at most `prefetch` unsettled deliveries per consumer.
                let permit = tokio::select! {
                    permit = credit.clone().acquire_owned() => permit.expect("never closed"),
                    () = sender.closed() => break,
                    () = closing.notified() => break,
                };
                credits.push(permit);
                while credits.len() < TAKE_AT_ONCE {
                    match credit.clone().try_acquire_owned() {
                        Ok(permit) => credits.push(permit),
                        Err(_) => break,
                    }
                }
                group.take_batch(consumer, credits.len(), &mut batch, false);
                while batch.is_empty() {
                    let available = group.available.notified();
                    tokio::pin!(available);
                    // Registered before looking again, so a message arriving in between
                    // wakes us.
                    available.as_mut().enable();
                    group.take_batch(consumer, credits.len(), &mut batch, true);
                    if !batch.is_empty() {
                        break;
                    }
                    let stop = tokio::select! {
                        () = available => false,
                        () = sender.closed() => true,
                        () = closing.notified() => true,
                    };
                    group.woke();
                    if stop {
                        break 'consuming;
                    }
                }
                for message in batch.drain(..) {
                    let permit = credits.pop().expect("one credit per message taken");
                    let delivery = Delivery::new(
                        message.envelope.clone(),
                        &*group_name,
                        Box::new(MemorySettle {
                            group: group.clone(),
                            dead_letters: dead_letters.clone(),
                            sequence: message.sequence,
                            key_hash: message.key_hash,
                            envelope: Some(message.envelope),
                            _credit: permit,
                        }),
                    );
                    // A closed receiver hands the delivery back; dropping it requeues it
                    // (and the rest of the batch is requeued as this loop goes on).
                    if let Err(refused) = sender.send(delivery).await {
                        drop(refused);
                    }
                }
                if sender.is_closed() {
                    break;
                }
                credits.clear();
            }
        });
        Deliveries::new(receiver, Box::new(()))
    }

    /// Publishes one message: the drop fault, fan-out with per-group faults, back-pressure.
    async fn publish_one(&self, envelope: Envelope) -> Result<()> {
        self.check_open()?;
        let groups: Vec<Arc<Group>> = lock(&self.inner.routes)
            .bindings
            .get(&envelope.topic)
            .cloned()
            .unwrap_or_default();
        let decisions = self.decide(groups.len());
        if decisions.dropped {
            self.inner.faults.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(BrokerError::Publish {
                topic: envelope.topic,
                detail: "no confirm: the message was lost on its way to the broker (injected drop fault)"
                    .into(),
            });
        }
        let key_hash = hash_key(&envelope.key);
        let count = groups.len();
        let mut envelope = Some(envelope);
        for (index, (group, fault)) in groups.into_iter().zip(decisions.per_group).enumerate() {
            let envelope = if index + 1 == count {
                envelope.take().expect("moved only at the last group")
            } else {
                envelope.clone().expect("present until the last group")
            };
            self.wait_for_room(&group).await;
            let copies = if fault.duplicate { 2 } else { 1 };
            for copy in 0..copies {
                let message = Message {
                    sequence: self.inner.next_sequence.fetch_add(1, Ordering::Relaxed),
                    key_hash,
                    envelope: envelope.clone(),
                };
                if copy == 1 {
                    self.inner.faults.duplicated.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(delay) = fault.delay {
                    self.inner.faults.delayed.fetch_add(1, Ordering::Relaxed);
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
                } else if let Some(pass) = fault.reorder {
                    self.inner.faults.reordered.fetch_add(1, Ordering::Relaxed);
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
                        if let Some(index) =
                            state.reordered.iter().position(|(t, _, _)| *t == token)
                        {
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
                } else {
                    let mut state = lock(&group.state);
                    group.enqueue(&mut state, message);
                    group.wake(state);
                }
            }
        }
        Ok(())
    }

    /// Waits while the group's queue is full.
    async fn wait_for_room(&self, group: &Group) {
        loop {
            let room = group.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if lock(&group.state).ready.len() < group.capacity {
                return;
            }
            room.await;
        }
    }

    fn decide(&self, groups: usize) -> Decisions {
        if !self.faults.any() {
            return Decisions {
                dropped: false,
                per_group: vec![GroupFault::default(); groups],
            };
        }
        let faults = self.faults;
        let mut rng = lock(&self.rng);
        let dropped = rng.random_bool(faults.drop);
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
        Decisions { dropped, per_group }
    }
}

struct Decisions {
    dropped: bool,
    per_group: Vec<GroupFault>,
}

#[derive(Clone, Copy, Default)]
struct GroupFault {
    duplicate: bool,
    /// Overtaken by this many later messages.
    reorder: Option<u8>,
    delay: Option<Duration>,
}

fn hash_key(key: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

fn invalid(url: &str, reason: &str) -> BrokerError {
    BrokerError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Settles one memory delivery. Holding the consumer's credit permit until then is what
/// makes the prefetch count unacked deliveries, not channel slots.
struct MemorySettle {
    group: Arc<Group>,
    dead_letters: Arc<Group>,
    sequence: u64,
    key_hash: u64,
    /// Kept for putting the message back when the delivery is abandoned.
    envelope: Option<Envelope>,
    _credit: OwnedSemaphorePermit,
}

impl MemorySettle {
    fn enqueue_new(group: &Group, envelope: Envelope) {
        let key_hash = hash_key(&envelope.key);
        let sequence = group.next_sequence();
        let mut state = lock(&group.state);
        group.enqueue(
            &mut state,
            Message {
                sequence,
                key_hash,
                envelope,
            },
        );
        group.wake(state);
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.group.settle(self.key_hash, None);
        Ok(())
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
        let group = self.group.clone();
        self.group.settle(self.key_hash, None);
        lock(&group.state).held += 1;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lock(&group.state).held -= 1;
            MemorySettle::enqueue_new(&group, envelope);
        });
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()> {
        MemorySettle::enqueue_new(&self.dead_letters, envelope);
        self.group.settle(self.key_hash, None);
        Ok(())
    }

    fn abandon(mut self: Box<Self>) {
        let envelope = self.envelope.take().expect("set for every delivery");
        let message = Message {
            sequence: self.sequence,
            key_hash: self.key_hash,
            envelope,
        };
        self.group.settle(self.key_hash, Some(message));
    }
}

#[async_trait]
impl Publisher for MemoryBroker {
    async fn publish(&self, envelope: Envelope) -> Result<()> {
        self.publish_one(envelope).await
    }

    async fn publish_all(&self, envelopes: Vec<Envelope>) -> Result<()> {
        // Every message is attempted; the first failure is reported after the others went.
        let mut first_error = None;
        for envelope in envelopes {
            if let Err(error) = self.publish_one(envelope).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Subscriber for MemoryBroker {
    async fn declare(&self, subscription: &Subscription) -> Result<()> {
        self.check_open()?;
        self.group(&subscription.group, &subscription.topics);
        self.dead_letter_group(&subscription.group);
        Ok(())
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<Deliveries> {
        self.check_open()?;
        let group = self.group(&subscription.group, &subscription.topics);
        Ok(self.consume(subscription.group, group, subscription.prefetch))
    }

    async fn subscribe_dead_letters(&self, group: &str) -> Result<Deliveries> {
        self.check_open()?;
        let name = orderflow_events::topics::dead_letter_of(group);
        let queue = self.group(&name, &[]);
        Ok(self.consume(name, queue, 64))
    }

    async fn backlog(&self, subscription: &Subscription) -> Result<u64> {
        self.check_open()?;
        Ok(self
            .group(&subscription.group, &subscription.topics)
            .backlog())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            broker_restart: false,
            fault_injection: true,
        }
    }

    async fn close(&self) -> Result<()> {
        // Closes this handle only: other handles to the same named broker (the other
        // services of the demo) go on. Its consumers stop; what they held is requeued.
        self.closed.store(true, Ordering::Release);
        self.closing.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_brokers_and_faults() {
        let broker = MemoryBroker::from_url("memory://shop?duplicate=0.2&seed=7").unwrap();
        assert_eq!(broker.name(), "shop");
        assert_eq!(broker.faults().duplicate, 0.2);
        assert_eq!(broker.faults().seed, Some(7));
        assert_eq!(
            MemoryBroker::from_url("memory://").unwrap().name(),
            "default"
        );
        let error = MemoryBroker::from_url("memory://x?duplicat=0.2").unwrap_err();
        assert!(
            error.to_string().contains("unknown parameter `duplicat`"),
            "{error}"
        );
        let error = MemoryBroker::from_url("memory://x?drop=2").unwrap_err();
        assert!(error.to_string().contains("between 0 and 1"), "{error}");
    }

    #[tokio::test]
    async fn two_handles_with_one_name_share_the_broker() {
        let name = format!("memory://shared-{}", uuid::Uuid::now_v7().simple());
        let publisher = MemoryBroker::from_url(&name).unwrap();
        let consumer = MemoryBroker::from_url(&name).unwrap();
        let mut deliveries = consumer
            .subscribe(Subscription::new("g", ["t"]))
            .await
            .unwrap();
        publisher
            .publish(Envelope::new("t", "k", "hello"))
            .await
            .unwrap();
        let delivery = deliveries
            .next_within(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&delivery.envelope().payload[..], b"hello");
        delivery.ack().await.unwrap();
    }

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
