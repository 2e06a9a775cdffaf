//! The `orderflow` command line.
//!
//! ```text
//! cargo run --release -- demo                         # the order flow on the embedded broker
//! cargo run --release -- bench broker --broker URL    # abstraction vs raw client, msg/s
//! orderflow place --url URL --orders N [--rate R]     # orders into running services
//! orderflow reconcile [--wait-for N --deadline S] [--json]   # check running services
//! cargo run --release -- load --burst 10x:10s@10s --duration 40s --out DIR   # open-loop load test
//! orderflow chaos <scenario> [--broker rabbitmq|kafka|memory] [--orders N] [--json]   # the fault suite
//! orderflow scenario <name> [--broker URL] [--json]   # one claim of the article, measured (--list)
//! ```
//!
//! `demo` and `reconcile` exit with status 1 when anything is missing, doubled or orphaned
//! (an effect for an order the order service does not have), and when the orders stored
//! are not the orders asked for: `demo` stores exactly `--orders`, `reconcile --wait-for N`
//! expects exactly N (fewer settled before the deadline fails, and so do more — orders
//! nobody asked for). `place` exits with 1 when an order could not be placed; `chaos` when
//! its ledger shows anything lost or doubled (or dead letters that are not exactly the
//! poison it published).

use std::time::Duration;

use orderflow::{bench, chaos, demo, load, place, reconcile, scenarios};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "orderflow",
    about = "An online order flowing through services over a message queue"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the order flow in one process and shows what each service received.
    Demo(demo::Args),
    /// Places the demo's orders through a running order service's HTTP API.
    Place(place::Args),
    /// Checks running services: did every effect happen exactly once? Reads
    /// ORDERFLOW_{ORDER,PAYMENT,POINTS,SMS,LOGGING}_URL (default 127.0.0.1:8080–8084).
    Reconcile {
        /// Wait until this many orders are stored and every one reached its end state with
        /// every effect (or the deadline passed) before reconciling.
        #[arg(long, value_name = "N")]
        wait_for: Option<usize>,
        /// How long `--wait-for` waits at most, in seconds.
        #[arg(long, value_name = "S", default_value_t = 300, requires = "wait_for")]
        deadline: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Offers orders at a fixed rate (open loop, with an optional burst) and measures the
    /// API latency, every stage of the journey and every consumer group's backlog.
    // Boxed: its options outweigh every other command's.
    Load(Box<load::Args>),
    /// Runs one fault scenario on a broker node and services of its own and prints the
    /// ledger: sent, accepted, settled, lost, doubled, duplicates absorbed, dead letters,
    /// time to recover.
    Chaos(chaos::Args),
    /// Stages one claim of the article about message queues on the order flow and prints
    /// what it measured (`--list` shows them all).
    Scenario(scenarios::Args),
    /// Measures throughput.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Publishes then consumes N messages through the abstraction and through the raw
    /// client, same settings, and prints msg/s for each and their ratio.
    Broker {
        /// memory://, amqp://user:pass@host:5672/%2f or kafka://host:port
        #[arg(long, env = "ORDERFLOW_BROKER", default_value = "memory://")]
        broker: String,
        /// How many messages.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 256)]
        payload_bytes: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    orderflow_kit::telemetry::init_with_default(match cli.command {
        Command::Bench { .. } => "info",
        Command::Chaos(_) | Command::Scenario(_) => "error",
        _ => "warn",
    });
    let exact = |exact: bool| {
        if exact {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    };
    match cli.command {
        Command::Demo(args) => demo::run(args).await.map(exact),
        Command::Load(args) => load::run(*args)
            .await
            .map(|()| std::process::ExitCode::SUCCESS),
        Command::Chaos(args) => chaos::run_cli(args).await.map(exact),
        Command::Scenario(args) => scenarios::run_cli(args).await.map(exact),
        Command::Place(args) => place::run(args)
            .await
            .map(|()| std::process::ExitCode::SUCCESS),
        Command::Reconcile {
            wait_for,
            deadline,
            json,
        } => reconcile_running(wait_for, Duration::from_secs(deadline), json)
            .await
            .map(exact),
        Command::Bench {
            what:
                BenchCommand::Broker {
                    broker,
                    messages,
                    payload_bytes,
                    json,
                },
        } => bench_broker(&broker, messages, payload_bytes, json)
            .await
            .map(|()| std::process::ExitCode::SUCCESS),
    }
}

/// `orderflow reconcile`: one reconciliation now, or (`--wait-for N`) the first one in which
/// N orders have settled. `Ok(false)` when not exact, or when other than N are stored.
async fn reconcile_running(
    wait_for: Option<usize>,
    deadline: Duration,
    json: bool,
) -> anyhow::Result<bool> {
    let endpoints = reconcile::Endpoints::from_env();
    let client = reqwest::Client::new();
    let report = match wait_for {
        None => reconcile::reconcile(&reconcile::fetch(&client, &endpoints).await?),
        Some(orders) => {
            let settle = reconcile::Settle {
                orders,
                deadline,
                // Someone else places the orders, maybe slowly: only the deadline counts.
                stalled_after: None,
                progress: !json,
            };
            reconcile::wait_until_settled(&client, &endpoints, &settle).await?
        }
    };
    let as_expected = wait_for.is_none_or(|orders| report.placed as usize == orders);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "reconciliation of the running services ({})",
            endpoints.order
        );
        print!("{}", report.render());
    }
    if !as_expected && !json {
        let waited_for = wait_for.unwrap_or_default();
        let verdict = if (report.placed as usize) < waited_for {
            "NOT ENOUGH"
        } else {
            "TOO MANY"
        };
        println!(
            "  {verdict}: {} orders stored, {waited_for} waited for",
            report.placed
        );
    }
    Ok(as_expected && report.is_exact())
}

async fn bench_broker(
    url: &str,
    messages: usize,
    payload_bytes: usize,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(messages > 0, "--messages must be at least 1");
    let backend = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") => "memory",
        Some("amqp" | "amqps") => "rabbitmq",
        Some("kafka") => "kafka",
        _ => anyhow::bail!("unknown broker URL {url}: expected memory://, amqp:// or kafka://"),
    };
    let ours = bench::abstraction(url, messages, payload_bytes).await?;
    let raw = bench::raw(url, messages, payload_bytes).await?;
    if json {
        let report = serde_json::json!({
            "backend": backend,
            "messages": messages,
            "payload_bytes": payload_bytes,
            "publish_per_s": ours.publish_per_s.round(),
            "consume_per_s": ours.consume_per_s.round(),
            "raw_publish_per_s": raw.publish_per_s.round(),
            "raw_consume_per_s": raw.consume_per_s.round(),
            "publish_ratio": ours.publish_per_s / raw.publish_per_s,
            "consume_ratio": ours.consume_per_s / raw.consume_per_s,
        });
        println!("{report}");
    } else {
        println!(
            "{backend}: {messages} messages of {payload_bytes} B, batches of {}, prefetch {}",
            bench::BATCH,
            bench::PREFETCH
        );
        println!(
            "{:<10} {:>14} {:>14} {:>8}",
            "", "abstraction", "raw client", "ratio"
        );
        for (phase, mine, theirs) in [
            ("publish", ours.publish_per_s, raw.publish_per_s),
            ("consume", ours.consume_per_s, raw.consume_per_s),
        ] {
            println!(
                "{phase:<10} {:>10.0} msg/s {:>8.0} msg/s {:>7.2}x",
                mine,
                theirs,
                mine / theirs
            );
        }
    }
    Ok(())
}
