//! End to end: real HTTP, real databases, real brokers.
//!
//! Each test starts the five services, places orders through `POST /orders` (every tenth
//! one over the simulated card limit, so some payments fail by design), waits until the
//! flow has settled, and reconciles every service's own store: nothing may be missing and
//! nothing doubled.
//!
//! Isolation: each test gets a broker of its own — a fresh `memory://` name, a RabbitMQ
//! virtual host created for it, or a tansu process of its own — and databases of its own
//! on the PostgreSQL server (`ORDERFLOW_DATABASE_URL`), so tests run in parallel without
//! seeing each other's events.

#[path = "support/rabbitmqctl.rs"]
mod rabbitmqctl;
use rabbitmqctl::rabbitmqctl;

use std::{path::PathBuf, process::Command, time::Duration};

use orderflow::{
    place::{place_orders, Plan},
    reconcile::{wait_until_settled, Report, Settle},
    stack::{InProcessStack, ProcessStack, StackOptions},
};
use orderflow_kit::testenv;

const SETTLE_DEADLINE: Duration = Duration::from_secs(300);

/// At most two stacks at once: each holds up to 50 PostgreSQL connections (five services,
/// pools of 10) and the server allows 100; two cores gain nothing from more anyway.
static STACKS_AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The PostgreSQL server (without a database name) the services get databases on.
fn postgres_server() -> Option<String> {
    let url = testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL")?;
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split('/').next().unwrap_or(rest);
    Some(format!("{scheme}://{host}"))
}

/// A broker for one test, torn down when dropped.
enum TestBroker {
    Memory(String),
    Rabbit {
        url: String,
        vhost: String,
    },
    Tansu {
        url: String,
        process: std::process::Child,
        data_dir: PathBuf,
    },
}

impl TestBroker {
    fn memory(faults: &str) -> TestBroker {
        TestBroker::Memory(format!(
            "memory://e2e-{}{faults}",
            uuid::Uuid::now_v7().simple()
        ))
    }

    /// A RabbitMQ virtual host of the test's own: its exchanges and queues are invisible
    /// to every other test and run.
    fn rabbitmq() -> Option<TestBroker> {
        let base = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ")?;
        let vhost = format!("orderflow-e2e-{}", uuid::Uuid::now_v7().simple());
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let server = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(server, _)| server)
            .to_owned();
        Some(TestBroker::Rabbit {
            url: format!("{server}/{vhost}"),
            vhost,
        })
    }

    /// A tansu of the test's own on a free port.
    fn kafka() -> Option<TestBroker> {
        let binary = testenv::require("ORDERFLOW_TANSU_BIN", "the tansu binary")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listener = format!("tcp://127.0.0.1:{port}");
        // SQLite storage, not tansu 0.6's memory engine: the memory engine answers a fetch
        // that starts inside a record batch from the next batch, so records are skipped
        // whenever a partition changes hands mid-batch (a rebalance, a restart).
        let data_dir = std::env::temp_dir().join(format!("orderflow-e2e-tansu-{port}"));
        std::fs::create_dir_all(&data_dir).expect("a data directory for tansu");
        let process = Command::new(binary)
            .current_dir(&data_dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args([
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(TestBroker::Tansu {
            url: format!("kafka://127.0.0.1:{port}"),
            process,
            data_dir,
        })
    }

    fn url(&self) -> &str {
        match self {
            TestBroker::Memory(url)
            | TestBroker::Rabbit { url, .. }
            | TestBroker::Tansu { url, .. } => url,
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        match self {
            TestBroker::Memory(_) => {}
            TestBroker::Rabbit { vhost, .. } => {
                rabbitmqctl(&["delete_vhost", vhost]);
            }
            TestBroker::Tansu {
                process, data_dir, ..
            } => {
                let _ = process.kill();
                let _ = process.wait();
                let _ = std::fs::remove_dir_all(data_dir);
            }
        }
    }
}

/// Wait for `orders` to settle as the demo does (giving up when nothing moves for 20 s).
fn settle(orders: usize) -> Settle {
    Settle {
        orders,
        deadline: SETTLE_DEADLINE,
        stalled_after: Some(Duration::from_secs(20)),
        progress: false,
    }
}

fn assert_exact(report: &Report, orders: usize) {
    println!("{}", report.render());
    assert_eq!(report.placed as usize, orders, "every order stored once");
    assert!(
        report.is_exact(),
        "missing {:?}, doubled {:?}",
        report.missing,
        report.doubled
    );
    assert!(
        report.payment_failed > 0,
        "the over-the-limit orders failed payment"
    );
    assert!(report.paid > 0);
    assert_eq!(report.points_total, report.points_expected);
    assert_eq!(report.sms_sent, report.paid);
    // Counted at the gateways, in their own books: one charge, one text per paid order.
    assert_eq!(
        report.charges_made, report.paid,
        "charges made at the gateway"
    );
    assert_eq!(
        report.texts_dispatched, report.paid,
        "texts dispatched at the gateway"
    );
    assert_eq!(
        report.orphans_total(),
        0,
        "no effect for an order nobody placed"
    );
}

/// Places `orders` orders on an in-process stack over `broker` and reconciles.
async fn run_in_process(broker: &TestBroker, postgres: Option<String>, orders: usize) -> Report {
    let _turn = STACKS_AT_ONCE.acquire().await.expect("never closed");
    let stack = InProcessStack::start(StackOptions {
        broker_url: broker.url().to_owned(),
        postgres,
    })
    .await
    .expect("the five services start");
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    let placed = place_orders(&client, &endpoints.order, Plan::burst(orders))
        .await
        .expect("orders accepted");
    assert_eq!(placed.len(), orders);
    let report = wait_until_settled(&client, &endpoints, &settle(orders))
        .await
        .expect("reconciliation readable");
    stack.stop().await.expect("graceful stop");
    report
}

/// Only the order service runs while `orders` are placed and their `order.placed` events
/// leave its outbox (the broker confirmed them; no other service has ever run); then
/// payment, points, SMS and logging start. Every order must still settle: the order
/// service declared every group's topology before it published anything.
async fn run_order_service_first(
    broker: &TestBroker,
    postgres: Option<String>,
    orders: usize,
) -> Report {
    let _turn = STACKS_AT_ONCE.acquire().await.expect("never closed");
    let mut stack = InProcessStack::start_order_service(StackOptions {
        broker_url: broker.url().to_owned(),
        postgres,
    })
    .await
    .expect("the order service starts");
    let client = reqwest::Client::new();
    let order_url = stack.endpoints().order;
    let placed = place_orders(&client, &order_url, Plan::burst(orders))
        .await
        .expect("orders accepted");
    assert_eq!(placed.len(), orders);
    let reconcile_url = format!("{order_url}/internal/reconcile");
    orderflow_kit::wait::until(
        "every order.placed to leave the order service's outbox",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let request = client.get(&reconcile_url).send();
            async move {
                let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
                (body["common"]["outbox_pending"] == 0).then_some(())
            }
        },
    )
    .await
    .expect("the outbox empties");
    stack
        .start_downstream()
        .await
        .expect("the other four services start");
    let report = wait_until_settled(&client, &stack.endpoints(), &settle(orders))
        .await
        .expect("reconciliation readable");
    stack.stop().await.expect("graceful stop");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_orders_placed_before_the_consumers_ever_ran_all_settle() {
    let broker = TestBroker::memory("");
    let report = run_order_service_first(&broker, None, 50).await;
    assert_exact(&report, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_orders_placed_before_the_consumers_ever_ran_all_settle() {
    let (Some(postgres), Some(broker)) = (postgres_server(), TestBroker::rabbitmq()) else {
        return;
    };
    let report = run_order_service_first(&broker, Some(postgres), 50).await;
    assert_exact(&report, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_orders_placed_before_the_consumers_ever_ran_all_settle() {
    let (Some(postgres), Some(broker)) = (postgres_server(), TestBroker::kafka()) else {
        return;
    };
    let report = run_order_service_first(&broker, Some(postgres), 50).await;
    assert_exact(&report, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_500_orders_reconcile_exactly() {
    let Some(postgres) = postgres_server() else {
        return;
    };
    let broker = TestBroker::memory("");
    let report = run_in_process(&broker, Some(postgres), 500).await;
    assert_exact(&report, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_500_orders_reconcile_exactly() {
    let (Some(postgres), Some(broker)) = (postgres_server(), TestBroker::rabbitmq()) else {
        return;
    };
    let report = run_in_process(&broker, Some(postgres), 500).await;
    assert_exact(&report, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_500_orders_reconcile_exactly() {
    let (Some(postgres), Some(broker)) = (postgres_server(), TestBroker::kafka()) else {
        return;
    };
    let report = run_in_process(&broker, Some(postgres), 500).await;
    assert_exact(&report, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_with_duplicates_and_reordering_injected_is_still_exact() {
    let Some(postgres) = postgres_server() else {
        return;
    };
    let broker = TestBroker::memory("?duplicate=0.2&reorder=0.1&seed=7");
    let report = run_in_process(&broker, Some(postgres), 500).await;
    assert_exact(&report, 500);
    assert!(
        report.duplicates_ignored > 0,
        "with 20% duplicates injected, the idempotent consumers must have ignored some"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_runs_on_sqlite_with_no_setup() {
    let broker = TestBroker::memory("");
    let report = run_in_process(&broker, None, 100).await;
    assert_exact(&report, 100);
}

/// The directory holding this build's binaries (`target/debug`).
fn binaries() -> PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_separate_processes_lose_nothing_when_consumers_crash_mid_run() {
    let (Some(postgres), Some(broker)) = (postgres_server(), TestBroker::rabbitmq()) else {
        return;
    };
    let _turn = STACKS_AT_ONCE.acquire().await.expect("never closed");
    let mut stack = ProcessStack::start(
        &binaries(),
        StackOptions {
            broker_url: broker.url().to_owned(),
            postgres: Some(postgres),
        },
    )
    .await
    .expect("the five service binaries start");
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();

    place_orders(&client, &endpoints.order, Plan::burst(250))
        .await
        .expect("first half accepted");
    // Crash two consumers while their queues hold work: whatever they had taken but not
    // acked goes back to the queue and is handled (once) after the restart.
    stack
        .crash_and_restart("points")
        .await
        .expect("points restarts");
    stack.crash_and_restart("sms").await.expect("sms restarts");
    place_orders(&client, &endpoints.order, Plan::burst(250))
        .await
        .expect("second half accepted");

    let report = wait_until_settled(&client, &endpoints, &settle(500))
        .await
        .expect("reconciliation readable");
    let logs = stack.logs().to_owned();
    stack.stop().await.unwrap();
    if !report.is_exact() {
        eprintln!("service logs: {}", logs.display());
    }
    assert_exact(&report, 500);
}
