//! The logging service stopped and started again while the other four run
//! (`InProcessStack::stop_logging` / `restart_logging`, `orderflow load --logging-down`):
//! through the queue the order API does not notice and every order is logged once logging
//! is back; wired synchronously, the API fails while logging is away.
//!
//! ```text
//! cargo test --test logging_down
//! ```

use std::time::Duration;

use orderflow::{
    load,
    place::{place_orders, Plan},
    reconcile,
    stack::{InProcessStack, StackOptions},
};

use clap::Parser as _;

fn options(name: &str) -> StackOptions {
    StackOptions {
        broker_url: format!("memory://{name}-{}", uuid::Uuid::now_v7().simple()),
        postgres: None,
    }
}

async fn answers_ready(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Orders placed while logging is down are all accepted; their events wait in the
/// logging group's queue and are all stored once logging is back, on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_queue_orders_are_accepted_while_logging_is_down_and_logged_after() {
    let mut stack = InProcessStack::start(options("logging-down-async"))
        .await
        .expect("the five services start");
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    stack.stop_logging().await.expect("logging stops");
    assert!(
        !answers_ready(&client, &endpoints.logging).await,
        "the logging service still answers after it was stopped"
    );

    let orders = 20;
    let placed = place_orders(&client, &endpoints.order, Plan::burst(orders))
        .await
        .expect("every order accepted while logging is down");
    assert_eq!(placed.len(), orders);

    stack.restart_logging().await.expect("logging starts again");
    assert_eq!(stack.endpoints().logging, endpoints.logging, "same address");
    // The demo's every tenth order is declined: 18 paid (placed, paid, points, SMS), two
    // declined (placed, failed).
    let expected = 18 * 4 + 2 * 2;
    let report = orderflow_kit::wait::until(
        "every event of every order to be logged after logging returned",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (client, endpoints) = (client.clone(), endpoints.clone());
            async move {
                let snapshot = reconcile::fetch(&client, &endpoints).await.ok()?;
                let report = reconcile::reconcile(&snapshot);
                (report.is_exact() && report.events_logged == expected).then_some(report)
            }
        },
    )
    .await
    .expect("everything logged");
    assert_eq!(report.placed, orders as u64);
    stack.stop().await.expect("graceful stop");
}

/// Wired synchronously, an order request while logging is down fails (the chain's last
/// call cannot be made); once logging is back on its port, orders succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_synchronously_orders_fail_while_logging_is_down_and_succeed_after() {
    let mut stack = InProcessStack::start_sync(options("logging-down-sync"))
        .await
        .expect("the five services start in the synchronous wiring");
    let order = stack.endpoints().order;
    let client = reqwest::Client::new();
    let place = |index: usize| {
        client
            .post(format!("{order}/orders"))
            .json(&orderflow::place::demo_order(index))
            .timeout(Duration::from_secs(10))
            .send()
    };
    assert!(place(1).await.unwrap().status().is_success());

    stack.stop_logging().await.expect("logging stops");
    let refused = place(2).await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_GATEWAY);

    stack.restart_logging().await.expect("logging starts again");
    let after = place(3).await.unwrap();
    assert_eq!(after.status(), reqwest::StatusCode::CREATED);
    stack.stop().await.expect("graceful stop");
}

fn args(words: &[&str]) -> load::Args {
    let mut args =
        load::Args::try_parse_from(std::iter::once("load").chain(words.iter().copied())).unwrap();
    // The in-process stack on a memory broker of its own, whatever the environment says.
    args.broker = None;
    args.postgres = None;
    args
}

/// `orderflow load --logging-down`: through the queue, every request of the run is
/// accepted, the logging group's backlog rises while logging is away and is 0 at the end,
/// and every accepted order reaches the *logged* stage; the report says when logging
/// really stopped and came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_logging_down_through_the_queue_accepts_everything_and_logs_it_later() {
    let report = load::measure(&args(&[
        "--rate",
        "20",
        "--duration",
        "4s",
        "--logging-down",
        "2s@1s",
        "--drain",
        "60s",
    ]))
    .await
    .expect("the run completes");
    let outage = report.logging_outage.clone().expect("the outage reported");
    assert_eq!(report.totals.offered, 80, "{:?}", report.totals);
    assert_eq!(report.totals.accepted, 80, "{:?}", report.totals);
    assert_eq!(outage.failed, 0, "{outage:?}");
    assert!(outage.offered >= 40, "{outage:?}");
    assert!(
        outage.times.stopped_at_s >= 1.0 && outage.times.ready_again_at_s >= 3.0,
        "{outage:?}"
    );
    assert!(
        outage.logging_backlog_peak.is_some_and(|peak| peak > 0),
        "the log's backlog never rose: {outage:?}"
    );
    assert_eq!(outage.logging_backlog_last, Some(0), "{outage:?}");
    let logged = report
        .stages
        .iter()
        .find(|stage| stage.stage == load::stages::Stage::Logged)
        .expect("the logged stage watched");
    assert_eq!(logged.orders, 80, "every accepted order logged in the end");
    assert!(report
        .setup
        .caption()
        .contains("logging down for 2 s from 1 s"));

    let dir = std::env::temp_dir().join(format!(
        "orderflow-logging-down-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let written = load::charts::write(&dir, &report).unwrap();
    let chart = dir.join("logging-down.svg");
    assert!(written.contains(&chart));
    let svg = std::fs::read_to_string(&chart).unwrap();
    for expected in [
        "logging service down",
        "logging backlog",
        "orders accepted by the API",
    ] {
        assert!(
            svg.contains(expected),
            "no `{expected}` in logging-down.svg"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same outage wired synchronously: the requests scheduled while logging is away fail
/// and none is accepted in the outage's seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_logging_down_wired_synchronously_fails_while_it_is_away() {
    let report = load::measure(&args(&[
        "--wiring",
        "sync",
        "--rate",
        "20",
        "--duration",
        "4s",
        "--logging-down",
        "2s@1s",
    ]))
    .await
    .expect("the run completes");
    let outage = report.logging_outage.clone().expect("the outage reported");
    assert!(outage.failed >= 20, "{outage:?}");
    assert!(
        outage.logging_backlog_peak.is_none(),
        "no queue: {outage:?}"
    );
    assert!(
        report.totals.errors + report.totals.timeouts >= 20,
        "{:?}",
        report.totals
    );
    // Before and after the outage, orders go through.
    assert!(report.totals.accepted >= 20, "{:?}", report.totals);
}

/// The directory holding this build's binaries (`target/debug`), as tests/e2e.rs finds it.
fn binaries() -> std::path::PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_owned()
}

/// The same for the services as processes (`ProcessStack`): the logging process stops
/// (SIGTERM) while the others keep answering, and starts again on its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logging_process_stops_and_starts_again_on_its_port_while_the_others_run() {
    // Each process has an embedded broker of its own here: what is checked is the
    // processes, not the flow between them.
    let mut stack =
        orderflow::stack::ProcessStack::start(&binaries(), options("logging-down-processes"))
            .await
            .expect("the five service binaries start (cargo build --bins --workspace first)");
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    stack.stop_logging().await.expect("logging stops");
    assert!(
        !answers_ready(&client, &endpoints.logging).await,
        "logging still answers"
    );
    assert!(
        answers_ready(&client, &endpoints.order).await,
        "the order service went down too"
    );
    stack.restart_logging().await.expect("logging starts again");
    assert_eq!(stack.endpoints().logging, endpoints.logging, "same address");
    assert!(answers_ready(&client, &endpoints.logging).await);
    stack.stop().await.expect("graceful stop");
}
