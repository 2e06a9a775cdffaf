//! `spawn_app`: an order service of its own for each test, started through kit's `testkit`
//! (its own memory broker, its own database, a free port), and the few requests and
//! readings every order test makes.

use orderflow_broker::Deliveries;
use orderflow_events::{Event, OrderPlaced};
use orderflow_kit::testkit;
pub use orderflow_kit::testkit::{Store, TestApp, PATIENCE};
use orderflow_order::{config::OrderConfig, startup};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// Starts an order service on `store`, with its configuration adjusted by `configure`.
pub async fn spawn_app(store: Store, configure: impl FnOnce(&mut OrderConfig)) -> TestApp {
    let prepared = testkit::prepare("order", store);
    let mut config = OrderConfig::new(prepared.config.clone());
    configure(&mut config);
    let application = startup::build(config)
        .await
        .expect("the order service builds");
    let address = application.address();
    testkit::launch(prepared, address, |stop| {
        tokio::spawn(application.run_until_stopped(stop))
    })
    .await
}

/// A valid order of two lines (2 × 19.90 + 1 × 45.00 = 84.80) by `user_id`.
pub fn order_body(user_id: u64) -> Value {
    json!({
        "user_id": user_id,
        "phone": "+8613800138000",
        "items": [
            {"sku": "green-tea-250g", "quantity": 2, "unit_price_cents": 1_990},
            {"sku": "teapot", "quantity": 1, "unit_price_cents": 4_500},
        ],
    })
}

/// `POST /orders` with `body` as JSON, and an `Idempotency-Key` when given.
pub async fn post_order(app: &TestApp, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/orders", app.address))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("POST /orders answers")
}

/// `GET path`, whatever the status, with its JSON body.
pub async fn get_with_status(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app.get(path).await;
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// The id and body of a `202 Accepted`, checking that `Location` points at the order.
pub async fn order_id_of(response: reqwest::Response) -> (Uuid, Value) {
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["order_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/orders/{id}"));
    (id, body)
}

/// The `order.placed` messages received until one about `last` arrives, as decoded events.
pub async fn order_placed_until(deliveries: &mut Deliveries, last: Uuid) -> Vec<OrderPlaced> {
    let mut seen = Vec::new();
    loop {
        let delivery = deliveries.next_within(PATIENCE).await.unwrap_or_else(|| {
            panic!("no OrderPlaced for {last} within {PATIENCE:?}; saw {seen:?}")
        });
        let Event::OrderPlaced(placed) = Event::decode(&delivery.envelope().payload).unwrap()
        else {
            panic!("order.placed carried another event");
        };
        assert_eq!(delivery.envelope().key, placed.order_id.to_string());
        delivery.ack().await.unwrap();
        let done = placed.order_id == last;
        seen.push(placed);
        if done {
            return seen;
        }
    }
}
