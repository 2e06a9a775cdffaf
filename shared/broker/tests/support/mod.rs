//! Test support for the contract suite: connecting to each backend, unique names,
//! collecting deliveries with a deadline, and staging outages (a cut RabbitMQ connection,
//! a killed and restarted Kafka-protocol broker), and broker nodes of a test's own to kill
//! (`nodes.rs`).

// Each test binary (contract.rs, durability.rs) uses its own part of this module.
#![allow(dead_code)]

pub mod nodes;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use orderflow_broker::{Broker, Deliveries, Envelope};
use orderflow_kit::testenv;

/// A connected backend for one test.
pub struct Harness {
    /// `memory`, `rabbitmq` or `kafka`: printed in the output of cases that report figures.
    pub name: &'static str,
    /// The broker under test.
    pub broker: Arc<dyn Broker>,
    url: String,
}

impl Harness {
    /// Connects to the backend called `name`; `None` (after saying why) when it is not
    /// configured outside CI. Under `CI=true` a missing broker panics.
    pub async fn connect(name: &'static str) -> Option<Harness> {
        let url = match name {
            "memory" => format!("memory://contract-{}", uuid::Uuid::now_v7().simple()),
            "rabbitmq" => testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ")?,
            "kafka" => testenv::require("ORDERFLOW_KAFKA_URL", "a Kafka-protocol broker")?,
            other => panic!("no harness for backend {other}"),
        };
        let broker = orderflow_broker::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("{name}: cannot connect to {url}: {error}"));
        Some(Harness { name, broker, url })
    }

    /// An outage this test controls, with a broker handle of its own so that cutting it
    /// off does not disturb tests running in parallel.
    pub async fn outage(&self) -> Box<dyn Outage> {
        match self.name {
            "rabbitmq" => Box::new(RabbitOutage::start(&self.url).await),
            "kafka" => Box::new(TansuOutage::start().await),
            other => panic!("{other} declares broker_restart but has no outage harness"),
        }
    }
}

/// Something that takes the broker away and brings it back.
#[async_trait]
pub trait Outage: Send {
    /// The broker handle that lives through the outage.
    fn broker(&self) -> Arc<dyn Broker>;
    /// The broker goes away (connections cut, or the process killed).
    async fn begin(&mut self);
    /// The broker is reachable again.
    async fn end(&mut self);
    /// Cleans up whatever the outage started.
    async fn finish(&mut self);
}

/// RabbitMQ: the broker is shared with other tests, so instead of stopping it the server
/// closes exactly this handle's connections (`rabbitmqctl close_connection`).
struct RabbitOutage {
    broker: Arc<orderflow_broker::rabbitmq::RabbitBroker>,
}

impl RabbitOutage {
    async fn start(url: &str) -> Self {
        let broker = orderflow_broker::rabbitmq::RabbitBroker::connect(url)
            .await
            .expect("a second RabbitMQ connection");
        RabbitOutage {
            broker: Arc::new(broker),
        }
    }
}

#[async_trait]
impl Outage for RabbitOutage {
    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    async fn begin(&mut self) {
        let closed =
            orderflow_broker::rabbitmq::close_connections_for_test(self.broker.connection_name())
                .await
                .expect("rabbitmqctl close_connection");
        assert!(
            closed > 0,
            "found no connection named {}",
            self.broker.connection_name()
        );
    }

    async fn end(&mut self) {
        // The server is still up; the client reconnects on its own.
    }

    async fn finish(&mut self) {
        let _ = self.broker.close().await;
    }
}

/// Kafka: a tansu of this test's own, storing to SQLite so that its data survives being
/// killed with SIGKILL and started again on the same port.
struct TansuOutage {
    node: orderflow_nodes::TansuNode,
    broker: Arc<dyn Broker>,
}

impl TansuOutage {
    async fn start() -> Self {
        let binary = testenv::require(
            "ORDERFLOW_TANSU_BIN",
            "the tansu binary (to kill and restart a broker)",
        )
        .expect("ORDERFLOW_TANSU_BIN is needed to stage a Kafka broker outage");
        let node =
            orderflow_nodes::TansuNode::start(std::path::Path::new(&binary), &std::env::temp_dir())
                .await
                .unwrap_or_else(|error| panic!("starting the test's own tansu: {error:#}"));
        let broker = orderflow_broker::connect(&node.kafka_url())
            .await
            .expect("connect to the test's own tansu");
        TansuOutage { node, broker }
    }
}

#[async_trait]
impl Outage for TansuOutage {
    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    async fn begin(&mut self) {
        self.node.kill9().await.expect("kill -9 of tansu");
    }

    async fn end(&mut self) {
        self.node.restart().await.expect("restarting tansu");
    }

    async fn finish(&mut self) {
        let _ = self.broker.close().await;
        // Dropping the node kills tansu and removes its directory.
    }
}

/// A name no other test (or earlier run) uses: `prefix-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// `per_key` messages for each key, interleaved (a0 b0 c0 a1 b1 …); each payload is its
/// sequence number within its key.
pub fn numbered(topic: &str, keys: &[&str], per_key: usize) -> Vec<Envelope> {
    (0..per_key)
        .flat_map(|sequence| {
            keys.iter()
                .map(move |key| Envelope::new(topic, *key, sequence.to_string()))
        })
        .collect()
}

/// Receives and acks `count` deliveries, failing the test if they do not all arrive
/// within `timeout`.
pub async fn collect_acking(
    deliveries: &mut Deliveries,
    count: usize,
    timeout: Duration,
) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let delivery = tokio::time::timeout_at(deadline, deliveries.next())
            .await
            .unwrap_or_else(|_| panic!("received {} of {count} within {timeout:?}", received.len()))
            .unwrap_or_else(|| {
                panic!("the subscription ended after {} of {count}", received.len())
            });
        received.push(delivery.envelope().clone());
        delivery.ack().await.expect("ack");
    }
    received
}
