//! The fault suite under test: every `orderflow chaos` scenario on RabbitMQ and on Kafka
//! (a node of each run's own, the services as separate processes of their real binaries,
//! 1,000 orders each), and the in-process equivalents on the memory broker. Each test
//! asserts from the ledger: nothing lost, nothing doubled, and the dead letters exactly
//! the poison published.
//!
//! Needs RabbitMQ installed (a node of its own is started; the shared one is not
//! touched), `ORDERFLOW_TANSU_BIN`, `ORDERFLOW_DATABASE_URL` (PostgreSQL: the replicas of
//! a service share a database) and the service binaries built with the order service's
//! `failpoints` feature. Without them a test skips with the reason; with `CI=true` it
//! fails.
//!
//! ```text
//! cargo test --test chaos                      # all of it (scripts/test.sh runs it)
//! cargo test --test chaos rabbitmq_broker      # one scenario on one backend
//! ```

use std::time::Duration;

use orderflow::chaos::{self, Backend, ChaosRun, Ledger, Scenario};
use orderflow_kit::testenv;

/// Orders per run.
const ORDERS: usize = 1000;
/// Orders per second: 1,000 orders take five seconds, long enough for a fault to land
/// mid-stream.
const RATE_PER_S: f64 = 200.0;

/// Runs on separate processes, one at a time: a run is a broker node and six to ten
/// service processes with up to ten PostgreSQL connections each, and two at once can
/// exhaust PostgreSQL's default `max_connections` of 100.
static RUNS_AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The run for `scenario` on `backend`, or `None` (after saying why) when what it needs
/// is missing outside CI.
fn chaos_run(scenario: Scenario, backend: Backend) -> Option<ChaosRun> {
    let postgres = match backend {
        // In process on SQLite files: the memory runs go in parallel (they need no broker
        // node of their own), and five services each on PostgreSQL per run would take the
        // server's connections from the RabbitMQ or Kafka run going on beside them.
        Backend::Memory => None,
        _ => Some(testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL")?),
    };
    let tansu_bin = match backend {
        Backend::Kafka => Some(testenv::require("ORDERFLOW_TANSU_BIN", "the tansu binary")?.into()),
        _ => None,
    };
    if backend == Backend::Rabbitmq && orderflow_nodes::RabbitNode::installed().is_none() {
        let message = "RabbitMQ is not installed (a node of the test's own is started from it)";
        assert!(!testenv::in_ci(), "CI=true and {message}");
        eprintln!("SKIPPED: {message}");
        return None;
    }
    Some(ChaosRun {
        scenario,
        backend,
        orders: ORDERS,
        // In process nothing but the CPU limits the rate; a faster stream keeps the
        // in-process runs short.
        rate_per_s: if backend == Backend::Memory {
            4.0 * RATE_PER_S
        } else {
            RATE_PER_S
        },
        postgres: postgres.map(|url| chaos::server_of(&url)),
        tansu_bin,
        binaries: chaos::binaries_beside_executable().expect("the test binary has a directory"),
        settle_deadline: Duration::from_secs(240),
    })
}

/// Runs it and checks the ledger.
async fn assert_survives(scenario: Scenario, backend: Backend) {
    let Some(run) = chaos_run(scenario, backend) else {
        return;
    };
    let ledger = match backend {
        Backend::Memory => run.run().await,
        _ => {
            let _turn = RUNS_AT_ONCE.acquire().await.expect("never closed");
            run.run().await
        }
    }
    .unwrap_or_else(|error| panic!("{} on {}: {error:#}", scenario.name(), backend.name()));
    eprintln!("{}", ledger.render());
    assert_ledger(&ledger, scenario);
}

fn assert_ledger(ledger: &Ledger, scenario: Scenario) {
    let json = serde_json::to_string(ledger).unwrap();
    assert_eq!(
        ledger.accepted, ORDERS as u64,
        "not every order accepted: {json}"
    );
    assert_eq!(ledger.lost, 0, "orders or effects lost: {json}");
    assert_eq!(ledger.doubled, 0, "effects doubled: {json}");
    assert_eq!(
        ledger.orphans, 0,
        "effects for orders nobody placed: {json}"
    );
    assert_eq!(
        ledger.settled, ledger.accepted,
        "accepted orders not settled: {json}"
    );
    // Every poison message dead-lettered by every group that receives it. A repeat (its
    // ack lost to the fault) is allowed: a real message dead-lettered would be lost above.
    assert!(
        ledger.dead_letters >= ledger.dead_letters_expected,
        "poison not dead-lettered by every receiving group: {json}"
    );
    if ledger.poison_published == 0 {
        assert_eq!(
            ledger.dead_letters, 0,
            "dead letters without poison: {json}"
        );
    }
    if matches!(scenario, Scenario::Poison | Scenario::AllAtOnce) {
        assert!(ledger.poison_published > 0, "no poison published: {json}");
        assert!(ledger.dead_letters > 0, "poison not dead-lettered: {json}");
    }
    assert!(ledger.passed, "{json}");
}

macro_rules! scenario_tests {
    ($($name:ident: $scenario:expr,)*) => {
        mod on_rabbitmq {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    assert_survives($scenario, Backend::Rabbitmq).await;
                }
            )*
        }
        mod on_kafka {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    assert_survives($scenario, Backend::Kafka).await;
                }
            )*
        }
        mod on_memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    assert_survives($scenario, Backend::Memory).await;
                }
            )*
        }
    };
}

scenario_tests! {
    kill_consumers: Scenario::KillConsumers,
    kill_order_relay: Scenario::KillOrderRelay,
    network_cut: Scenario::NetworkCut,
    rolling_restart: Scenario::RollingRestart,
    poison: Scenario::Poison,
}

// `broker-restart` is written out, not generated: its Kafka case is a known failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_rabbitmq_broker_restart() {
    assert_survives(Scenario::BrokerRestart, Backend::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_memory_broker_restart() {
    assert_survives(Scenario::BrokerRestart, Backend::Memory).await;
}

/// Failed 2 of 3 runs with a 10 s session: after tansu was killed and restarted (back in
/// 0.2 s), its coordinator answered no heartbeat for longer than the session, the
/// departed leader's late heartbeat left the group forming with that member still named
/// leader, and nothing was assigned again ("points 506 missing, log 506 missing"). The
/// session is now 45 s (`SESSION_TIMEOUT` in the Kafka backend's `config.rs`, which says
/// why); `shared/broker/tests/membership.rs` stages the same with SIGSTOP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_kafka_broker_restart() {
    assert_survives(Scenario::BrokerRestart, Backend::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_rabbitmq_all_at_once() {
    assert_survives(Scenario::AllAtOnce, Backend::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_memory_all_at_once() {
    assert_survives(Scenario::AllAtOnce, Backend::Memory).await;
}

/// Once a known failure: when one of two copies of a consumer was killed -9 and
/// restarted, tansu 0.6 left the dead member's partition assigned to it for good ("sms
/// 191 missing" in 3 of 5 runs). `kafka/reissued.rs` is the fix; the broker-level test is
/// `shared/broker/tests/membership.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_kafka_all_at_once() {
    assert_survives(Scenario::AllAtOnce, Backend::Kafka).await;
}
