//! `orderflow place` and `orderflow reconcile --wait-for`, run as the real binary against
//! the five services started in this test process (an in-process stack on an embedded
//! broker of its own, SQLite files): the commands scripts/compose-test.sh drives a compose
//! stack with.

use std::{process::Output, time::Duration};

use orderflow::{
    reconcile::Endpoints,
    stack::{InProcessStack, StackOptions},
};

async fn stack() -> InProcessStack {
    stack_on(&format!("memory://cli-{}", uuid::Uuid::now_v7().simple())).await
}

async fn stack_on(broker_url: &str) -> InProcessStack {
    InProcessStack::start(StackOptions {
        broker_url: broker_url.to_owned(),
        postgres: None,
    })
    .await
    .expect("the five services start")
}

/// Runs `orderflow ARGS` with the stack's addresses in ORDERFLOW_*_URL.
async fn orderflow(endpoints: &Endpoints, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
    command
        .env("ORDERFLOW_ORDER_URL", &endpoints.order)
        .env("ORDERFLOW_PAYMENT_URL", &endpoints.payment)
        .env("ORDERFLOW_POINTS_URL", &endpoints.points)
        .env("ORDERFLOW_SMS_URL", &endpoints.sms)
        .env("ORDERFLOW_LOGGING_URL", &endpoints.logging)
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("not cancelled")
        .expect("orderflow runs");
    eprintln!(
        "orderflow {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is one JSON object ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn place_then_reconcile_wait_for_settles_exactly() {
    let stack = stack().await;
    let endpoints = stack.endpoints();

    let placed = orderflow(
        &endpoints,
        &[
            "place",
            "--url",
            &endpoints.order,
            "--orders",
            "30",
            "--json",
        ],
    )
    .await;
    assert!(placed.status.success());
    let placed = json(&placed);
    assert_eq!(placed["placed"], 30);
    let ids = placed["order_ids"].as_array().unwrap();
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 30, "one order id per order");

    let reconciled = orderflow(
        &endpoints,
        &[
            "reconcile",
            "--wait-for",
            "30",
            "--deadline",
            "120",
            "--json",
        ],
    )
    .await;
    let report = json(&reconciled);
    assert!(reconciled.status.success(), "{report}");
    assert_eq!(report["placed"], 30);
    // The demo's generator: orders 9, 19 and 29 are over the card limit.
    assert_eq!(report["payment_failed"], 3, "{report}");
    assert_eq!(report["paid"], 27, "{report}");
    assert_eq!(report["sms_sent"], 27, "{report}");
    stack.stop().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_wait_for_more_orders_than_exist_fails_at_the_deadline() {
    let stack = stack().await;
    let endpoints = stack.endpoints();
    let placed = orderflow(
        &endpoints,
        &["place", "--url", &endpoints.order, "--orders", "5"],
    )
    .await;
    assert!(placed.status.success());

    let started = std::time::Instant::now();
    let reconciled = orderflow(
        &endpoints,
        &["reconcile", "--wait-for", "6", "--deadline", "3", "--json"],
    )
    .await;
    assert!(
        !reconciled.status.success(),
        "6 orders waited for, 5 placed: not a success"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited to the deadline"
    );
    assert_eq!(json(&reconciled)["placed"], 5);

    // The table says why, too.
    let table = orderflow(
        &endpoints,
        &["reconcile", "--wait-for", "6", "--deadline", "1"],
    )
    .await;
    assert!(!table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("NOT ENOUGH: 5 orders stored, 6 waited for"),
        "{text}"
    );
    // stderr is not a terminal here: no progress bar, one final line.
    let progress = String::from_utf8_lossy(&table.stderr);
    assert_eq!(
        progress
            .lines()
            .filter(|line| line.contains("orders settled"))
            .count(),
        1,
        "{progress}"
    );
    assert!(!progress.contains('\r'), "no bar redrawn: {progress:?}");
    stack.stop().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn place_rate_paces_the_orders() {
    let stack = stack().await;
    let endpoints = stack.endpoints();
    // 11 orders at 20/s: the last is not sent before 10 / 20 = 0.5 s.
    let placed = orderflow(
        &endpoints,
        &[
            "place",
            "--url",
            &endpoints.order,
            "--orders",
            "11",
            "--rate",
            "20",
            "--json",
        ],
    )
    .await;
    assert!(placed.status.success());
    let placed = json(&placed);
    assert_eq!(placed["placed"], 11);
    assert!(placed["seconds"].as_f64().unwrap() >= 0.5, "{placed}");
    stack.stop().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_wait_for_fails_when_more_orders_are_stored_than_waited_for() {
    let stack = stack().await;
    let endpoints = stack.endpoints();
    let placed = orderflow(
        &endpoints,
        &["place", "--url", &endpoints.order, "--orders", "6"],
    )
    .await;
    assert!(placed.status.success());
    let reconciled = orderflow(
        &endpoints,
        &[
            "reconcile",
            "--wait-for",
            "5",
            "--deadline",
            "120",
            "--json",
        ],
    )
    .await;
    let report = json(&reconciled);
    assert_eq!(report["placed"], 6, "{report}");
    assert!(
        !reconciled.status.success(),
        "5 orders waited for, 6 stored: someone placed orders nobody asked for: {report}"
    );
    stack.stop().await.expect("graceful stop");
}

/// What the issue saw after a client published straight to the exchange: effects for an
/// order the order service never stored. `reconcile` must count them and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_fails_on_effects_for_an_order_nobody_placed() {
    use orderflow_events::{
        domain::{Phone, TotalCents, UserId},
        Event, PaymentSucceeded,
    };

    let broker_url = format!("memory://cli-{}", uuid::Uuid::now_v7().simple());
    let stack = stack_on(&broker_url).await;
    let endpoints = stack.endpoints();
    let placed = orderflow(
        &endpoints,
        &["place", "--url", &endpoints.order, "--orders", "3"],
    )
    .await;
    assert!(placed.status.success());

    let stranger = uuid::Uuid::now_v7();
    let broker = orderflow_broker::connect(&broker_url)
        .await
        .expect("the stack's broker");
    broker
        .publish(
            Event::PaymentSucceeded(PaymentSucceeded {
                order_id: stranger,
                payment_id: uuid::Uuid::now_v7(),
                user_id: UserId::parse(7).unwrap(),
                phone: Phone::parse("+8613800138000").unwrap(),
                amount_cents: TotalCents::parse(5_000).unwrap(),
                paid_at: chrono::Utc::now(),
            })
            .to_envelope(),
        )
        .await
        .expect("published straight to the broker");
    // Until the SMS service has texted about it (then points and logging have had it too,
    // or will: reconcile --wait-for waits for the outboxes to empty).
    let client = reqwest::Client::new();
    let sms = format!("{}/sms?order_id={stranger}", endpoints.sms);
    orderflow_kit::wait::until(
        "the SMS service to text about the stranger's order",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let request = client.get(&sms).send();
            async move {
                let texts: serde_json::Value = request.await.ok()?.json().await.ok()?;
                (texts.as_array().map(Vec::len) == Some(1)).then_some(())
            }
        },
    )
    .await
    .expect("the SMS service handles the event");

    let reconciled = orderflow(
        &endpoints,
        &[
            "reconcile",
            "--wait-for",
            "3",
            "--deadline",
            "120",
            "--json",
        ],
    )
    .await;
    let report = json(&reconciled);
    assert!(
        !reconciled.status.success(),
        "texts and points for an order nobody placed: not exact: {report}"
    );
    assert_eq!(report["orphans"]["sms"], 1, "{report}");
    assert_eq!(report["orphans"]["points"], 1, "{report}");
    assert_eq!(report["placed"], 3, "{report}");
    broker.close().await.expect("closed");
    stack.stop().await.expect("graceful stop");
}

/// The one fault nothing on the way can repair: the broker confirms a publish and then
/// loses the message. The outbox marks it sent, no consumer ever sees it — only
/// reconciliation can tell, and the demo must say so with its exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_fails_when_the_broker_loses_confirmed_messages() {
    let output = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .args(["demo", "--orders", "40", "--json", "--deadline-secs", "120"])
            .args(["--inject", "lose=0.05,seed=11"])
            .output()
    })
    .await
    .expect("not cancelled")
    .expect("orderflow demo runs");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let report = json(&output);
    assert!(
        !output.status.success(),
        "confirmed-then-lost messages must fail the demo: {report}"
    );
    assert!(
        report["faults_injected"]["lost"].as_u64() > Some(0),
        "{report}"
    );
    let missing: u64 = report["missing"]
        .as_object()
        .expect("missing per stage")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(missing > 0, "reconciliation sees what was lost: {report}");
    assert_eq!(report["exact"], false, "{report}");
    assert_eq!(report["placed"], 40, "every order is stored: {report}");
}
