//! A bad value inside an event is a poison message, on every backend.
//!
//! Another client (a producer in another language, an older build, a bug) publishes
//! `order.placed` with `"quantity": 0` as raw JSON bytes straight through the broker
//! abstraction — the Rust types could not even build such an event. The real payment
//! service consumes it: decoding refuses the value ([`orderflow_events::domain::Quantity`]),
//! the kit's consumer loop dead-letters the message at once with a reason naming the
//! field, and the good order published right after it is still paid.
//!
//! The same scenario runs on the embedded broker, RabbitMQ (`ORDERFLOW_AMQP_URL`) and Kafka
//! (`ORDERFLOW_KAFKA_URL`). Each run uses a consumer group of its own, so its queue and
//! dead-letter queue are its own even on a shared broker. Outside CI a missing broker
//! skips with a message; with `CI=true` it fails.

use orderflow_broker::Envelope;
use orderflow_events::{headers, topics, Event, OrderPlaced};
use orderflow_kit::{
    testenv,
    testkit::{self, Store, TestApp, PATIENCE},
};
use orderflow_payment::{config::PaymentConfig, startup};
use tokio::time::Instant;
use uuid::Uuid;

/// Starts a payment service on `broker_url` whose consumer group (the service's name) no
/// other test shares. Returns it with that group's name.
async fn spawn_on(broker_url: String) -> (TestApp, String) {
    let mut prepared = testkit::prepare("payment", Store::Sqlite);
    let group = format!("payment-poison-{}", Uuid::now_v7().simple());
    prepared.config.name = group.clone();
    prepared.config.broker_url = broker_url;
    let mut config = PaymentConfig::new(prepared.config.clone());
    config.gateway.latency = std::time::Duration::from_millis(1);
    // Never decline: the good order must end as a payment, not depend on the dice.
    config.gateway.failure_rate = 0.0;
    let application = startup::build(config)
        .await
        .expect("the payment service builds");
    let address = application.address();
    let app = testkit::launch(prepared, address, |stop| {
        tokio::spawn(application.run_until_stopped(stop))
    })
    .await;
    (app, group)
}

/// `order` encoded as the order service would, then with its first line's quantity set
/// to 0 by hand: what a producer with other rules might put on the wire.
fn with_zero_quantity(order: &OrderPlaced) -> Envelope {
    let good = Event::OrderPlaced(order.clone()).to_envelope();
    let mut json: serde_json::Value =
        serde_json::from_slice(&good.payload).expect("events encode as JSON");
    json["data"]["items"][0]["quantity"] = 0.into();
    Envelope::new(
        topics::ORDER_PLACED,
        order.order_id.to_string(),
        json.to_string().into_bytes(),
    )
    .with_header(headers::EVENT_TYPE, "OrderPlaced")
    .with_header(headers::CORRELATION_ID, order.order_id.to_string())
}

async fn a_bad_value_is_dead_lettered_naming_the_field(broker_url: String) {
    let (app, group) = spawn_on(broker_url).await;
    let mut dead_letters = app
        .broker
        .subscribe_dead_letters(&group)
        .await
        .expect("the dead-letter queue can be read");

    let poisoned_order = crate::payments::order(1_000);
    let good_order = crate::payments::order(2_000);
    let poison = with_zero_quantity(&poisoned_order);
    app.publish(poison.clone()).await;
    app.publish(Event::OrderPlaced(good_order.clone()).to_envelope())
        .await;

    // The dead letter. On a shared broker the queue is ours alone, but look for our
    // message by id anyway rather than trusting the first one to be it.
    let deadline = Instant::now() + PATIENCE;
    let letter = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let letter = dead_letters
            .next_within(left)
            .await
            .expect("the poison message reaches the dead-letter queue in time");
        if letter.envelope().id == poison.id {
            break letter;
        }
        letter.ack().await.expect("acked");
    };
    let reason = testkit::dead_letter_reason(&letter);
    assert!(
        reason.contains("undecodable")
            && reason.contains("items[0].quantity")
            && reason.contains("quantity must be between 1 and 10000"),
        "the reason names the field and the rule: {reason}"
    );
    assert_eq!(
        letter.envelope().header(headers::DEAD_LETTERED_BY),
        Some(group.as_str())
    );
    assert_eq!(
        letter.envelope().attempt(),
        1,
        "dead-lettered at once, not retried"
    );
    letter.ack().await.expect("acked");

    // The message after it was handled: the good order is paid.
    let path = format!("/payments/{}", good_order.order_id);
    let payment = app
        .wait_for("the good order to be paid", |app| {
            let path = path.clone();
            async move {
                let response = app.get(&path).await;
                if response.status() == 200 {
                    response.json::<serde_json::Value>().await.ok()
                } else {
                    None
                }
            }
        })
        .await;
    assert_eq!(payment["outcome"], "succeeded", "{payment}");
    assert_eq!(payment["amount_cents"], 2_000, "{payment}");
    // And the poisoned one never reached the gateway.
    let response = app
        .get(&format!("/payments/{}", poisoned_order.order_id))
        .await;
    assert_eq!(response.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memory() {
    let url = format!("memory://payment-poison-{}", Uuid::now_v7().simple());
    a_bad_value_is_dead_lettered_naming_the_field(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq() {
    if let Some(url) = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") {
        a_bad_value_is_dead_lettered_naming_the_field(url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka() {
    if let Some(url) = testenv::require("ORDERFLOW_KAFKA_URL", "Kafka") {
        a_bad_value_is_dead_lettered_naming_the_field(url).await;
    }
}
