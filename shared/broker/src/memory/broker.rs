//! The named registry and [`MemoryBroker`], a handle to one named broker: routing a
//! publish to the groups bound to its topic (through the handle's faults, waiting for
//! room), and the `Publisher`, `Subscriber` and `Broker` impls.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, LazyLock, Mutex, Weak,
    },
};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    consumer,
    faults::{self, FaultCounters, FaultInjector, Faults},
    group::{hash_key, Group, Message},
    lock, url,
};
use crate::{
    Backend, Broker, BrokerError, Capabilities, Deliveries, Envelope, Publisher, Result,
    Subscriber, Subscription,
};

/// Every named broker of this process. Weak: a broker lives as long as a handle to it.
static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<Inner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The named broker, if a handle to it exists in this process.
pub(super) fn registered(name: &str) -> Option<Arc<Inner>> {
    lock(&REGISTRY).get(name).and_then(Weak::upgrade)
}

/// One broker, shared by every handle with the same name.
pub(super) struct Inner {
    capacity: usize,
    /// Topic → the groups bound to it; group name → its queue.
    routes: Mutex<Routes>,
    pub(super) faults: FaultCounters,
    /// Publish order across the broker; a message's place in any queue.
    next_sequence: Arc<AtomicU64>,
    next_consumer: AtomicU64,
}

#[derive(Default)]
struct Routes {
    bindings: HashMap<String, Vec<Arc<Group>>>,
    groups: HashMap<String, Arc<Group>>,
}

/// A handle to a named embedded broker.
pub struct MemoryBroker {
    name: String,
    inner: Arc<Inner>,
    injector: FaultInjector,
    closed: AtomicBool,
    /// Tells this handle's consumers to stop when it is closed.
    closing: Arc<Notify>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MemoryBroker")
            .field("name", &self.name)
            .field("faults", &self.injector.faults)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// Connects to (creating if needed) the broker `memory://name?faults…` names.
    pub fn from_url(url: &str) -> Result<Self> {
        let url::Settings {
            name,
            faults,
            capacity,
        } = url::parse(url)?;
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
        Ok(MemoryBroker {
            name,
            inner,
            injector: FaultInjector::new(faults),
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
        self.injector.faults
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
        let consumer = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        let dead_letters = self.dead_letter_group(&group_name);
        consumer::spawn(
            group_name,
            group,
            dead_letters,
            consumer,
            prefetch,
            self.closing.clone(),
        )
    }

    /// Publishes one message: the drop fault, fan-out with per-group faults, back-pressure.
    async fn publish_one(&self, envelope: Envelope) -> Result<()> {
        self.check_open()?;
        let groups: Vec<Arc<Group>> = lock(&self.inner.routes)
            .bindings
            .get(&envelope.topic)
            .cloned()
            .unwrap_or_default();
        let decisions = self.injector.decide(groups.len());
        if decisions.dropped {
            self.inner.faults.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(BrokerError::Publish {
                topic: envelope.topic,
                detail: "no confirm: the message was lost on its way to the broker (injected drop fault)"
                    .into(),
            });
        }
        if decisions.lost {
            // Confirmed, then gone: the publisher has its Ok, no group will ever see it.
            self.inner.faults.lost.fetch_add(1, Ordering::Relaxed);
            return Ok(());
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
            group.wait_for_room().await;
            let copies = if fault.duplicate { 2 } else { 1 };
            for copy in 0..copies {
                let message = Message {
                    sequence: self.inner.next_sequence.fetch_add(1, Ordering::Relaxed),
                    key_hash,
                    envelope: envelope.clone(),
                    twin: copy == 1,
                };
                if copy == 1 {
                    self.inner.faults.duplicated.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(delay) = fault.delay {
                    faults::hold_delayed(&group, &self.inner.faults, message, delay);
                } else if let Some(pass) = fault.reorder {
                    faults::hold_reordered(&group, &self.inner.faults, message, pass);
                } else {
                    let mut state = lock(&group.state);
                    group.enqueue(&mut state, message);
                    group.wake(state);
                }
            }
        }
        Ok(())
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
            refuses_unroutable: false,
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
    use std::time::Duration;

    use super::*;

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
}
