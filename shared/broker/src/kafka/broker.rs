//! The handle, [`KafkaBroker`]: connecting, what it shares with its consumers and their
//! deliveries ([`Inner`]), and the `Publisher`, `Subscriber` and `Broker` impls, each a
//! few lines that hand over to the file doing the work.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use orderflow_events::topics;
use rdkafka::{
    admin::AdminClient,
    client::DefaultClientContext,
    consumer::BaseConsumer,
    producer::{FutureProducer, Producer},
};
use tokio::sync::watch;

use super::{
    config::{admin_config, parse_url, producer_config, REQUEST_TIMEOUT},
    consume::{start_consumer, subscribe_error},
    groups::{lag_of, position_new_group},
    watermarks::ProbeCallbacks,
};
use crate::{
    Backend, Broker, BrokerError, Capabilities, Deliveries, Envelope, Publisher, Result,
    Subscriber, Subscription,
};

/// Prefetch of a dead-letter reader (the default of [`Subscription::new`]).
const DEAD_LETTER_PREFETCH: u16 = 64;
/// How long [`Broker::close`] waits for its consumers to leave their groups.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// The Kafka backend: one idempotent producer, one admin client, and a consumer per
/// subscription. Cheap to share behind an `Arc`.
pub struct KafkaBroker {
    pub(super) inner: Arc<Inner>,
}

/// What the broker handle, its consumers and their deliveries share.
pub(super) struct Inner {
    /// `host:port[,host:port]`.
    pub(super) bootstrap: String,
    /// Replaced when librdkafka reports a fatal (unrecoverable) producer error. A lock
    /// that many can read at once: every publish clones the handle, only a replacement
    /// writes.
    pub(super) producer: RwLock<FutureProducer>,
    /// Creates topics (`topics.rs`).
    pub(super) admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist (created by us or found to exist already).
    pub(super) topics: Mutex<HashSet<String>>,
    /// One non-subscribing consumer per group, to read and commit its offsets.
    pub(super) group_clients: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// A consumer that never joins a group, used to read partition ends (see
    /// [`partition_ends`](super::watermarks::partition_ends)); the mutex also keeps two
    /// readers from reassigning it under each other. Created on first use.
    pub(super) probe: Mutex<Option<BaseConsumer<ProbeCallbacks>>>,
    /// Set by [`Broker::close`]; consumers watch it and stop.
    pub(super) closing: watch::Sender<bool>,
    /// Consumers started and not yet closed; [`Broker::close`] waits for none. A watch,
    /// so that it can wait for the count to reach zero.
    pub(super) consumers: watch::Sender<usize>,
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
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let admin: AdminClient<DefaultClientContext> = admin_config(&bootstrap)
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

impl Inner {
    pub(super) fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }
}

/// Drops librdkafka clients on a thread of their own, then runs `done`. Closing a
/// consumer leaves its group and waits for the broker to answer, which takes as long as
/// the broker is away (indefinitely, if it never comes back). Neither a runtime thread
/// nor a runtime shutdown (which waits for `spawn_blocking` tasks) should wait for that.
pub(super) fn close_in_background<T: Send + 'static>(
    clients: T,
    done: impl FnOnce() + Send + 'static,
) {
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
            refuses_unroutable: false,
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
