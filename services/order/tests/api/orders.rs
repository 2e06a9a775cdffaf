//! The order service end to end, over real HTTP, on the embedded broker, against SQLite
//! and (when `ORDERFLOW_DATABASE_URL` names a PostgreSQL server) PostgreSQL.
//!
//! Each test starts the service in-process on a memory broker of its own
//! (`memory://order-test-<uuid>`) and a database of its own, and watches what the service
//! publishes by subscribing to `order.placed` on the same broker. Nothing sleeps: every
//! wait polls its condition with a deadline (`orderflow_kit::wait::until`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use orderflow_broker::{Broker, Deliveries, Subscription};
use orderflow_events::{topics, Event, PaymentFailed, PaymentSucceeded};
use orderflow_kit::{config::ServiceConfig, shutdown::CancellationToken, wait};
use orderflow_order::{config::OrderConfig, startup::Application, validation};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// Where a test's order service keeps its data.
enum Database {
    Sqlite,
    /// A PostgreSQL server URL; the test makes a database of its own on it.
    Postgres(String),
}

/// One running order service plus a broker handle to watch and feed it.
struct Harness {
    base: String,
    client: reqwest::Client,
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    scratch: PathBuf,
    postgres_database: Option<(String, String)>,
}

impl Harness {
    async fn start(database: Database) -> Harness {
        orderflow_kit::telemetry::init_with_default("warn");
        let run = Uuid::now_v7().simple().to_string();
        let scratch = std::env::temp_dir().join(format!("orderflow-order-test-{run}"));
        std::fs::create_dir_all(&scratch).unwrap();
        let (database_url, postgres_database) = match database {
            Database::Sqlite => (format!("sqlite://{}/order.db", scratch.display()), None),
            Database::Postgres(server) => {
                let name = format!("orderflow_order_test_{run}");
                (with_database(&server, &name), Some((server.clone(), name)))
            }
        };
        let broker_url = format!("memory://order-test-{run}");
        let config = ServiceConfig {
            name: "order".to_owned(),
            broker_url: broker_url.clone(),
            database_url,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            concurrency: 4,
            max_attempts: 3,
        };
        let application = Application::build(OrderConfig::new(config))
            .await
            .expect("the order service starts");
        let base = format!("http://{}", application.address());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        let broker = orderflow_broker::connect(&broker_url)
            .await
            .expect("the test connects to the service's memory broker");
        let client = reqwest::Client::new();
        let ready = format!("{base}/readyz");
        wait::until("the order service to be ready", PATIENCE, POLL, || {
            let request = client.get(&ready).send();
            async move {
                request
                    .await
                    .ok()
                    .filter(|response| response.status().is_success())
                    .map(drop)
            }
        })
        .await
        .unwrap();
        Harness {
            base,
            client,
            broker,
            shutdown,
            task,
            scratch,
            postgres_database,
        }
    }

    /// Starts watching `order.placed` (messages published from now on).
    async fn watch_order_placed(&self) -> Deliveries {
        self.broker
            .subscribe(Subscription::new(
                format!("order-test-observer-{}", Uuid::now_v7().simple()),
                [topics::ORDER_PLACED],
            ))
            .await
            .expect("subscribing to order.placed")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_order(&self, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/orders")).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("POST /orders answers")
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn reconcile(&self) -> Value {
        let (status, body) = self.get_json("/internal/reconcile").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the service task does not panic")
            .expect("the service stops cleanly");
        let _ = self.broker.close().await;
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some((server, name)) = self.postgres_database {
            drop_postgres_database(&server, &name).await;
        }
    }
}

/// `server` (`postgres://user@host:port[/db][?query]`) pointing at database `name`.
fn with_database(server: &str, name: &str) -> String {
    let (without_query, query) = match server.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (server, String::new()),
    };
    let authority_start = without_query.find("://").map_or(0, |index| index + 3);
    let base = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    format!("{base}/{name}{query}")
}

/// Best effort: a test database left behind is clutter, not a failure.
async fn drop_postgres_database(server: &str, name: &str) {
    use sqlx::{ConnectOptions, Executor};
    let Ok(options) = with_database(server, "postgres").parse::<sqlx::postgres::PgConnectOptions>()
    else {
        return;
    };
    if let Ok(mut connection) = options.connect().await {
        let _ = connection
            .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
            .await;
    }
}

/// The PostgreSQL server to test against, if any (skips outside CI when unset).
fn postgres() -> Option<String> {
    orderflow_kit::testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL")
}

/// Runs a scenario on SQLite and on PostgreSQL, as two tests.
macro_rules! on_both_databases {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let harness = super::Harness::start(super::Database::Sqlite).await;
                super::$scenario(&harness).await;
                harness.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let Some(server) = super::postgres() else {
                    return;
                };
                let harness = super::Harness::start(super::Database::Postgres(server)).await;
                super::$scenario(&harness).await;
                harness.stop().await;
            }
        }
    };
}

on_both_databases!(a_valid_order_is_placed_once_per_idempotency_key);
on_both_databases!(malformed_requests_are_refused_and_nothing_is_stored);
on_both_databases!(payment_outcomes_move_the_order_once);
on_both_databases!(unknown_orders_and_routes_are_json_errors);

fn order_body(user_id: u64) -> Value {
    json!({
        "user_id": user_id,
        "phone": "+8613800138000",
        "items": [
            {"sku": "green-tea-250g", "quantity": 2, "unit_price_cents": 1_990},
            {"sku": "teapot", "quantity": 1, "unit_price_cents": 4_500},
        ],
    })
}

/// The `order.placed` messages received until one about `last` arrives, as decoded events.
async fn order_placed_until(
    deliveries: &mut Deliveries,
    last: Uuid,
) -> Vec<orderflow_events::OrderPlaced> {
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

async fn order_id_of(response: reqwest::Response) -> (Uuid, Value) {
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

async fn a_valid_order_is_placed_once_per_idempotency_key(harness: &Harness) {
    let mut placed_events = harness.watch_order_placed().await;
    let key = Uuid::now_v7().to_string();

    let (order_id, body) = order_id_of(harness.post_order(&order_body(42), Some(&key)).await).await;
    assert_eq!(body["status"], "placed");
    assert_eq!(body["total_cents"], 2 * 1_990 + 4_500);
    assert_eq!(body["user_id"], 42);

    let (status, order) = harness.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "placed");
    assert_eq!(order["total_cents"], 8_480);
    assert_eq!(order["items"][1]["sku"], "teapot");
    assert_eq!(order["history"].as_array().unwrap().len(), 1);
    assert_eq!(order["history"][0]["status"], "placed");

    // The client retries (say its first response was lost): the same order comes back.
    let retry = harness.post_order(&order_body(42), Some(&key)).await;
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|value| value.to_str().unwrap()),
        Some("true")
    );
    let (retried_id, _) = order_id_of(retry).await;
    assert_eq!(retried_id, order_id, "a retry returns the first order");

    // The same key for a different order is a client bug: refused, not silently mixed up.
    let conflict = harness.post_order(&order_body(43), Some(&key)).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let error: Value = conflict.json().await.unwrap();
    assert_eq!(error["field"], "Idempotency-Key", "{error}");

    // Retries racing each other (a client that gave up waiting and sent again while the
    // first was still in flight): still one order.
    let racing_key = Uuid::now_v7().to_string();
    let racing_body = order_body(99);
    let racing = futures::future::join_all(
        (0..8).map(|_| harness.post_order(&racing_body, Some(&racing_key))),
    )
    .await;
    let mut racing_ids = Vec::new();
    for response in racing {
        racing_ids.push(order_id_of(response).await.0);
    }
    racing_ids.dedup();
    assert_eq!(
        racing_ids.len(),
        1,
        "concurrent retries made one order: {racing_ids:?}"
    );

    // A later order without a key marks the end of what the retries could have published.
    let (sentinel, _) = order_id_of(harness.post_order(&order_body(7), None).await).await;
    let seen = order_placed_until(&mut placed_events, sentinel).await;
    let for_order: Vec<_> = seen
        .iter()
        .filter(|event| event.order_id == order_id)
        .collect();
    assert_eq!(
        for_order.len(),
        1,
        "exactly one OrderPlaced per order: {seen:?}"
    );
    assert_eq!(for_order[0].total_cents, 8_480);
    assert_eq!(for_order[0].user_id, 42);
    assert_eq!(for_order[0].items.len(), 2);
    assert_eq!(
        seen.iter()
            .filter(|event| event.order_id == racing_ids[0])
            .count(),
        1,
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3, "{seen:?}");

    let report = wait::until("the outbox to be drained", PATIENCE, POLL, || async {
        let report = harness.reconcile().await;
        (report["common"]["outbox_pending"] == 0).then_some(report)
    })
    .await
    .unwrap();
    let orders = report["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 3, "{report}");
    assert!(orders
        .iter()
        .any(|row| row["order_id"] == order_id.to_string()
            && row["status"] == "placed"
            && row["total_cents"] == 8_480));
}

/// One malformed request and what it must be answered with.
struct Refusal {
    what: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    idempotency_key: Option<&'static str>,
    status: StatusCode,
    field: Option<&'static str>,
}

fn refusal(what: &'static str, body: Value, field: &'static str) -> Refusal {
    Refusal {
        what,
        body: body.to_string().into_bytes(),
        content_type: Some("application/json"),
        idempotency_key: None,
        status: StatusCode::UNPROCESSABLE_ENTITY,
        field: Some(field),
    }
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = order_body(42);
    edit(&mut body);
    body
}

fn refusals() -> Vec<Refusal> {
    let mut padded = order_body(42).to_string().into_bytes();
    padded.resize(validation::MAX_BODY_BYTES + 1024, b' ');
    vec![
        Refusal {
            what: "malformed JSON",
            body: br#"{"user_id": 42, "phone": "#.to_vec(),
            content_type: Some("application/json"),
            idempotency_key: None,
            status: StatusCode::BAD_REQUEST,
            field: None,
        },
        Refusal {
            what: "not declared as JSON",
            body: order_body(42).to_string().into_bytes(),
            content_type: Some("text/plain"),
            idempotency_key: None,
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            field: None,
        },
        Refusal {
            what: "a body over 64 KiB",
            body: padded,
            content_type: Some("application/json"),
            idempotency_key: None,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            field: None,
        },
        Refusal {
            what: "an Idempotency-Key with a space",
            body: order_body(42).to_string().into_bytes(),
            content_type: Some("application/json"),
            idempotency_key: Some("not a key"),
            status: StatusCode::BAD_REQUEST,
            field: Some("Idempotency-Key"),
        },
        refusal(
            "a missing phone",
            with(|body| {
                body.as_object_mut().unwrap().remove("phone");
            }),
            "phone",
        ),
        refusal(
            "a missing quantity",
            with(|body| {
                body["items"][0].as_object_mut().unwrap().remove("quantity");
            }),
            "items[0].quantity",
        ),
        refusal(
            "an unknown field",
            with(|body| body["coupon"] = "FREE".into()),
            "coupon",
        ),
        refusal(
            "an unknown item field",
            with(|body| body["items"][1]["colour"] = "red".into()),
            "items[1].colour",
        ),
        refusal("no items", with(|body| body["items"] = json!([])), "items"),
        refusal(
            "a zero quantity",
            with(|body| body["items"][0]["quantity"] = 0.into()),
            "items[0].quantity",
        ),
        refusal(
            "a negative quantity",
            with(|body| body["items"][1]["quantity"] = (-3).into()),
            "items[1].quantity",
        ),
        refusal(
            "a quantity that is text",
            with(|body| body["items"][0]["quantity"] = "two".into()),
            "items[0].quantity",
        ),
        refusal(
            "a negative price",
            with(|body| body["items"][0]["unit_price_cents"] = (-1).into()),
            "items[0].unit_price_cents",
        ),
        refusal(
            "a total above the cap",
            with(|body| body["items"][0]["unit_price_cents"] = validation::MAX_TOTAL_CENTS.into()),
            "items",
        ),
        refusal(
            "a total that overflows",
            with(|body| {
                body["items"][0]["unit_price_cents"] = i64::MAX.into();
                body["items"][0]["quantity"] = 10.into();
            }),
            "items",
        ),
        refusal(
            "a phone with letters",
            with(|body| body["phone"] = "call me".into()),
            "phone",
        ),
        refusal(
            "a phone too short",
            with(|body| body["phone"] = "+12345".into()),
            "phone",
        ),
        refusal(
            "a phone too long",
            with(|body| body["phone"] = "1234567890123456".into()),
            "phone",
        ),
        refusal(
            "a user id of zero",
            with(|body| body["user_id"] = 0.into()),
            "user_id",
        ),
    ]
}

async fn malformed_requests_are_refused_and_nothing_is_stored(harness: &Harness) {
    let mut placed_events = harness.watch_order_placed().await;
    for case in refusals() {
        let mut request = harness.client.post(harness.url("/orders")).body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = case.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", case.what));
        assert_eq!(response.status(), case.status, "{}", case.what);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("{}: the error body is not JSON: {error}", case.what));
        let message = body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{}: no message in {body}", case.what);
        match case.field {
            Some(field) => assert_eq!(body["field"], field, "{}: {body}", case.what),
            None => assert!(body.get("field").is_none(), "{}: {body}", case.what),
        }
    }

    let report = harness.reconcile().await;
    assert_eq!(report["orders"], json!([]), "nothing stored: {report}");
    assert_eq!(report["common"]["outbox_pending"], 0, "{report}");

    // The first event published after all those refusals is this order's: none of them
    // published anything.
    let (sentinel, _) = order_id_of(harness.post_order(&order_body(1), None).await).await;
    let seen = order_placed_until(&mut placed_events, sentinel).await;
    assert_eq!(
        seen.len(),
        1,
        "only the valid order was published: {seen:?}"
    );
}

async fn payment_outcomes_move_the_order_once(harness: &Harness) {
    let (paid_id, _) = order_id_of(harness.post_order(&order_body(5), None).await).await;
    let (declined_id, _) = order_id_of(harness.post_order(&order_body(6), None).await).await;

    let succeeded = Event::PaymentSucceeded(PaymentSucceeded {
        order_id: paid_id,
        payment_id: Uuid::now_v7(),
        user_id: 5,
        phone: "+8613800138000".into(),
        amount_cents: 8_480,
        paid_at: chrono::Utc::now(),
    })
    .to_envelope();
    // The same message twice (a redelivery): one effect, one duplicate counted.
    harness.broker.publish(succeeded.clone()).await.unwrap();
    harness.broker.publish(succeeded).await.unwrap();
    let failed = Event::PaymentFailed(PaymentFailed {
        order_id: declined_id,
        user_id: 6,
        amount_cents: 8_480,
        reason: "card declined".into(),
        failed_at: chrono::Utc::now(),
    })
    .to_envelope();
    harness.broker.publish(failed).await.unwrap();

    let report = wait::until(
        "both outcomes applied and the duplicate ignored",
        PATIENCE,
        POLL,
        || async {
            let report = harness.reconcile().await;
            let status_of = |id: Uuid| {
                report["orders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|row| row["order_id"] == id.to_string())
                    .map(|row| row["status"].clone())
            };
            (status_of(paid_id) == Some("paid".into())
                && status_of(declined_id) == Some("payment_failed".into())
                && report["common"]["duplicates_ignored"] == 1)
                .then_some(report)
        },
    )
    .await
    .unwrap();
    assert_eq!(report["common"]["dead_lettered"], 0, "{report}");

    let (_, paid) = harness.get_json(&format!("/orders/{paid_id}")).await;
    let history: Vec<&str> = paid["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["placed", "paid"], "moved once: {paid}");
    assert_eq!(paid["history"][1]["event"], "PaymentSucceeded");
    assert!(paid["history"][1]["at"]
        .as_str()
        .is_some_and(|at| !at.is_empty()));

    let (_, declined) = harness.get_json(&format!("/orders/{declined_id}")).await;
    assert_eq!(declined["status"], "payment_failed");
    assert_eq!(
        declined["history"].as_array().unwrap().len(),
        2,
        "{declined}"
    );
}

async fn unknown_orders_and_routes_are_json_errors(harness: &Harness) {
    let (status, body) = harness
        .get_json(&format!("/orders/{}", Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("no order")),
        "{body}"
    );

    let (status, body) = harness.get_json("/orders/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "order_id", "{body}");

    let (status, body) = harness.get_json("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string(), "{body}");
}
