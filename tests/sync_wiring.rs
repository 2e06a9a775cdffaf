//! The synchronous wiring (`ORDERFLOW_WIRING=sync`): the same five services, `POST /orders`
//! calling payment, points, SMS and logging in the request through their own handlers.
//!
//! ```text
//! cargo test --test sync_wiring
//! ```

use std::time::Duration;

use orderflow::{
    place::{place_orders, Plan},
    reconcile,
    stack::{InProcessStack, StackOptions},
};
use orderflow_kit::config::ServiceConfig;

fn memory_broker(name: &str) -> String {
    format!("memory://{name}-{}", uuid::Uuid::now_v7().simple())
}

fn demo_order_body() -> serde_json::Value {
    orderflow::place::demo_order(1)
}

/// When `POST /orders` returns in the synchronous wiring, every effect exists: the
/// reconciliation read right after the last answer, with no waiting, is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronously_placed_order_has_every_effect_when_the_request_returns() {
    let stack = InProcessStack::start_sync(StackOptions {
        broker_url: memory_broker("sync-effects"),
        postgres: None,
    })
    .await
    .expect("the five services start in the synchronous wiring");
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    let orders = 20;
    let placed = place_orders(&client, &endpoints.order, Plan::burst(orders))
        .await
        .expect("every order answered 2xx");
    assert_eq!(placed.len(), orders);

    let snapshot = reconcile::fetch(&client, &endpoints)
        .await
        .expect("reconciliation readable");
    let report = reconcile::reconcile(&snapshot);
    assert!(report.is_exact(), "not exact at once:\n{}", report.render());
    assert_eq!(report.placed, orders as u64);
    // The demo's every tenth order is over the card limit: declined, so no points or SMS.
    assert_eq!(report.payment_failed, 2, "{}", report.render());
    assert_eq!(report.paid, 18);
    assert_eq!(report.charges_made, 18, "one charge per paid order");
    assert_eq!(report.texts_dispatched, 18, "one text per paid order");
    // placed + outcome + points + sms per paid order, placed + outcome per declined one.
    assert_eq!(report.events_logged, 18 * 4 + 2 * 2);
    assert_eq!(report.duplicates_ignored, 0, "nothing ran twice");
    // The handed-back events were never left for a relay to publish.
    assert_eq!(snapshot.outbox_pending(), 0);
    stack.stop().await.expect("graceful stop");
}

fn service_config(name: &str, broker: &str, dir: &std::path::Path) -> ServiceConfig {
    ServiceConfig {
        name: name.to_owned(),
        broker_url: broker.to_owned(),
        database_url: format!("sqlite://{}/{name}.db", dir.display()),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        concurrency: 16,
        max_attempts: 5,
        publish_timeout: orderflow_kit::config::DEFAULT_PUBLISH_TIMEOUT,
        retention: orderflow_kit::config::DEFAULT_RETENTION,
    }
}

/// An address nothing listens on: a port bound and let go.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// The logging service is down. Synchronously wired, every order request fails (the
/// chain's last call cannot be made); wired through the queue, the order API accepts the
/// same order, since nothing in the request waits for logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_logging_down_sync_orders_fail_while_async_orders_are_accepted() {
    let broker = memory_broker("sync-logging-down");
    let dir = std::env::temp_dir().join(format!(
        "orderflow-sync-logging-down-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let shutdown = orderflow_kit::shutdown::CancellationToken::new();
    let payment = orderflow_payment::startup::build(orderflow_payment::config::PaymentConfig::new(
        service_config("payment", &broker, &dir),
    ))
    .await
    .unwrap();
    let points = orderflow_points::startup::build(orderflow_points::config::PointsConfig::new(
        service_config("points", &broker, &dir),
    ))
    .await
    .unwrap();
    let sms = orderflow_sms::startup::build(orderflow_sms::config::SmsConfig::new(service_config(
        "sms", &broker, &dir,
    )))
    .await
    .unwrap();
    let downstream = orderflow_order::wiring::Downstream {
        payment: format!("http://{}", payment.address()),
        points: format!("http://{}", points.address()),
        sms: format!("http://{}", sms.address()),
        logging: dead_address(),
    };
    let order = orderflow_order::startup::build(
        orderflow_order::config::OrderConfig::new(service_config("order", &broker, &dir))
            .with_sync_wiring(downstream),
    )
    .await
    .unwrap();
    let order_url = format!("http://{}", order.address());
    let payment_url = format!("http://{}", payment.address());
    let mut tasks = Vec::new();
    for application in [payment, points, sms, order] {
        tasks.push(tokio::spawn(
            application.run_until_stopped(shutdown.clone()),
        ));
    }
    let client = reqwest::Client::new();
    orderflow_kit::wait::until(
        "the synchronously wired order service to be ready",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let request = client.get(format!("{order_url}/readyz")).send();
            async move { request.await.ok()?.status().is_success().then_some(()) }
        },
    )
    .await
    .unwrap();

    let response = client
        .post(format!("{order_url}/orders"))
        .json(&demo_order_body())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("the logging service could not be reached"),
        "{body}"
    );
    // What the chain did before the failed call stays done: the card was charged.
    let payments: serde_json::Value = client
        .get(format!("{payment_url}/internal/reconcile"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(payments["charges"].as_array().map(Vec::len), Some(1));
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The queue's wiring: the order service alone (logging has never run) accepts.
    let stack = InProcessStack::start_order_service(StackOptions {
        broker_url: memory_broker("async-logging-down"),
        postgres: None,
    })
    .await
    .unwrap();
    let response = client
        .post(format!("{}/orders", stack.endpoints().order))
        .json(&demo_order_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    stack.stop().await.unwrap();
}
