//! `orderflow scenario`: every scenario run on the embedded broker, on RabbitMQ and on
//! Kafka, its claim checked in the JSON it prints.
//!
//! ```text
//! cargo test -p orderflow --test scenarios
//! /work/tools/with-brokers.sh cargo test -p orderflow --test scenarios   # with RabbitMQ and Kafka
//! ```
//!
//! RabbitMQ comes from `ORDERFLOW_AMQP_URL` (each test gets a virtual host of its own: the
//! services' group queues are then nobody else's), Kafka from `ORDERFLOW_KAFKA_URL`.
//! Without them the broker's tests skip, and with `CI=true` they fail. The Kafka tests
//! take turns: the services consume under their real group names, and two stacks on one
//! Kafka broker would share those groups' partitions.

#[path = "support/rabbitmqctl.rs"]
mod rabbitmqctl;
use rabbitmqctl::rabbitmqctl;

use std::collections::BTreeSet;

use orderflow_events::{topics, topology};
use orderflow_kit::testenv;

/// The Kafka tests run one at a time.
static KAFKA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` on a RabbitMQ virtual host of its own, deleted after.
async fn on_rabbitmq(scenario: &str) -> Option<serde_json::Value> {
    let base = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ")?;
    let vhost = format!("orderflow-scenario-{}", uuid::Uuid::now_v7().simple());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    let outcome = orderflow::scenarios::run(scenario, &format!("{server}/{vhost}")).await;
    rabbitmqctl(&["delete_vhost", &vhost]);
    Some(outcome.unwrap().json)
}

async fn on_kafka(scenario: &str) -> Option<serde_json::Value> {
    let url = testenv::require("ORDERFLOW_KAFKA_URL", "Kafka")?;
    let _turn = KAFKA.lock().await;
    Some(
        orderflow::scenarios::run(scenario, &url)
            .await
            .unwrap()
            .json,
    )
}

async fn on_memory(scenario: &str) -> serde_json::Value {
    orderflow::scenarios::run(scenario, "memory://")
        .await
        .unwrap()
        .json
}

/// fan-out: one publish, exactly one copy for every group the topology table subscribes
/// to `payment.succeeded`, none for the others.
fn assert_fan_out(report: &serde_json::Value) {
    assert_eq!(report["scenario"], "fan-out", "{report}");
    assert_eq!(report["publishes"], 1, "{report}");
    let expected: BTreeSet<&str> = topology::GROUPS
        .iter()
        .filter(|group| group.topics.contains(&topics::PAYMENT_SUCCEEDED))
        .map(|group| group.group)
        .collect();
    assert!(expected.len() >= 2, "a fan-out needs several groups");
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), topology::GROUPS.len(), "{report}");
    let mut received = BTreeSet::new();
    for group in groups {
        let name = group["group"].as_str().unwrap();
        let copies = group["copies"].as_u64().unwrap();
        if expected.contains(name) {
            assert_eq!(copies, 1, "{name} should get exactly one copy: {report}");
            received.insert(name);
        } else {
            assert_eq!(copies, 0, "{name} does not subscribe: {report}");
        }
    }
    assert_eq!(received, expected, "{report}");
    let expected_groups: BTreeSet<&str> = report["expected_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group.as_str().unwrap())
        .collect();
    assert_eq!(expected_groups, expected, "{report}");
    assert_eq!(report["copies_total"], expected.len(), "{report}");
    assert_eq!(report["holds"], true, "{report}");
}

/// journey: every event of a paid order published by its producer and logged, each after
/// its cause, every latency non-negative, every message correlated by the order id.
fn assert_journey(report: &serde_json::Value) {
    assert_eq!(report["scenario"], "journey", "{report}");
    let order_id = report["order_id"].as_str().unwrap();
    let hops = report["hops"].as_array().unwrap();
    let position = |message_id: &str, step: &str| {
        hops.iter()
            .position(|hop| hop["message_id"] == message_id && hop["step"] == step)
    };
    for (topic, producer) in [
        (topics::ORDER_PLACED, "order"),
        (topics::PAYMENT_SUCCEEDED, "payment"),
        (topics::POINTS_AWARDED, "points"),
        (topics::SMS_SENT, "sms"),
    ] {
        let published: Vec<&serde_json::Value> = hops
            .iter()
            .filter(|hop| hop["topic"] == topic && hop["step"] == "published")
            .collect();
        assert_eq!(published.len(), 1, "{topic}: {report}");
        assert_eq!(published[0]["group"], producer, "{topic}: {report}");
        let id = published[0]["message_id"].as_str().unwrap();
        let made = position(id, "published").unwrap();
        let logged = position(id, "logged").unwrap_or_else(|| panic!("{topic} not logged"));
        assert!(made < logged, "{topic} logged before it was made: {report}");
        match published[0]["causation_id"].as_str() {
            None => assert_eq!(topic, topics::ORDER_PLACED, "{report}"),
            Some(cause) => {
                let cause = position(cause, "published")
                    .unwrap_or_else(|| panic!("the cause of {topic} is not in the journey"));
                assert!(cause < made, "{topic} before its cause: {report}");
            }
        }
    }
    assert_eq!(hops.len(), 8, "{report}");
    let mut last_at = 0.0;
    for hop in hops {
        assert_eq!(hop["correlation_id"], order_id, "{hop}");
        let latency = hop["latency_ms"].as_f64().unwrap();
        let at = hop["at_ms"].as_f64().unwrap();
        assert!(latency >= 0.0 && at >= last_at, "{hop}");
        last_at = at;
    }
    assert_eq!(hops[0]["topic"], topics::ORDER_PLACED, "{report}");
    for field in ["correlated", "causal", "complete", "holds"] {
        assert_eq!(report[field], true, "{field}: {report}");
    }
}

#[tokio::test]
async fn fan_out_on_memory() {
    assert_fan_out(&on_memory("fan-out").await);
}

#[tokio::test]
async fn fan_out_on_rabbitmq() {
    if let Some(report) = on_rabbitmq("fan-out").await {
        assert_fan_out(&report);
    }
}

#[tokio::test]
async fn fan_out_on_kafka() {
    if let Some(report) = on_kafka("fan-out").await {
        assert_fan_out(&report);
    }
}

#[tokio::test]
async fn journey_on_memory() {
    assert_journey(&on_memory("journey").await);
}

#[tokio::test]
async fn journey_on_rabbitmq() {
    if let Some(report) = on_rabbitmq("journey").await {
        assert_journey(&report);
    }
}

#[tokio::test]
async fn journey_on_kafka() {
    if let Some(report) = on_kafka("journey").await {
        assert_journey(&report);
    }
}

fn orderflow(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .env_remove("ORDERFLOW_BROKER")
        .output()
        .unwrap()
}

#[test]
fn the_command_lists_every_scenario_and_prints_one_json_object() {
    let list = orderflow(&["scenario", "--list"]);
    assert!(list.status.success());
    let listed = String::from_utf8(list.stdout).unwrap();
    for scenario in orderflow::scenarios::SCENARIOS {
        assert!(
            listed.lines().any(|line| line.trim().starts_with(scenario.name)
                && line.contains(scenario.claim)),
            "{} missing from {listed}",
            scenario.name
        );
    }

    let run = orderflow(&["scenario", "fan-out", "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_fan_out(&serde_json::from_str(&stdout).unwrap());

    let table = orderflow(&["scenario", "journey"]);
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("HOLDS"), "{table}");
    assert!(table.contains("payment.succeeded"), "{table}");

    let unknown = orderflow(&["scenario", "no-such-scenario"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("fan-out"));
}
