//! `TansuNode` against the tansu binary named by `ORDERFLOW_TANSU_BIN`: it listens on a
//! port of its own, its URL takes clients, and after kill -9 and a restart it still has
//! what it acknowledged. Skips (or fails, under `CI=true`) without the binary.

use std::{path::PathBuf, time::Duration};

use orderflow_broker::{Envelope, Subscription};
use orderflow_kit::testenv;
use orderflow_nodes::TansuNode;

#[tokio::test]
async fn a_tansu_node_takes_clients_and_keeps_its_data_across_kill9() {
    let Some(binary) = testenv::require("ORDERFLOW_TANSU_BIN", "the tansu binary") else {
        return;
    };
    let mut node = TansuNode::start(&PathBuf::from(binary), &std::env::temp_dir())
        .await
        .unwrap();
    let url = node.kafka_url();
    let topic = format!("nodes.test.{}", uuid::Uuid::now_v7().simple());
    let group = format!("nodes-test-{}", uuid::Uuid::now_v7().simple());
    let subscription = Subscription::new(group.as_str(), [topic.as_str()]);

    let broker = orderflow_broker::connect(&url).await.unwrap();
    broker.declare(&subscription).await.unwrap();
    let envelope = Envelope::new(topic.as_str(), "k", "kept");
    broker.publish(envelope.clone()).await.unwrap();
    broker.close().await.unwrap();

    node.kill9().await.unwrap();
    assert!(!node.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", node.port()))
            .await
            .is_err(),
        "nothing may listen on the killed tansu's port"
    );

    node.restart().await.unwrap();
    assert!(node.is_running());
    assert_eq!(node.kafka_url(), url, "a restart keeps the port");
    let broker = orderflow_broker::connect(&url).await.unwrap();
    let mut deliveries = broker.subscribe(subscription).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(60), deliveries.next())
        .await
        .expect("the message acknowledged before the kill, within 60 s")
        .expect("a delivery");
    assert_eq!(delivery.envelope().id, envelope.id);
    delivery.ack().await.unwrap();
    drop(deliveries);
    broker.close().await.unwrap();
}
