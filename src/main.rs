//! The `orderflow` command line.
//!
//! ```text
//! cargo run --release -- demo                         # the order flow on the embedded broker
//! cargo run --release -- bench broker --broker URL    # abstraction vs raw client, msg/s
//! orderflow reconcile [--json]                        # check running services (scripts/up.sh)
//! ```
//!
//! `demo` and `reconcile` exit with status 1 when anything is missing or doubled.

use orderflow::{bench, demo, reconcile};

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
    /// Checks running services: did every effect happen exactly once? Reads
    /// ORDERFLOW_{ORDER,PAYMENT,POINTS,SMS,LOGGING}_URL (default 127.0.0.1:8080–8084).
    Reconcile {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        Command::Reconcile { json } => reconcile_running(json).await.map(exact),
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

async fn reconcile_running(json: bool) -> anyhow::Result<bool> {
    let endpoints = reconcile::Endpoints::from_env();
    let snapshot = reconcile::fetch(&reqwest::Client::new(), &endpoints).await?;
    let report = reconcile::reconcile(&snapshot);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "reconciliation of the running services ({})",
            endpoints.order
        );
        print!("{}", report.render());
    }
    Ok(report.is_exact())
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
