//! `orderflow demo`: the five services in one process, N orders through the real HTTP
//! API, then a reconciliation read from each service's own store.
//!
//! ```text
//! orderflow demo [--broker URL] [--orders N] [--inject duplicate=0.2,drop=0.05,lose=0.01,…] [--json]
//! ```
//!
//! With the default `memory://` broker nothing needs to be installed: each service gets a
//! SQLite file in a temporary directory. `--inject` adds the embedded broker's faults to
//! stage the classic problems on purpose and watch the idempotent consumers absorb them.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::{
    place::{place_orders, Plan},
    reconcile::{wait_until_settled, Report, Settle},
    stack::{InProcessStack, StackOptions},
};

/// Options of `orderflow demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Broker URL: memory:// (default), amqp://… or kafka://…
    #[arg(long, env = "ORDERFLOW_BROKER", default_value = "memory://")]
    broker: String,
    /// How many orders to place.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Faults for the embedded broker, e.g. `duplicate=0.2,reorder=0.1,drop=0.05,delay=0.1`
    /// (`lose=0.01`: confirmed, then lost — the demo then fails, as it should).
    #[arg(long)]
    inject: Option<String>,
    /// PostgreSQL server for the services' databases (one database per service and run)
    /// instead of SQLite files, e.g. postgres://postgres@127.0.0.1:5432
    #[arg(long, env = "ORDERFLOW_DEMO_POSTGRES")]
    postgres: Option<String>,
    /// Give up waiting for the flow to settle after this many seconds.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// The demo's JSON output: the reconciliation plus what the run measured.
#[derive(Serialize)]
struct DemoOutput<'a> {
    #[serde(flatten)]
    report: &'a Report,
    broker: String,
    orders_per_s: f64,
    place_ms: u64,
    /// What the embedded broker injected (memory:// with --inject only).
    #[serde(skip_serializing_if = "Option::is_none")]
    faults_injected: Option<FaultsInjected>,
    /// Orders the demo asked for (`--orders`); `placed` must equal it.
    orders_requested: usize,
    /// Exact, and as many orders stored as requested: what the exit status says.
    exact: bool,
}

/// The embedded broker's fault counters, as printed.
#[derive(Serialize)]
struct FaultsInjected {
    dropped: u64,
    /// Confirmed to the publisher, then lost (`lose=`): only reconciliation can see these.
    lost: u64,
    duplicated: u64,
    reordered: u64,
    delayed: u64,
}

/// Runs the demo; `Ok(false)` when the reconciliation is not exact (anything missing,
/// doubled or orphaned) or the orders stored are not the orders requested.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.orders > 0, "--orders must be at least 1");
    let broker = broker_url(&args.broker, args.inject.as_deref())?;
    let stack = InProcessStack::start(StackOptions {
        broker_url: broker.clone(),
        postgres: args.postgres.clone(),
    })
    .await?;
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    if !args.json {
        eprintln!(
            "five services up on {} ({} orders to place)",
            redact(&broker),
            args.orders
        );
    }

    let started = Instant::now();
    place_orders(&client, &endpoints.order, Plan::burst(args.orders)).await?;
    let place_ms = started.elapsed().as_millis() as u64;
    let settle = Settle {
        orders: args.orders,
        deadline: Duration::from_secs(args.deadline_secs),
        stalled_after: Some(Duration::from_secs(20)),
        progress: !args.json,
    };
    let mut report = wait_until_settled(&client, &endpoints, &settle).await?;
    let elapsed = started.elapsed();
    report.elapsed_ms = Some(elapsed.as_millis() as u64);
    // Read before the stack stops: the embedded broker lives as long as its handles.
    let faults_injected = args
        .inject
        .as_ref()
        .and_then(|_| orderflow_broker::memory::fault_stats(&broker))
        .map(|stats| FaultsInjected {
            dropped: stats.dropped,
            lost: stats.lost,
            duplicated: stats.duplicated,
            reordered: stats.reordered,
            delayed: stats.delayed,
        });
    stack.stop().await?;

    let orders_per_s = args.orders as f64 / elapsed.as_secs_f64();
    let as_requested = report.placed as usize == args.orders;
    let exact = report.is_exact() && as_requested;
    if args.json {
        let output = DemoOutput {
            report: &report,
            broker: redact(&broker),
            orders_per_s: (orders_per_s * 10.0).round() / 10.0,
            place_ms,
            faults_injected,
            orders_requested: args.orders,
            exact,
        };
        println!("{}", serde_json::to_string(&output)?);
    } else {
        println!(
            "\nreconciliation ({} orders on {}, {orders_per_s:.0} orders/s end to end)",
            args.orders,
            redact(&broker)
        );
        if let Some(faults) = &faults_injected {
            println!(
                "  faults injected by the broker: {} publishes lost (no confirm), {} confirmed \
                 then lost, {} deliveries duplicated, {} reordered, {} delayed",
                faults.dropped, faults.lost, faults.duplicated, faults.reordered, faults.delayed
            );
        }
        print!("{}", report.render());
        if !as_requested {
            println!(
                "  NOT AS REQUESTED: {} orders stored, {} requested",
                report.placed, args.orders
            );
        }
    }
    Ok(exact)
}

/// Adds `--inject` faults to a memory:// URL (and refuses them for real brokers).
fn broker_url(broker: &str, inject: Option<&str>) -> anyhow::Result<String> {
    let Some(faults) = inject.filter(|faults| !faults.trim().is_empty()) else {
        return Ok(if broker == "memory://" {
            // A broker of this run's own: nothing else in the process shares it.
            format!("memory://demo-{}", uuid::Uuid::now_v7().simple())
        } else {
            broker.to_owned()
        });
    };
    anyhow::ensure!(
        broker.starts_with("memory://"),
        "--inject works with the embedded broker (memory://) only: a real broker's faults are real"
    );
    let mut url = if broker == "memory://" {
        format!("memory://demo-{}", uuid::Uuid::now_v7().simple())
    } else {
        broker.to_owned()
    };
    for fault in faults
        .split(',')
        .map(str::trim)
        .filter(|fault| !fault.is_empty())
    {
        let (name, value) = fault.split_once('=').with_context(|| {
            format!("--inject: `{fault}` should be name=probability, e.g. duplicate=0.2")
        })?;
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("{}={}", name.trim(), value.trim()));
    }
    Ok(url)
}

fn redact(url: &str) -> String {
    orderflow_kit::db::redact(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_becomes_memory_url_parameters() {
        let url = broker_url("memory://", Some("duplicate=0.2, reorder=0.1")).unwrap();
        assert!(url.starts_with("memory://demo-"), "{url}");
        assert!(url.ends_with("?duplicate=0.2&reorder=0.1"), "{url}");
        assert!(broker_url("amqp://x", Some("drop=0.1")).is_err());
        assert!(broker_url("memory://", Some("drop")).is_err());
    }
}
