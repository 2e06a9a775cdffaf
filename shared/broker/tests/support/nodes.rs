//! Broker nodes a test owns, for the destructive cases (`tests/durability.rs`): a RabbitMQ
//! node or a tansu of its own (`orderflow-nodes`), never the shared brokers, so that
//! killing it with SIGKILL disturbs no other test.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::Duration,
};

use orderflow_broker::Deliveries;
use orderflow_kit::testenv;
use orderflow_nodes::{RabbitNode, TansuNode};
use uuid::Uuid;

/// A broker process this test started: killed when dropped.
pub enum Node {
    /// A RabbitMQ node on ports of its own.
    Rabbit(RabbitNode),
    /// A tansu with SQLite storage on a port of its own.
    Tansu(TansuNode),
}

impl Node {
    /// Starts a node for the backend called `name` (`rabbitmq` or `kafka`); `None` (after
    /// saying why) when its broker is not installed outside CI. Under `CI=true` a missing
    /// `rabbitmq-server` or tansu binary panics.
    pub async fn start(name: &str) -> Option<Node> {
        let dir = std::env::temp_dir();
        match name {
            "rabbitmq" => {
                if RabbitNode::installed().is_none() {
                    let message = "RabbitMQ is not installed (no rabbitmq-server to start a node of the test's own)";
                    assert!(!testenv::in_ci(), "CI=true and {message}");
                    eprintln!("SKIPPED: {message}");
                    return None;
                }
                let node = RabbitNode::start(&dir)
                    .await
                    .unwrap_or_else(|error| panic!("starting a RabbitMQ node: {error:#}"));
                Some(Node::Rabbit(node))
            }
            "kafka" => {
                let binary = testenv::require(
                    "ORDERFLOW_TANSU_BIN",
                    "the tansu binary (to kill and restart a broker of the test's own)",
                )?;
                let node = TansuNode::start(&PathBuf::from(binary), &dir)
                    .await
                    .unwrap_or_else(|error| panic!("starting tansu: {error:#}"));
                Some(Node::Tansu(node))
            }
            other => panic!("no node for backend {other}"),
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        match self {
            Node::Rabbit(node) => node.amqp_url(),
            Node::Tansu(node) => node.kafka_url(),
        }
    }

    /// Kills the broker with SIGKILL.
    pub async fn kill9(&mut self) {
        let killed = match self {
            Node::Rabbit(node) => node.kill9().await,
            Node::Tansu(node) => node.kill9().await,
        };
        killed.unwrap_or_else(|error| panic!("kill -9 of the broker: {error:#}"));
    }

    /// Starts the broker again on the same port with the same data.
    pub async fn restart(&mut self) {
        let restarted = match self {
            Node::Rabbit(node) => node.restart().await,
            Node::Tansu(node) => node.restart().await,
        };
        restarted.unwrap_or_else(|error| panic!("restarting the broker: {error:#}"));
    }

    /// The RabbitMQ node (for the cases only RabbitMQ has, like memory alarms).
    pub fn rabbit(&self) -> &RabbitNode {
        match self {
            Node::Rabbit(node) => node,
            Node::Tansu(_) => panic!("not a RabbitMQ node"),
        }
    }
}

/// Receives and acks deliveries until every id in `wanted` has arrived at least once,
/// failing the test (with how many are missing) at `timeout`. Returns how many times each
/// id arrived, counted here, independently of any deduplication downstream.
pub async fn receive_all(
    deliveries: &mut Deliveries,
    wanted: &HashSet<Uuid>,
    timeout: Duration,
) -> HashMap<Uuid, usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    let missing =
        |seen: &HashMap<Uuid, usize>| wanted.iter().filter(|id| !seen.contains_key(id)).count();
    while missing(&seen) > 0 {
        let delivery = match tokio::time::timeout_at(deadline, deliveries.next()).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => panic!(
                "the subscription ended with {} of {} still missing",
                missing(&seen),
                wanted.len()
            ),
            Err(_) => panic!(
                "{} of {} messages never arrived within {timeout:?}",
                missing(&seen),
                wanted.len()
            ),
        };
        *seen.entry(delivery.envelope().id).or_default() += 1;
        // An ack may fail on a channel that died under it: the message comes again.
        let _ = delivery.ack().await;
    }
    seen
}
