//! `RabbitNode` against the installed RabbitMQ: it starts on ports of its own, its URL
//! takes clients, a memory alarm goes up and down, and after kill -9 and a restart it
//! still has what it confirmed. Skips (or fails, under `CI=true`) without RabbitMQ.

use std::time::Duration;

use orderflow_broker::{Envelope, Subscription};
use orderflow_kit::testenv;
use orderflow_nodes::RabbitNode;

fn rabbitmq_installed() -> bool {
    if RabbitNode::installed().is_some() {
        return true;
    }
    let message = "RabbitMQ is not installed (no rabbitmq-server)";
    assert!(!testenv::in_ci(), "CI=true and {message}");
    eprintln!("SKIPPED: {message}");
    false
}

#[tokio::test]
async fn a_rabbit_node_takes_clients_raises_alarms_and_keeps_its_data_across_kill9() {
    if !rabbitmq_installed() {
        return;
    }
    let mut node = RabbitNode::start(&std::env::temp_dir()).await.unwrap();
    assert_ne!(node.amqp_port(), 5672, "must not be the shared node's port");
    assert!(node.node_name().starts_with("orderflow-"));
    let url = node.amqp_url();

    let broker = orderflow_broker::connect(&url).await.unwrap();
    let group = format!("nodes-test-{}", uuid::Uuid::now_v7().simple());
    let subscription = Subscription::new(group.as_str(), ["nodes.test"]);
    broker.declare(&subscription).await.unwrap();
    let envelope = Envelope::new("nodes.test", "k", "kept");
    broker.publish(envelope.clone()).await.unwrap();
    broker.close().await.unwrap();

    assert!(!node.memory_alarm_active().await.unwrap());
    node.set_memory_alarm(true).await.unwrap();
    assert!(node.memory_alarm_active().await.unwrap());
    node.set_memory_alarm(false).await.unwrap();
    assert!(!node.memory_alarm_active().await.unwrap());

    node.kill9().await.unwrap();
    assert!(!node.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", node.amqp_port()))
            .await
            .is_err(),
        "nothing may listen on the killed node's port"
    );

    node.restart().await.unwrap();
    assert!(node.is_running());
    assert_eq!(node.amqp_url(), url, "a restart keeps the ports");
    let broker = orderflow_broker::connect(&url).await.unwrap();
    let mut deliveries = broker.subscribe(subscription).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), deliveries.next())
        .await
        .expect("the message confirmed before the kill, within 30 s")
        .expect("a delivery");
    assert_eq!(delivery.envelope().id, envelope.id);
    delivery.ack().await.unwrap();
    drop(deliveries);
    broker.close().await.unwrap();

    node.stop().await.unwrap();
    assert!(!node.is_running());
}
