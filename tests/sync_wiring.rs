//! The synchronous wiring (`ORDERFLOW_WIRING=sync`): the same five services, `POST /orders`
//! calling payment, points, SMS and logging in the request through their own handlers.
//!
//! ```text
//! cargo test --test sync_wiring
//! ```

#[path = "support/svg.rs"]
mod svg;
use svg::svg_text;

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
        max_attempts: 5,
        ..ServiceConfig::with_defaults(
            name,
            broker,
            format!("sqlite://{}/{name}.db", dir.display()),
        )
    }
}

/// An address nothing listens on: a port bound and let go.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Payment, points and SMS (the SMS gateway at `sms_rate_per_s`) and an order service
/// in the synchronous wiring calling them, with `logging` as the logging service's
/// address; running until `shutdown`. Returns the order and payment URLs and the tasks.
async fn sync_services(
    broker: &str,
    dir: &std::path::Path,
    logging: Option<String>,
    sms_rate_per_s: f64,
    shutdown: &orderflow_kit::shutdown::CancellationToken,
) -> (
    String,
    String,
    Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) {
    let payment = orderflow_payment::startup::build(orderflow_payment::config::PaymentConfig::new(
        service_config("payment", broker, dir),
    ))
    .await
    .unwrap();
    let points = orderflow_points::startup::build(orderflow_points::config::PointsConfig::new(
        service_config("points", broker, dir),
    ))
    .await
    .unwrap();
    let mut sms_config = orderflow_sms::config::SmsConfig::new(service_config("sms", broker, dir));
    sms_config.gateway.rate_per_s = sms_rate_per_s;
    let sms = orderflow_sms::startup::build(sms_config).await.unwrap();
    let logging_app = match logging {
        Some(_) => None,
        None => Some(
            orderflow_logging::startup::build(orderflow_logging::config::LoggingConfig::new(
                service_config("logging", broker, dir),
            ))
            .await
            .unwrap(),
        ),
    };
    let downstream = orderflow_order::wiring::Downstream {
        payment: format!("http://{}", payment.address()),
        points: format!("http://{}", points.address()),
        sms: format!("http://{}", sms.address()),
        logging: logging
            .unwrap_or_else(|| format!("http://{}", logging_app.as_ref().unwrap().address())),
    };
    let order = orderflow_order::startup::build(
        orderflow_order::config::OrderConfig::new(service_config("order", broker, dir))
            .with_sync_wiring(downstream),
    )
    .await
    .unwrap();
    let order_url = format!("http://{}", order.address());
    let payment_url = format!("http://{}", payment.address());
    let mut tasks = Vec::new();
    for application in [payment, points, sms, order].into_iter().chain(logging_app) {
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
    (order_url, payment_url, tasks)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "orderflow-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The logging service is down. Synchronously wired, every order request fails (the
/// chain's last call cannot be made); wired through the queue, the order API accepts the
/// same order, since nothing in the request waits for logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_logging_down_sync_orders_fail_while_async_orders_are_accepted() {
    let broker = memory_broker("sync-logging-down");
    let dir = scratch("sync-logging-down");
    let shutdown = orderflow_kit::shutdown::CancellationToken::new();
    let (order_url, payment_url, tasks) =
        sync_services(&broker, &dir, Some(dead_address()), 50.0, &shutdown).await;
    let client = reqwest::Client::new();

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

/// `orderflow load --compare --json --out DIR`: one object holding both wirings'
/// figures, steady, under the burst and with logging down, and the bar chart written as
/// well-formed SVG with both wirings in its legend.
#[test]
fn load_compare_prints_both_wirings_and_draws_the_bar_chart() {
    let out = std::env::temp_dir().join(format!(
        "orderflow-load-compare-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["load", "--compare", "--rate", "10", "--duration", "2s"])
        .args(["--burst", "3x:1s@1s", "--drain", "60s", "--json", "--out"])
        .arg(&out)
        .env_remove("ORDERFLOW_BROKER")
        .env_remove("ORDERFLOW_DEMO_POSTGRES")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for wiring in ["async", "sync"] {
        let figures = &report[wiring];
        assert_eq!(figures["wiring"], wiring);
        for field in [
            "offered",
            "accepted",
            "accepted_per_s",
            "accepted_per_s_base",
            "accepted_per_s_burst",
            "errors",
            "timeouts",
            "dropped",
        ] {
            assert!(figures[field].is_number(), "{wiring}.{field}: {figures}");
        }
        for phase in ["latency_base_ms", "latency_burst_ms", "latency_ms"] {
            for percentile in ["p50_ms", "p99_ms", "p99_9_ms"] {
                assert!(
                    figures[phase][percentile].is_number(),
                    "{wiring}.{phase}.{percentile}: {figures}"
                );
            }
        }
        // 10/s for 2 s with the second second at 3x: 40 requests, every one answered.
        assert_eq!(figures["offered"], 40, "{figures}");
        let answered = figures["accepted"].as_u64().unwrap()
            + figures["errors"].as_u64().unwrap()
            + figures["timeouts"].as_u64().unwrap()
            + figures["dropped"].as_u64().unwrap();
        assert_eq!(answered, 40, "{figures}");
    }
    // The queue is watched in the async run only.
    assert!(report["async"]["sms_backlog_peak"].is_number(), "{report}");
    assert!(report["sync"]["sms_backlog_peak"].is_null(), "{report}");
    assert!(report["setup"]["profile"].is_object(), "{report}");
    // With logging stopped (by default for the middle half of the run, at the base rate):
    // through the queue nothing fails and every accepted order is logged in the end;
    // wired synchronously, the requests sent while it is away fail.
    let down = &report["logging_down"];
    assert_eq!(down["outage"]["length_s"], 1.0, "{down}");
    let queued = &down["async"];
    assert_eq!(queued["outage"]["failed"], 0, "{queued}");
    assert_eq!(queued["errors"], 0, "{queued}");
    assert_eq!(queued["logged"], queued["accepted"], "{queued}");
    assert!(
        queued["outage"]["logging_backlog_peak"].is_number(),
        "{queued}"
    );
    let called = &down["sync"];
    assert!(called["outage"]["failed"].as_u64().unwrap() > 0, "{called}");
    assert!(
        called["outage"]["logging_backlog_peak"].is_null(),
        "{called}"
    );
    for wiring in [queued, called] {
        for field in [
            "stopped_at_s",
            "ready_again_at_s",
            "accepted_per_s",
            "offered",
        ] {
            assert!(wiring["outage"][field].is_number(), "{field}: {wiring}");
        }
        for percentile in ["p50_ms", "p99_ms", "p99_9_ms"] {
            assert!(
                wiring["outage"]["latency_ms"][percentile].is_number(),
                "{percentile}: {wiring}"
            );
        }
    }

    let chart = svg_text(&out.join("compare.svg"));
    for expected in [
        "async: through the queue",
        "sync: every service called in the request",
        "API latency, ms from the intended send (log scale)",
        "p99.9",
        "burst",
        "logging down",
        "Set-up:",
    ] {
        assert!(
            chart.iter().any(|text| text.contains(expected)),
            "no `{expected}` in compare.svg: {chart:?}"
        );
    }
    for own in ["async", "sync", "async-logging-down", "sync-logging-down"] {
        assert!(
            out.join(own).join("report.json").is_file(),
            "{own}/report.json"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The experimental wiring is never switched on by a deployment file.
#[test]
fn no_deployment_file_sets_the_synchronous_wiring() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "docker-compose.yml",
        "docker-compose.kafka.yml",
        "docker/services.yml",
        "scripts/up.sh",
    ] {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        assert!(
            !text.contains("ORDERFLOW_WIRING"),
            "{file} sets ORDERFLOW_WIRING"
        );
    }
}

/// The SMS gateway's limit in the synchronous wiring: nothing queues the text, so a
/// request over the limit is refused (503, naming the SMS service and the limit) — after
/// payment and points already happened, which stay done. The gateway here admits one
/// text and refills in 100 s, so the second paid order is over the limit whenever it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_sms_limit_a_synchronous_order_is_refused_after_it_was_charged() {
    let broker = memory_broker("sync-sms-limit");
    let dir = scratch("sync-sms-limit");
    let shutdown = orderflow_kit::shutdown::CancellationToken::new();
    let (order_url, payment_url, tasks) = sync_services(&broker, &dir, None, 0.01, &shutdown).await;
    let client = reqwest::Client::new();
    let place = |index: usize| {
        client
            .post(format!("{order_url}/orders"))
            .json(&orderflow::place::demo_order(index))
            .send()
    };
    let first = place(1).await.unwrap();
    assert_eq!(first.status(), reqwest::StatusCode::CREATED);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["status"], "paid", "{first}");

    let second = place(2).await.unwrap();
    let status = second.status();
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.contains("the sms service") && error.contains("rate limit"),
        "{body}"
    );
    let payments: serde_json::Value = client
        .get(format!("{payment_url}/internal/reconcile"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        payments["charges"].as_array().map(Vec::len),
        Some(2),
        "both orders were charged: {payments}"
    );
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
