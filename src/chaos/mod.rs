//! `orderflow chaos`: the fault suite. Each scenario runs the stack, streams orders through
//! it, does something bad to it mid-run, waits for the flow to settle and prints a
//! Jepsen-style [`Ledger`]: what the client sent, what was accepted, what settled, what
//! was **lost** and what **doubled**.
//!
//! ```text
//! orderflow chaos <scenario> [--broker rabbitmq|kafka|memory] [--orders N] [--rate R] [--json]
//! ```
//!
//! On `rabbitmq` and `kafka` the run starts a broker node of its own (`orderflow-nodes`:
//! a RabbitMQ node on free ports, a tansu with SQLite storage — never the shared brokers,
//! which are never killed), the five services as separate processes of their real
//! binaries ([`crate::stack::ProcessStack`]; PostgreSQL from `ORDERFLOW_DATABASE_URL`, else
//! SQLite files), and kills, cuts and poisons for real. On `memory` the same scenarios run
//! in process, their faults staged by the embedded broker's fault injection
//! (`memory://…?drop=…&duplicate=…&reorder=…&delay=…`, see [`memory`]).
//!
//! | scenario | file | the fault |
//! | --- | --- | --- |
//! | `kill-consumers` | `kill_consumers.rs` | kill -9 of each consumer service in turn, each restarted |
//! | `kill-order-relay` | `kill_order_relay.rs` | kill -9 of the order service between the broker's confirm and the outbox mark (failpoint `outbox-after-confirm`), restarted without it |
//! | `broker-restart` | `broker_restart.rs` | kill -9 of the broker node, restarted on the same ports and data |
//! | `network-cut` | `network_cut.rs` | the TCP path between services and the broker cut, then restored ([`proxy`]) |
//! | `rolling-restart` | `rolling_restart.rs` | two copies of each consumer service, each SIGTERMed and restarted in turn |
//! | `poison` | `poison.rs` | malformed payloads published straight to the topics, mixed into the stream |
//! | `all-at-once` | `all_at_once.rs` | every fault above in one window |
//!
//! Beside them: `ledger.rs` (the ledger and its table), `traffic.rs` (orders at a steady
//! rate, retried through the fault), `node.rs` (the broker node of the run), `run.rs`
//! (one run on separate processes: set up, traffic, fault, settle, ledger), `memory.rs`
//! (the in-process equivalents).
//!
//! A run fails (exit status 1) when anything was lost or doubled, or the dead letters are
//! not exactly the poison published.

mod all_at_once;
mod broker_restart;
mod kill_consumers;
mod kill_order_relay;
pub mod ledger;
pub mod memory;
mod network_cut;
mod node;
mod poison;
pub mod proxy;
mod rolling_restart;
mod run;
mod traffic;

use std::{path::PathBuf, time::Duration};

pub use ledger::Ledger;
pub use proxy::Proxy;

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// kill -9 of each consumer service in turn, each restarted.
    KillConsumers,
    /// kill -9 of the order service between the broker's confirm and the outbox mark.
    KillOrderRelay,
    /// kill -9 of the broker, restarted on the same data.
    BrokerRestart,
    /// The network between services and the broker cut, then restored.
    NetworkCut,
    /// A rolling SIGTERM restart of two copies of each consumer service.
    RollingRestart,
    /// Malformed messages mixed into the stream.
    Poison,
    /// All of the above in one window.
    AllAtOnce,
}

impl Scenario {
    /// Every scenario, in the order the suite runs them.
    pub const ALL: [Scenario; 7] = [
        Scenario::KillConsumers,
        Scenario::KillOrderRelay,
        Scenario::BrokerRestart,
        Scenario::NetworkCut,
        Scenario::RollingRestart,
        Scenario::Poison,
        Scenario::AllAtOnce,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillConsumers => "kill-consumers",
            Scenario::KillOrderRelay => "kill-order-relay",
            Scenario::BrokerRestart => "broker-restart",
            Scenario::NetworkCut => "network-cut",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::Poison => "poison",
            Scenario::AllAtOnce => "all-at-once",
        }
    }
}

/// Where a run's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A RabbitMQ node of the run's own.
    Rabbitmq,
    /// A tansu (Kafka protocol) of the run's own.
    Kafka,
    /// The embedded broker, in process, faults injected by it.
    Memory,
}

impl Backend {
    /// The name on the command line and in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Rabbitmq => "rabbitmq",
            Backend::Kafka => "kafka",
            Backend::Memory => "memory",
        }
    }
}

/// Options of `orderflow chaos`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Which fault to inject.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Which broker to run on (a node of the run's own; never the shared one).
    #[arg(long, value_enum, default_value = "rabbitmq")]
    pub broker: Backend,
    /// How many orders to place.
    #[arg(long, default_value_t = 1000)]
    pub orders: usize,
    /// Orders per second, steady.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// PostgreSQL server for the services' databases (one per service and run); SQLite
    /// files in a temporary directory when unset.
    #[arg(long, env = "ORDERFLOW_DATABASE_URL")]
    pub postgres: Option<String>,
    /// The tansu binary (for `--broker kafka`).
    #[arg(long, env = "ORDERFLOW_TANSU_BIN")]
    pub tansu_bin: Option<PathBuf>,
    /// Where the `*-service` binaries are (default: beside this executable).
    #[arg(long)]
    pub binaries: Option<PathBuf>,
    /// Give up waiting for the flow to settle after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub deadline_secs: u64,
    /// Print the ledger as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One fault run, as the CLI, the tests and the reliability script describe it.
#[derive(Debug, Clone)]
pub struct ChaosRun {
    /// Which fault.
    pub scenario: Scenario,
    /// Which broker.
    pub backend: Backend,
    /// How many orders.
    pub orders: usize,
    /// Orders per second.
    pub rate_per_s: f64,
    /// PostgreSQL server (`postgres://user@host:port`, any database path is ignored).
    pub postgres: Option<String>,
    /// The tansu binary, for Kafka.
    pub tansu_bin: Option<PathBuf>,
    /// Where the service binaries are.
    pub binaries: PathBuf,
    /// How long settling may take after the last order.
    pub settle_deadline: Duration,
}

impl ChaosRun {
    /// Runs it and returns its ledger (an error only when the run itself could not be
    /// done: a broker that did not start, a binary missing — never for a loss).
    pub async fn run(&self) -> anyhow::Result<Ledger> {
        anyhow::ensure!(self.orders >= 2, "a fault run needs at least 2 orders");
        anyhow::ensure!(
            self.rate_per_s > 0.0 && self.rate_per_s.is_finite(),
            "the rate must be a positive number"
        );
        match self.backend {
            Backend::Memory => memory::run(self).await,
            Backend::Rabbitmq | Backend::Kafka => run::run(self).await,
        }
    }
}

/// The directory of this executable (`target/debug` for `orderflow`, the parent of
/// `deps/` for a test binary): where cargo puts the `*-service` binaries.
pub fn binaries_beside_executable() -> anyhow::Result<PathBuf> {
    let executable = std::env::current_exe()?;
    let dir = executable
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", executable.display()))?;
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_owned()
    } else {
        dir.to_owned()
    })
}

/// Runs `orderflow chaos`; `Ok(false)` when the ledger did not pass.
pub async fn run_cli(args: Args) -> anyhow::Result<bool> {
    let binaries = match args.binaries {
        Some(dir) => dir,
        None => binaries_beside_executable()?,
    };
    let run = ChaosRun {
        scenario: args.scenario,
        backend: args.broker,
        orders: args.orders,
        rate_per_s: args.rate,
        postgres: args.postgres.map(|url| server_of(&url)),
        tansu_bin: args.tansu_bin,
        binaries,
        settle_deadline: Duration::from_secs(args.deadline_secs),
    };
    // On Ctrl-C the run is dropped, which kills its services and its broker node.
    let ledger = tokio::select! {
        ledger = run.run() => ledger?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the run's processes are stopped"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&ledger)?);
    } else {
        print!("{}", ledger.render());
    }
    Ok(ledger.passed)
}

/// `postgres://user@host:port/db` → `postgres://user@host:port`: the stack makes a
/// database per service and run on that server.
pub fn server_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// How each scenario wants the stack set up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Setup {
    /// Copies of each consumer service (1 when 0).
    pub(crate) consumer_replicas: usize,
    /// Services that reach the broker through the run's proxy.
    pub(crate) proxied: Vec<&'static str>,
    /// Poison messages to mix into the stream.
    pub(crate) poison: usize,
}

/// The services that consume (everything but the order API's own consumer, which the
/// scenarios treat as the order service).
pub(crate) const CONSUMERS: [&str; 4] = ["payment", "points", "sms", "logging"];

impl Scenario {
    /// How the stack is set up for this scenario with `orders` orders.
    pub(crate) fn setup(self, orders: usize) -> Setup {
        match self {
            Scenario::KillConsumers => kill_consumers::setup(),
            Scenario::KillOrderRelay => kill_order_relay::setup(),
            Scenario::BrokerRestart => broker_restart::setup(),
            Scenario::NetworkCut => network_cut::setup(),
            Scenario::RollingRestart => rolling_restart::setup(),
            Scenario::Poison => poison::setup(orders),
            Scenario::AllAtOnce => all_at_once::setup(orders),
        }
    }

    /// The memory broker's faults that stand in for this scenario in process.
    pub(crate) fn memory_faults(self) -> &'static str {
        match self {
            Scenario::KillConsumers => kill_consumers::MEMORY_FAULTS,
            Scenario::KillOrderRelay => kill_order_relay::MEMORY_FAULTS,
            Scenario::BrokerRestart => broker_restart::MEMORY_FAULTS,
            Scenario::NetworkCut => network_cut::MEMORY_FAULTS,
            Scenario::RollingRestart => rolling_restart::MEMORY_FAULTS,
            Scenario::Poison => poison::MEMORY_FAULTS,
            Scenario::AllAtOnce => all_at_once::MEMORY_FAULTS,
        }
    }

    /// Does it to the running stack.
    pub(crate) async fn inject(self, fault: &mut run::Fault<'_>) -> anyhow::Result<()> {
        match self {
            Scenario::KillConsumers => kill_consumers::inject(fault).await,
            Scenario::KillOrderRelay => kill_order_relay::inject(fault).await,
            Scenario::BrokerRestart => broker_restart::inject(fault).await,
            Scenario::NetworkCut => network_cut::inject(fault).await,
            Scenario::RollingRestart => rolling_restart::inject(fault).await,
            Scenario::Poison => poison::inject(fault).await,
            Scenario::AllAtOnce => all_at_once::inject(fault).await,
        }
    }
}
