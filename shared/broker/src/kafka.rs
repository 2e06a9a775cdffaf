//! The Kafka backend: [`KafkaBroker`], through rdkafka (librdkafka), for Kafka or any
//! Kafka-protocol broker (tansu in the tests). URL: `kafka://host:port[,host:port]`.
//!
//! ## How the contract maps onto Kafka
//!
//! - **Topics** are created explicitly through the admin API with [`PARTITIONS`]
//!   partitions (tansu, like many production clusters, does not auto-create them): every
//!   topic published to, every topic subscribed to, and each group's dead-letter topic
//!   `<group>.dlq`. The broker handle remembers which topics it knows exist, so the admin
//!   round trip happens once per topic, not once per publish.
//! - **Publishing** uses one idempotent producer (`enable.idempotence=true`, `acks=all`):
//!   [`Publisher::publish`] returns once the delivery report for its own record arrives;
//!   [`Publisher::publish_all`] enqueues the whole batch first and only then awaits the
//!   reports, so a batch costs about one round trip, not one per message. The record key
//!   is the envelope key (the order id), so one order's events hash onto one partition and
//!   stay in order (contract point 4); the id and publish time travel as headers
//!   (`docs/events.md`).
//! - **Consuming** is one `StreamConsumer` per [`Subscriber::subscribe`] call, in the
//!   Kafka consumer group named after the subscription's group, with auto-commit off. A
//!   task forwards records into the bounded channel of the [`Deliveries`] (capacity =
//!   prefetch). `subscribe` returns only once the consumer has joined the group and got
//!   its assignment, so that whatever is published afterwards reaches it (or its
//!   competitors) and two consumers subscribed one after the other already share the
//!   partitions. Dropping the `Deliveries` closes the consumer, which leaves the group at
//!   once: its partitions, unacked records included, go to the next consumer. Order holds
//!   per key (one key, one partition), not across keys: records of different partitions
//!   arrive in whatever order the fetches return them.
//! - **Offsets are committed only for the contiguous settled prefix** of each partition.
//!   Kafka has no per-message ack, only "everything before offset N is done". Deliveries
//!   are settled out of order (retries, concurrent handlers), so the consumer tracks the
//!   in-flight offsets of every partition and commits the lowest one still in flight (or
//!   the next offset when none is). A crash therefore redelivers every unsettled record,
//!   and possibly some settled ones after it: at-least-once, as promised; consumers
//!   deduplicate on the envelope id. Commits are batched by a small committer task (one
//!   asynchronous commit per [`COMMIT_INTERVAL`] at most) because a commit per ack would
//!   cost a broker round trip per message.
//! - **Retry is in-process.** Kafka cannot redeliver one record of a partition on its
//!   own. Producing the retried message to the topic again would hand a copy to every
//!   *other* group subscribed to it as well, so instead the envelope (its attempt header
//!   raised) goes back into this consumer's channel after the delay, while its offset
//!   stays uncommitted. If the consumer dies in between, the group redelivers the original
//!   record from the last commit (with the attempt count back at its published value): the
//!   message is not lost, only the count. An abandoned (dropped) delivery is put back into
//!   the channel the same way.
//! - **Dead letters** are produced to the topic `<group>.dlq` (awaiting the delivery
//!   report) before the original is marked settled. A record that cannot even be turned
//!   into an [`Envelope`] (no `message-id`, headers that are not UTF-8) goes there too,
//!   with the reason, so that one foreign record never blocks the partition; its copy
//!   there is made a readable envelope (a fresh id if it had none), so the dead-letter
//!   reader can hand it out like any other.
//!   [`Subscriber::subscribe_dead_letters`] reads `<group>.dlq` in the group
//!   `<group>.dlq-reader`.
//! - **Declare and backlog.** A consumer group only exists on the broker once it commits,
//!   so [`Subscriber::declare`] commits the current end offsets for every partition the
//!   group has no committed offset for yet: messages published from then on are kept for
//!   it, and [`Subscriber::backlog`] (high watermark minus committed offset, summed over
//!   partitions) counts them. The high watermark is read by fetching, not from
//!   ListOffsets (see the tansu notes below).
//! - **Outages.** librdkafka reconnects on its own, and the consumer loop treats errors as
//!   transient. If the idempotent producer hits a fatal error (its producer id fenced or
//!   forgotten by a restarted broker), the handle replaces the producer with a new one so
//!   that publishing works again once the broker is back. Closing a consumer while the
//!   broker is away blocks until it answers, so consumers are closed on threads of their
//!   own that nothing waits for past [`Broker::close`]'s timeout.
//!
//! ## tansu 0.6, the test broker
//!
//! Two of its quirks shape this file. Its `memory://` engine answers ListOffsets(latest)
//! with the base offset of the last record *batch* plus one, so the backlog reads the
//! end of each partition by fetching (and then is right on Kafka too). And that engine
//! serves a fetch that starts in the middle of a batch from the *next* batch, skipping the
//! rest of the one asked for: so this backend never seeks or pauses and resumes a
//! partition (which fetch from the middle of batches); only a group's committed offset,
//! when a partition changes hands, can still land mid-batch there. Its `sqlite://` engine
//! stores records one by one and has neither problem; fixed upstream after 0.6.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use orderflow_events::topics;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
    ClientContext, Offset, TopicPartitionList,
};
use tokio::sync::{mpsc, watch, Notify};
use uuid::Uuid;

use crate::{
    headers, Backend, Broker, BrokerError, Capabilities, Deliveries, Delivery, Envelope, Publisher,
    Result, Settle, Subscriber, Subscription,
};

/// Partitions of every topic this backend creates: enough for a few competing consumers
/// per group, few enough that a test broker stays light.
pub const PARTITIONS: i32 = 3;
/// How often at most a consumer commits its settled offsets.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// Prefetch of a dead-letter reader (the default of [`Subscription::new`]).
const DEAD_LETTER_PREFETCH: u16 = 64;
/// How long a consumer may leave a full channel untouched before it is taken for stuck
/// and leaves its group (librdkafka's `max.poll.interval.ms`, default five minutes).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// How long `subscribe` waits for the consumer to be given its partitions: longer than
/// a stuck member of the group may hold up the rebalance.
const ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(45);
/// Timeout of one blocking metadata, offset or commit request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Broker::close`] waits for its consumers to leave their groups.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long publishing waits for room when librdkafka's local queue is full.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kafka backend: one idempotent producer, one admin client, and a consumer per
/// subscription. Cheap to share behind an `Arc`.
pub struct KafkaBroker {
    inner: Arc<Inner>,
}

/// What the broker handle, its consumers and their deliveries share.
struct Inner {
    /// `host:port[,host:port]`.
    bootstrap: String,
    /// Replaced when librdkafka reports a fatal (unrecoverable) producer error.
    producer: RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist (created by us or found to exist already).
    topics: Mutex<HashSet<String>>,
    /// One non-subscribing consumer per group, to read and commit its offsets.
    group_clients: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// A consumer that never joins a group, used to read partition ends (see
    /// [`partition_ends`]); the mutex also keeps two readers from reassigning it under
    /// each other.
    probe: Mutex<Option<BaseConsumer<ProbeCallbacks>>>,
    /// Set by [`Broker::close`]; consumers watch it and stop.
    closing: watch::Sender<bool>,
    /// Consumers started and not yet closed; [`Broker::close`] waits for none.
    consumers: watch::Sender<usize>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped wherever the last handle goes, possibly on a runtime thread.
        let clients = (
            std::mem::take(&mut *lock(&self.group_clients)),
            lock(&self.probe).take(),
        );
        if !clients.0.is_empty() || clients.1.is_some() {
            close_in_background(clients, || {});
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every structure
/// behind these locks stays consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Settings every client of this backend shares.
fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "orderflow")
        // A restarted broker should be found again within a second, not after
        // librdkafka's default backoff of up to 10 s.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "3");
    config
}

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The Java client's partitioner, so that producers in other languages put one
        // key on the same partition as we do.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // A publish during an outage fails after this instead of librdkafka's 5 minutes;
        // the caller publishes again (ids are stable, consumers deduplicate).
        .set("message.timeout.ms", "30000");
    config
}

fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Small enough that a consumer that died without leaving the group is replaced
        // quickly, heartbeats often enough that rebalances start promptly.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set(
            "max.poll.interval.ms",
            MAX_POLL_INTERVAL.as_millis().to_string(),
        )
        .set("fetch.wait.max.ms", "100");
    config
}

impl KafkaBroker {
    /// Connects to the brokers of a `kafka://host:port[,host:port]` URL, checking that
    /// one of them answers.
    pub async fn connect(url: &str) -> Result<Self> {
        let bootstrap = parse_url(url)?;
        let connect_error = |detail: String| BrokerError::Connect {
            backend: "kafka",
            address: bootstrap.clone(),
            detail,
        };
        let producer: FutureProducer = producer_config(&bootstrap)
            .create()
            .map_err(|error| connect_error(error.to_string()))?;
        let admin: AdminClient<DefaultClientContext> = base_config(&bootstrap)
            .create()
            .map_err(|error| connect_error(error.to_string()))?;
        // librdkafka connects lazily; ask for metadata once so that a wrong address fails
        // here rather than at the first publish.
        let probe = producer.clone();
        tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map(drop)
        })
        .await
        .map_err(|error| connect_error(error.to_string()))?
        .map_err(|error| connect_error(error.to_string()))?;
        let (closing, _) = watch::channel(false);
        Ok(KafkaBroker {
            inner: Arc::new(Inner {
                bootstrap,
                producer: RwLock::new(producer),
                admin,
                topics: Mutex::new(HashSet::new()),
                group_clients: Mutex::new(HashMap::new()),
                probe: Mutex::new(None),
                closing,
                consumers: watch::channel(0).0,
            }),
        })
    }
}

/// `kafka://a:9092,b:9092/` → `a:9092,b:9092`.
fn parse_url(url: &str) -> Result<String> {
    let invalid = |reason: &str| BrokerError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| invalid("a Kafka URL starts with kafka://"))?;
    let hosts = rest.split(['/', '?']).next().unwrap_or("");
    if hosts.is_empty() {
        return Err(invalid("no host:port after kafka://"));
    }
    for host in hosts.split(',') {
        let port = host.rsplit_once(':').map(|(_, port)| port);
        if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
            return Err(invalid(&format!("`{host}` is not host:port")));
        }
    }
    Ok(hosts.to_owned())
}

fn publish_error(topic: &str, detail: impl ToString) -> BrokerError {
    BrokerError::Publish {
        topic: topic.to_owned(),
        detail: detail.to_string(),
    }
}

fn subscribe_error(group: &str, detail: impl ToString) -> BrokerError {
    BrokerError::Subscribe {
        group: group.to_owned(),
        detail: detail.to_string(),
    }
}

/// The record headers of an envelope: its own headers plus `message-id` and
/// `published-at` (`docs/events.md`, "On Kafka").
fn record_headers(envelope: &Envelope) -> OwnedHeaders {
    let mut record = OwnedHeaders::new_with_capacity(envelope.headers.len() + 2);
    for (name, value) in &envelope.headers {
        // The envelope's own fields are authoritative; a stale copy in the headers map
        // (e.g. from a message read off Kafka and published again) must not shadow them.
        if name == headers::MESSAGE_ID || name == headers::PUBLISHED_AT {
            continue;
        }
        record = record.insert(Header {
            key: name,
            value: Some(value.as_str()),
        });
    }
    let mut id = Uuid::encode_buffer();
    let id = envelope.id.hyphenated().encode_lower(&mut id);
    let published_at = envelope
        .published_at
        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
    record
        .insert(Header {
            key: headers::MESSAGE_ID,
            value: Some(&*id),
        })
        .insert(Header {
            key: headers::PUBLISHED_AT,
            value: Some(published_at.as_str()),
        })
}

/// Turns a consumed record back into an envelope; `Err` says why it cannot be one.
fn envelope_from<M: Message>(message: &M) -> std::result::Result<Envelope, String> {
    let mut id = None;
    let mut published_at = None;
    let mut envelope_headers = BTreeMap::new();
    if let Some(record_headers) = message.headers() {
        for header in record_headers.iter() {
            let value = match header.value {
                Some(bytes) => std::str::from_utf8(bytes)
                    .map_err(|_| format!("header `{}` is not UTF-8", header.key))?,
                None => "",
            };
            match header.key {
                headers::MESSAGE_ID => {
                    id = Some(Uuid::parse_str(value).map_err(|error| {
                        format!("header `{}` is not a UUID: {error}", headers::MESSAGE_ID)
                    })?)
                }
                headers::PUBLISHED_AT => {
                    published_at = DateTime::parse_from_rfc3339(value)
                        .ok()
                        .map(|time| time.with_timezone(&Utc))
                }
                name => {
                    envelope_headers.insert(name.to_owned(), value.to_owned());
                }
            }
        }
    }
    let id = id.ok_or_else(|| format!("no `{}` header", headers::MESSAGE_ID))?;
    let key = match message.key() {
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| "the record key is not UTF-8".to_owned())?
            .to_owned(),
        None => String::new(),
    };
    // A producer that left out `published-at` still stamped the record.
    let published_at = published_at
        .or_else(|| {
            message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis)
        })
        .unwrap_or_else(Utc::now);
    Ok(Envelope {
        id,
        topic: message.topic().to_owned(),
        key,
        headers: envelope_headers,
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        published_at,
    })
}

impl Inner {
    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// After a failed publish: if the producer is dead for good (a fatal idempotence
    /// error, e.g. a restarted broker that forgot our producer id), put a new one in its
    /// place so that the next publish can succeed.
    fn replace_producer_if_fatal(&self, failed: &FutureProducer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another publish may have replaced it already.
        if current.client().native_ptr() != failed.client().native_ptr() {
            return;
        }
        tracing::warn!(?code, %reason, "kafka producer failed fatally; creating a new one");
        match producer_config(&self.bootstrap).create::<FutureProducer>() {
            Ok(fresh) => *current = fresh,
            Err(error) => tracing::error!(%error, "cannot create a new kafka producer"),
        }
    }

    /// Creates the topics not known to exist yet, with [`PARTITIONS`] partitions.
    async fn ensure_topics<S: AsRef<str>>(&self, wanted: &[S]) -> std::result::Result<(), String> {
        let missing: Vec<&str> = {
            let known = lock(&self.topics);
            let mut missing: Vec<&str> = wanted
                .iter()
                .map(AsRef::as_ref)
                .filter(|topic| !known.contains(*topic))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|error| format!("creating topics {missing:?}: {error}"))?;
        let mut known = lock(&self.topics);
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(topic);
                }
                Err((topic, code)) => return Err(format!("creating topic `{topic}`: {code}")),
            }
        }
        Ok(())
    }

    /// Enqueues one record; waits (briefly) only when librdkafka's local queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        topic: &str,
        envelope: &Envelope,
    ) -> Result<DeliveryFuture> {
        let mut record = FutureRecord::to(topic)
            .key(envelope.key.as_str())
            .payload(envelope.payload.as_ref())
            .headers(record_headers(envelope))
            .timestamp(envelope.published_at.timestamp_millis());
        let deadline = tokio::time::Instant::now() + QUEUE_FULL_TIMEOUT;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(publish_error(topic, error)),
            }
        }
    }

    /// Produces envelopes to `topic` (or each to its own topic when `None`), pipelined:
    /// everything is enqueued, then the delivery reports are awaited.
    async fn produce(&self, topic: Option<&str>, envelopes: &[Envelope]) -> Result<()> {
        if self.is_closing() {
            return Err(BrokerError::Closed);
        }
        match topic {
            Some(topic) => self.ensure_topics(&[topic]).await,
            None => {
                // A batch usually goes to one topic or a few: collect them without
                // hashing every envelope's topic.
                let mut topics: Vec<&str> = Vec::new();
                for envelope in envelopes {
                    if !topics.contains(&envelope.topic.as_str()) {
                        topics.push(&envelope.topic);
                    }
                }
                self.ensure_topics(&topics).await
            }
        }
        .map_err(|detail| {
            let topic = topic.or_else(|| envelopes.first().map(|envelope| envelope.topic.as_str()));
            publish_error(topic.unwrap_or(""), detail)
        })?;

        let producer = self.producer();
        let mut reports = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let topic = topic.unwrap_or(envelope.topic.as_str());
            match self.enqueue(&producer, topic, envelope).await {
                Ok(report) => reports.push((topic, report)),
                Err(error) => {
                    self.replace_producer_if_fatal(&producer);
                    return Err(error);
                }
            }
        }
        let mut first_error = None;
        for (topic, report) in reports {
            let outcome = match report.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => publish_error(topic, error),
                Err(_) => {
                    publish_error(topic, "the producer went away before the broker confirmed")
                }
            };
            first_error.get_or_insert(outcome);
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                self.replace_producer_if_fatal(&producer);
                Err(error)
            }
        }
    }

    /// Runs `read` with the watermark probe, creating it on first use. Blocking.
    fn with_probe<T>(
        &self,
        read: impl FnOnce(&BaseConsumer<ProbeCallbacks>) -> KafkaResult<T>,
    ) -> KafkaResult<T> {
        let mut probe = lock(&self.probe);
        let probe = match &mut *probe {
            Some(probe) => probe,
            empty => empty.insert(
                base_config(&self.bootstrap)
                    // librdkafka refuses `assign` without a group id; this group never
                    // joins, subscribes or commits.
                    .set("group.id", "orderflow-watermark-probe")
                    .set("enable.auto.commit", "false")
                    .set("enable.partition.eof", "true")
                    .set("auto.offset.reset", "latest")
                    .set("fetch.wait.max.ms", "10")
                    .create_with_context(ProbeCallbacks)?,
            ),
        };
        read(probe)
    }

    /// The non-subscribing consumer used to read and commit `group`'s offsets.
    fn group_client(&self, group: &str) -> KafkaResult<Arc<BaseConsumer>> {
        let mut clients = lock(&self.group_clients);
        if let Some(client) = clients.get(group) {
            return Ok(client.clone());
        }
        let client: Arc<BaseConsumer> = Arc::new(consumer_config(&self.bootstrap, group).create()?);
        clients.insert(group.to_owned(), client.clone());
        Ok(client)
    }
}

/// Every partition of `topics` (a topic unknown to the broker has none). Blocking.
fn partitions_of<S: AsRef<str>>(
    client: &BaseConsumer,
    topics: &[S],
) -> KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let topic = topic.as_ref();
        let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for found in metadata.topics() {
            if found.error().is_some() {
                continue;
            }
            for partition in found.partitions() {
                list.add_partition(topic, partition.id());
            }
        }
    }
    Ok(list)
}

/// A partition and the offset its group committed there, if any.
type Committed = (i32, Option<i64>);

/// The committed offset of every partition of `topics` for the group of `client`
/// (`None`: nothing committed), grouped by topic. Blocking.
fn committed_by_topic(
    client: &BaseConsumer,
    partitions: TopicPartitionList,
) -> KafkaResult<BTreeMap<String, Vec<Committed>>> {
    let committed = client.committed_offsets(partitions, REQUEST_TIMEOUT)?;
    let mut by_topic: BTreeMap<String, Vec<Committed>> = BTreeMap::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        by_topic
            .entry(element.topic().to_owned())
            .or_default()
            .push((element.partition(), offset));
    }
    Ok(by_topic)
}

/// The low watermark and the end (high watermark) of each of `partitions` of `topic`,
/// as `partition → (low, end)`. Blocking; `probe` is the handle's watermark consumer.
///
/// The end is read the way a consumer sees it, by fetching up to the end of each
/// partition, because ListOffsets cannot be trusted for it: tansu 0.6's `memory://`
/// engine answers ListOffsets(latest) with the base offset of the most recently written
/// *record batch* plus one, which is far below the end as soon as a producer batches.
/// ListOffsets still gives a lower bound, so the fetch starts there (or at `floor`, the
/// group's committed offset, when that is further) and reads at most the last batch: cheap
/// however long the backlog. On Kafka itself the lower bound is already the end, and the
/// fetch returns the last record and end-of-partition at once.
fn partition_ends(
    probe: &BaseConsumer<ProbeCallbacks>,
    topic: &str,
    partitions: &[Committed],
) -> KafkaResult<BTreeMap<i32, (i64, i64)>> {
    let mut ends = BTreeMap::new();
    let mut starts = TopicPartitionList::new();
    for &(partition, floor) in partitions {
        let (low, listed) = probe.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let from = (listed - 1).max(low).max(floor.unwrap_or(0)).max(0);
        ends.insert(partition, (low, from));
        starts.add_partition_offset(topic, partition, Offset::Offset(from))?;
    }
    if ends.is_empty() {
        return Ok(ends);
    }
    probe.assign(&starts)?;
    let mut pending: HashSet<i32> = ends.keys().copied().collect();
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let outcome = loop {
        if pending.is_empty() {
            break Ok(());
        }
        if std::time::Instant::now() > deadline {
            break Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::RequestTimedOut,
            ));
        }
        match probe.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                if let Some((_, end)) = ends.get_mut(&message.partition()) {
                    *end = (*end).max(message.offset() + 1);
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            // Errors while fetching (a broker reconnecting, a leader moving) are retried by
            // librdkafka; the deadline bounds how long that may take.
            Some(Err(error)) => {
                tracing::debug!(%error, topic, "reading partition ends");
            }
        }
    };
    probe.unassign()?;
    outcome.map(|()| ends)
}

/// Commits the end offset of every partition `group` has no committed offset for, so
/// that the group exists and keeps what is published from now on. Blocking.
fn position_new_group(inner: &Inner, group: &str, topics: &[String]) -> KafkaResult<()> {
    let client = inner.group_client(group)?;
    // A topic created a moment ago may not be in the metadata yet: wait for all of it.
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let partitions = loop {
        let partitions = partitions_of(&client, topics)?;
        if partitions.count() >= topics.len() || std::time::Instant::now() > deadline {
            break partitions;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut starts = TopicPartitionList::new();
    for (topic, partitions) in committed_by_topic(&client, partitions)? {
        let uncommitted: Vec<Committed> = partitions
            .into_iter()
            .filter(|(_, committed)| committed.is_none())
            .collect();
        if uncommitted.is_empty() {
            continue;
        }
        let ends = inner.with_probe(|probe| partition_ends(probe, &topic, &uncommitted))?;
        for (partition, (_, end)) in ends {
            starts.add_partition_offset(&topic, partition, Offset::Offset(end))?;
        }
    }
    if starts.count() > 0 {
        // Refused when another consumer of the group joined in the meantime (a commit
        // from outside an active group): then that consumer has positioned the group, or
        // it starts at the earliest offset, which redelivers rather than loses.
        if let Err(error) = commit_within(client, starts, REQUEST_TIMEOUT) {
            tracing::warn!(%group, %error, "could not commit the starting offsets of a new group");
        }
    }
    Ok(())
}

/// A synchronous commit that gives up after `timeout`. librdkafka's own has no timeout:
/// it waits for the group coordinator for as long as the broker is away, so it runs on a
/// thread of its own that is left to finish alone if it takes too long. Blocking.
fn commit_within(
    client: Arc<BaseConsumer>,
    offsets: TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<()> {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kafka-commit".into())
        .spawn(move || {
            let _ = done.send(client.commit(&offsets, CommitMode::Sync));
        })
        .map_err(|_| KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail))?;
    outcome
        .recv_timeout(timeout)
        .unwrap_or(Err(KafkaError::ConsumerCommit(
            RDKafkaErrorCode::RequestTimedOut,
        )))
}

/// Messages of `topics` that `group` has not committed past. Blocking.
fn lag_of(inner: &Inner, group: &str, topics: &[String]) -> KafkaResult<u64> {
    let client = inner.group_client(group)?;
    let partitions = partitions_of(&client, topics)?;
    let mut lag = 0u64;
    for (topic, partitions) in committed_by_topic(&client, partitions)? {
        let ends = inner.with_probe(|probe| partition_ends(probe, &topic, &partitions))?;
        for (partition, committed) in partitions {
            let Some(&(low, end)) = ends.get(&partition) else {
                continue;
            };
            let from = committed.map_or(low, |committed| committed.max(low));
            lag += u64::try_from(end - from).unwrap_or(0);
        }
    }
    Ok(lag)
}

#[async_trait]
impl Publisher for KafkaBroker {
    async fn publish(&self, envelope: Envelope) -> Result<()> {
        self.inner
            .produce(None, std::slice::from_ref(&envelope))
            .await
    }

    async fn publish_all(&self, envelopes: Vec<Envelope>) -> Result<()> {
        self.inner.produce(None, &envelopes).await
    }
}

#[async_trait]
impl Subscriber for KafkaBroker {
    async fn declare(&self, subscription: &Subscription) -> Result<()> {
        if self.inner.is_closing() {
            return Err(BrokerError::Closed);
        }
        let group = subscription.group.as_str();
        let mut wanted = subscription.topics.clone();
        wanted.push(topics::dead_letter_of(group));
        self.inner
            .ensure_topics(&wanted)
            .await
            .map_err(|detail| subscribe_error(group, detail))?;
        let inner = self.inner.clone();
        let topics = subscription.topics.clone();
        let owned_group = group.to_owned();
        tokio::task::spawn_blocking(move || position_new_group(&inner, &owned_group, &topics))
            .await
            .map_err(|error| subscribe_error(group, error))?
            .map_err(|error| subscribe_error(group, format!("positioning the group: {error}")))
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<Deliveries> {
        self.declare(&subscription).await?;
        let dead_letter_topic = topics::dead_letter_of(&subscription.group);
        start_consumer(
            self.inner.clone(),
            subscription.group.clone(),
            subscription.topics.clone(),
            dead_letter_topic,
            subscription.prefetch,
        )
        .await
    }

    async fn subscribe_dead_letters(&self, group: &str) -> Result<Deliveries> {
        let topic = topics::dead_letter_of(group);
        let reader = format!("{topic}-reader");
        // No positioning here: the reader wants every dead letter, also those written
        // before it first subscribed, which `auto.offset.reset=earliest` gives it.
        self.inner
            .ensure_topics(&[topic.as_str()])
            .await
            .map_err(|detail| subscribe_error(&reader, detail))?;
        let dead_letter_topic = topics::dead_letter_of(&reader);
        start_consumer(
            self.inner.clone(),
            reader,
            vec![topic],
            dead_letter_topic,
            DEAD_LETTER_PREFETCH,
        )
        .await
    }

    async fn backlog(&self, subscription: &Subscription) -> Result<u64> {
        if self.inner.is_closing() {
            return Err(BrokerError::Closed);
        }
        let inner = self.inner.clone();
        let group = subscription.group.clone();
        let topics = subscription.topics.clone();
        let backlog_error = |detail: String| BrokerError::Backlog {
            group: subscription.group.clone(),
            detail,
        };
        tokio::task::spawn_blocking(move || lag_of(&inner, &group, &topics))
            .await
            .map_err(|error| backlog_error(error.to_string()))?
            .map_err(|error| backlog_error(error.to_string()))
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    fn backend(&self) -> Backend {
        Backend::Kafka
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            broker_restart: true,
            fault_injection: false,
        }
    }

    async fn close(&self) -> Result<()> {
        self.inner.closing.send_replace(true);
        // Let the consumers leave their groups first, so that their partitions go to the
        // group's other consumers at once rather than after a session timeout.
        let mut running = self.inner.consumers.subscribe();
        let left = tokio::time::timeout(CLOSE_TIMEOUT, running.wait_for(|running| *running == 0));
        if left.await.is_err() {
            tracing::warn!("kafka consumers still closing after {CLOSE_TIMEOUT:?}; not waiting");
        }
        let clients = (
            std::mem::take(&mut *lock(&self.inner.group_clients)),
            lock(&self.inner.probe).take(),
        );
        close_in_background(clients, || {});
        let producer = self.inner.producer();
        tokio::task::spawn_blocking(move || producer.flush(REQUEST_TIMEOUT))
            .await
            .map_err(|error| BrokerError::Connect {
                backend: "kafka",
                address: self.inner.bootstrap.clone(),
                detail: error.to_string(),
            })?
            .map_err(|error| BrokerError::Publish {
                topic: String::new(),
                detail: format!("flushing on close: {error}"),
            })
    }
}

// ---------------------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------------------

/// Where one delivered record sits: the partition state it belongs to (`epoch`
/// identifies one assignment of the partition to this consumer) and its offset.
#[derive(Debug, Clone)]
struct Slot {
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
struct Tracker {
    partitions: HashMap<String, HashMap<i32, PartitionState>>,
    epochs: u64,
}

impl Tracker {
    fn assign(&mut self, partitions: &TopicPartitionList) {
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
    fn revoke(&mut self, partitions: &TopicPartitionList) -> Vec<(Arc<str>, i32, i64)> {
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

    fn receive(&mut self, topic: &str, partition: i32, offset: i64) -> Slot {
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
    fn is_current(&mut self, slot: &Slot) -> bool {
        self.state(slot).is_some()
    }

    /// Marks a record settled; false when its partition has been revoked since.
    fn settle(&mut self, slot: &Slot) -> bool {
        match self.state(slot) {
            Some(state) => state.in_flight.remove(&slot.offset),
            None => false,
        }
    }

    /// The commit points that moved since the last call (and records them as committed).
    fn due(&mut self) -> Vec<(Arc<str>, i32, i64)> {
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
    fn commit_failed(&mut self, offsets: &TopicPartitionList) {
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

fn offsets_list(due: &[(Arc<str>, i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(due.len());
    for (topic, partition, offset) in due {
        // Only fails for an invalid offset, which a commit point never is.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

/// What a consumer's task, its rebalance callbacks and its deliveries share.
struct Consumption {
    inner: Arc<Inner>,
    group: String,
    dead_letter_topic: String,
    tracker: Mutex<Tracker>,
    /// Weak, so that the channel closes (and `Deliveries::next` ends) once the consumer
    /// task stops, even while deliveries are still out.
    sender: mpsc::WeakSender<Delivery>,
    /// Wakes the committer after a settle.
    settled: Notify,
    /// Counts assignments; `subscribe` waits for the first.
    assignments: watch::Sender<u64>,
    /// Set once the consumer task has stopped: nothing is redelivered to it any more.
    stopped: AtomicBool,
}

impl Consumption {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn settle(&self, slot: &Slot) {
        if lock(&self.tracker).settle(slot) {
            self.settled.notify_one();
        }
    }

    /// Hands `envelope` to this consumer again (retry, abandon), unless the partition has
    /// been taken away since: then its new owner redelivers it from the last commit.
    async fn redeliver(self: Arc<Self>, envelope: Envelope, slot: Slot) {
        if self.stopped.load(Ordering::Acquire) || !lock(&self.tracker).is_current(&slot) {
            return;
        }
        let Some(sender) = self.sender.upgrade() else {
            return;
        };
        // A closed channel would hand the delivery straight back to `abandon`.
        if sender.is_closed() {
            return;
        }
        let settle = KafkaSettle {
            consumption: self.clone(),
            slot,
            envelope: envelope.clone(),
        };
        let _ = sender
            .send(Delivery::new(
                envelope,
                self.group.clone(),
                Box::new(settle),
            ))
            .await;
    }

    fn redeliver_later(self: &Arc<Self>, envelope: Envelope, slot: Slot, delay: Duration) {
        // No runtime means the process is shutting down: the record stays uncommitted
        // and the group gets it again.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let consumption = self.clone();
        runtime.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            consumption.redeliver(envelope, slot).await;
        });
    }
}

/// Settles one Kafka delivery.
struct KafkaSettle {
    consumption: Arc<Consumption>,
    slot: Slot,
    /// Kept for `abandon`, which gets no envelope.
    envelope: Envelope,
}

#[async_trait]
impl Settle for KafkaSettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.consumption.settle(&self.slot);
        Ok(())
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
        self.consumption.redeliver_later(envelope, self.slot, delay);
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()> {
        let topic = self.consumption.dead_letter_topic.as_str();
        match self
            .consumption
            .inner
            .produce(Some(topic), std::slice::from_ref(&envelope))
            .await
        {
            Ok(()) => {
                self.consumption.settle(&self.slot);
                Ok(())
            }
            Err(error) => {
                // Not moved: hand the original back so it is handled again.
                let id = envelope.id;
                self.consumption
                    .redeliver_later(self.envelope, self.slot, Duration::ZERO);
                Err(BrokerError::Settle {
                    id,
                    detail: format!("producing to `{topic}`: {error}"),
                })
            }
        }
    }

    fn abandon(self: Box<Self>) {
        self.consumption
            .redeliver_later(self.envelope, self.slot, Duration::ZERO);
    }
}

/// The consumer's librdkafka context: keeps the tracker in step with rebalances.
struct ConsumerCallbacks {
    consumption: Arc<Consumption>,
}

impl ClientContext for ConsumerCallbacks {
    fn error(&self, error: KafkaError, reason: &str) {
        // rdkafka logs these at error level by default, but a consumer sees them for every
        // broker hiccup and recovers by itself; the consumer loop gets them too.
        tracing::warn!(group = %self.consumption.group, %error, reason, "kafka consumer");
    }
}

/// The watermark probe's context: end-of-partition is what it is looking for, not an
/// error worth a log line.
struct ProbeCallbacks;

impl ClientContext for ProbeCallbacks {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::debug!(%error, reason, "kafka watermark probe");
        }
    }
}

impl ConsumerContext for ProbeCallbacks {}

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

type GroupConsumer = StreamConsumer<ConsumerCallbacks>;

/// Stops the consumer task when the [`Deliveries`] holding it is dropped.
struct ConsumerGuard {
    _stop: watch::Sender<()>,
}

/// Starts a consumer for `group` on `topics` and returns once it has its assignment.
async fn start_consumer(
    inner: Arc<Inner>,
    group: String,
    topics: Vec<String>,
    dead_letter_topic: String,
    prefetch: u16,
) -> Result<Deliveries> {
    if inner.is_closing() {
        return Err(BrokerError::Closed);
    }
    let (sender, receiver) = mpsc::channel(usize::from(prefetch.max(1)));
    let (assignments, mut assigned) = watch::channel(0u64);
    let consumption = Arc::new(Consumption {
        inner: inner.clone(),
        group: group.clone(),
        dead_letter_topic,
        tracker: Mutex::new(Tracker::default()),
        sender: sender.downgrade(),
        settled: Notify::new(),
        assignments,
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
    inner.consumers.send_modify(|running| *running += 1);
    tokio::spawn(consume(
        Arc::new(consumer),
        consumption,
        sender,
        stopped,
        inner.closing.subscribe(),
    ));
    let guard = ConsumerGuard { _stop: stop };

    let joined = tokio::time::timeout(ASSIGNMENT_TIMEOUT, async {
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

/// Resolves once the consumer should stop: its guard dropped or the broker closing.
async fn stop_requested(stopped: &mut watch::Receiver<()>, closing: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = stopped.changed() => {}
        _ = closing.wait_for(|closing| *closing) => {}
    }
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
async fn consume(
    consumer: Arc<GroupConsumer>,
    consumption: Arc<Consumption>,
    sender: mpsc::Sender<Delivery>,
    mut stopped: watch::Receiver<()>,
    mut closing: watch::Receiver<bool>,
) {
    let committer = tokio::spawn(commit_loop(consumer.clone(), consumption.clone()));
    loop {
        // Room in the channel first, so that a record taken from librdkafka is never
        // held while the consumer is told to stop.
        let permit = tokio::select! {
            biased;
            _ = stop_requested(&mut stopped, &mut closing) => break,
            permit = sender.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let received = tokio::select! {
            biased;
            _ = stop_requested(&mut stopped, &mut closing) => break,
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
        let slot = lock(&consumption.tracker).receive(
            message.topic(),
            message.partition(),
            message.offset(),
        );
        match envelope_from(&message) {
            Ok(envelope) => {
                let settle = KafkaSettle {
                    consumption: consumption.clone(),
                    slot,
                    envelope: envelope.clone(),
                };
                permit.send(Delivery::new(
                    envelope,
                    consumption.group.clone(),
                    Box::new(settle),
                ));
            }
            Err(reason) => {
                drop(permit);
                tokio::spawn(dead_letter_record(
                    consumption.clone(),
                    message.detach(),
                    reason,
                    slot,
                ));
            }
        }
    }
    // Whatever is still out goes back to the group with everything else unacked; it
    // must not be handed to this consumer again on the way out.
    consumption.stop();
    drop(sender);
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
    close_in_background(consumer, move || {
        consumers.send_modify(|running| *running = running.saturating_sub(1));
    });
}

/// Drops librdkafka clients on a thread of their own, then runs `done`. Closing a
/// consumer leaves its group and waits for the broker to answer, which takes as long as
/// the broker is away (indefinitely, if it never comes back). Neither a runtime thread
/// nor a runtime shutdown (which waits for `spawn_blocking` tasks) should wait for that.
fn close_in_background<T: Send + 'static>(clients: T, done: impl FnOnce() + Send + 'static) {
    let closing = move || {
        drop(clients);
        done();
    };
    // If no thread can be had, `closing` is dropped unrun here (closing the clients on
    // this thread) and `done` is skipped: nobody waits for it past `CLOSE_TIMEOUT`.
    if let Err(error) = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(closing)
    {
        tracing::warn!(%error, "cannot start a thread to close kafka clients");
    }
}

/// Commits the settled prefixes, at most once per [`COMMIT_INTERVAL`].
async fn commit_loop(consumer: Arc<GroupConsumer>, consumption: Arc<Consumption>) {
    loop {
        consumption.settled.notified().await;
        tokio::time::sleep(COMMIT_INTERVAL).await;
        let due = lock(&consumption.tracker).due();
        if due.is_empty() {
            continue;
        }
        let offsets = offsets_list(&due);
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(group = %consumption.group, %error, "offset commit failed; will retry");
            lock(&consumption.tracker).commit_failed(&offsets);
            consumption.settled.notify_one();
        }
    }
}

/// The key and headers under which a record that is not an envelope goes to the
/// dead-letter topic. The copy is made readable as an envelope, so that
/// [`Subscriber::subscribe_dead_letters`] can hand it out like any dead letter: key and
/// header values become UTF-8 (invalid bytes replaced), and a record without a usable
/// `message-id` gets a fresh one. The payload is kept byte for byte.
fn dead_letter_form(record: &OwnedMessage, reason: &str, group: &str) -> (String, OwnedHeaders) {
    let ours = [
        headers::DEAD_LETTER_REASON,
        headers::DEAD_LETTERED_BY,
        headers::MESSAGE_TOPIC,
    ];
    let mut has_id = false;
    let mut dead_headers = OwnedHeaders::new();
    for header in record
        .headers()
        .into_iter()
        .flat_map(|original| original.iter())
    {
        let value = String::from_utf8_lossy(header.value.unwrap_or_default());
        if header.key == headers::MESSAGE_ID {
            if Uuid::parse_str(&value).is_err() {
                continue;
            }
            has_id = true;
        }
        if ours.contains(&header.key) {
            continue;
        }
        dead_headers = dead_headers.insert(Header {
            key: header.key,
            value: Some(value.as_ref()),
        });
    }
    if !has_id {
        let id = Uuid::now_v7().to_string();
        dead_headers = dead_headers.insert(Header {
            key: headers::MESSAGE_ID,
            value: Some(id.as_str()),
        });
    }
    let dead_headers = dead_headers
        .insert(Header {
            key: headers::DEAD_LETTER_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::DEAD_LETTERED_BY,
            value: Some(group),
        })
        .insert(Header {
            key: headers::MESSAGE_TOPIC,
            value: Some(record.topic()),
        });
    let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
    (key, dead_headers)
}

/// Moves a record that is not an envelope to the group's dead-letter topic, then marks
/// it settled. Retries until the broker takes it: settling it earlier would lose it.
async fn dead_letter_record(
    consumption: Arc<Consumption>,
    record: OwnedMessage,
    reason: String,
    slot: Slot,
) {
    tracing::warn!(
        group = %consumption.group,
        topic = record.topic(),
        partition = record.partition(),
        offset = record.offset(),
        %reason,
        "record is not an orderflow envelope; dead-lettering it"
    );
    let topic = consumption.dead_letter_topic.as_str();
    let (key, record_headers) = dead_letter_form(&record, &reason, &consumption.group);
    let mut attempt = 0;
    loop {
        if !lock(&consumption.tracker).is_current(&slot) {
            return;
        }
        attempt += 1;
        let outcome = async {
            consumption.inner.ensure_topics(&[topic]).await?;
            let mut dead = FutureRecord::<str, [u8]>::to(topic)
                .key(key.as_str())
                .headers(record_headers.clone());
            if let Some(payload) = record.payload() {
                dead = dead.payload(payload);
            }
            let producer = consumption.inner.producer();
            let report = producer
                .send_result(dead)
                .map_err(|(error, _)| error.to_string())?;
            match report.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error.to_string()),
                Err(_) => Err("the producer went away".to_owned()),
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                consumption.settle(&slot);
                return;
            }
            Err(error) => {
                tracing::warn!(group = %consumption.group, %error, "dead-lettering a record failed; retrying");
                tokio::time::sleep(crate::retry_backoff(attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn assignment(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition("t", *partition);
        }
        list
    }

    #[test]
    fn urls_name_the_bootstrap_servers() {
        assert_eq!(parse_url("kafka://a:9092").unwrap(), "a:9092");
        assert_eq!(parse_url("kafka://a:1,b:2/").unwrap(), "a:1,b:2");
        assert!(parse_url("kafka://").is_err());
        assert!(parse_url("kafka://host").is_err());
        assert!(parse_url("amqp://a:1").is_err());
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

    #[test]
    fn envelopes_survive_the_record_format() {
        let envelope = Envelope::new("orders", "order-1", "{}")
            .with_header(headers::EVENT_TYPE, "OrderPlaced")
            .with_header(headers::ATTEMPT, "2");
        let record = OwnedMessage::new(
            Some(envelope.payload.to_vec()),
            Some(envelope.key.clone().into_bytes()),
            envelope.topic.clone(),
            Timestamp::CreateTime(envelope.published_at.timestamp_millis()),
            0,
            0,
            Some(record_headers(&envelope)),
        );
        assert_eq!(envelope_from(&record).unwrap(), envelope);
    }

    #[test]
    fn a_foreign_record_is_dead_lettered_as_a_readable_envelope() {
        let record = OwnedMessage::new(
            Some(vec![0xff, 0x00]),
            Some(vec![b'k', 0xff]),
            "orders".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(OwnedHeaders::new().insert(Header {
                key: "note",
                value: Some(&[0xffu8][..]),
            })),
        );
        let reason = envelope_from(&record).unwrap_err();
        let (key, dead_headers) = dead_letter_form(&record, &reason, "billing");
        let copy = OwnedMessage::new(
            record.payload().map(<[u8]>::to_vec),
            Some(key.into_bytes()),
            "billing.dlq".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(dead_headers),
        );
        let envelope = envelope_from(&copy).expect("the copy is an envelope");
        assert_eq!(envelope.key, "k\u{fffd}");
        assert_eq!(&envelope.payload[..], &[0xff, 0x00]);
        assert_eq!(
            envelope.header(headers::DEAD_LETTER_REASON),
            Some(reason.as_str())
        );
        assert_eq!(envelope.header(headers::DEAD_LETTERED_BY), Some("billing"));
        assert_eq!(envelope.header(headers::MESSAGE_TOPIC), Some("orders"));
        assert_eq!(envelope.header("note"), Some("\u{fffd}"));
    }

    /// Against a live broker (`ORDERFLOW_KAFKA_URL`, set by `scripts/test.sh`): a record
    /// some other producer wrote without our headers neither blocks its partition nor
    /// vanishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_record_goes_to_the_dead_letter_topic_and_the_next_is_delivered() {
        let Some(url) =
            orderflow_kit::testenv::require("ORDERFLOW_KAFKA_URL", "a Kafka-protocol broker")
        else {
            return;
        };
        let broker = KafkaBroker::connect(&url).await.unwrap();
        let run = Uuid::now_v7().simple();
        let topic = format!("foreign-{run}");
        let group = format!("tolerant-{run}");
        let subscription = Subscription::new(&group, [&topic]);
        let mut deliveries = broker.subscribe(subscription.clone()).await.unwrap();

        // The foreign record first, then a good one with the same key: same partition, so
        // the good one can only arrive once the foreign one is out of the way.
        let raw: FutureProducer = producer_config(&broker.inner.bootstrap).create().unwrap();
        raw.send(
            FutureRecord::to(&topic)
                .key("k")
                .payload("no headers at all"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let good = Envelope::new(&topic, "k", "good");
        broker.publish(good.clone()).await.unwrap();

        let delivery = deliveries
            .next_within(Duration::from_secs(30))
            .await
            .expect("the good message");
        assert_eq!(delivery.envelope().id, good.id);
        delivery.ack().await.unwrap();

        let mut dead = broker.subscribe_dead_letters(&group).await.unwrap();
        let dead_letter = dead
            .next_within(Duration::from_secs(30))
            .await
            .expect("the foreign record on the dead-letter topic");
        let envelope = dead_letter.envelope().clone();
        dead_letter.ack().await.unwrap();
        assert_eq!(&envelope.payload[..], b"no headers at all");
        assert_eq!(
            envelope.header(headers::MESSAGE_TOPIC),
            Some(topic.as_str())
        );
        let reason = envelope.header(headers::DEAD_LETTER_REASON).unwrap();
        assert!(reason.contains(headers::MESSAGE_ID), "{reason}");

        // Both records of the topic count as settled: the group's backlog drains.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let backlog = broker.backlog(&subscription).await.unwrap();
            if backlog == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "backlog stuck at {backlog}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop((deliveries, dead));
        broker.close().await.unwrap();
    }

    /// Against a live broker: a consumer whose application leaves its full channel
    /// untouched holds up a rebalance only until `MAX_POLL_INTERVAL`, then its partitions
    /// and unacked messages go to the consumer that joined.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "waits MAX_POLL_INTERVAL (30 s); run with --ignored"]
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

    #[test]
    fn a_record_without_an_id_is_not_an_envelope() {
        let record = OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "orders".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        let reason = envelope_from(&record).unwrap_err();
        assert!(reason.contains(headers::MESSAGE_ID), "{reason}");
    }
}
