//! The options of `orderflow load`.

use std::{path::PathBuf, time::Duration};

use super::{
    outage::Outage,
    schedule::{parse_duration, Arrivals, Burst},
    wiring::Wiring,
};

/// Options of `orderflow load`.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "load")]
pub struct Args {
    /// The order API of running services, e.g. http://127.0.0.1:8080. Default: the five
    /// services started in this process.
    #[arg(long)]
    pub target: Option<String>,
    /// The broker. Without --target: the one the in-process services use (default
    /// memory://, nothing to install). With --target: the running services' broker,
    /// watched for the stages and the backlogs (without it only the API is measured).
    #[arg(long, env = "ORDERFLOW_BROKER")]
    pub broker: Option<String>,
    /// With --target: the logging service's base URL, for the *logged* stage.
    #[arg(long, requires = "target")]
    pub logging_url: Option<String>,
    /// PostgreSQL server for the in-process services' databases instead of SQLite files,
    /// e.g. postgres://postgres@127.0.0.1:5432
    #[arg(long, env = "ORDERFLOW_DEMO_POSTGRES", conflicts_with = "target")]
    pub postgres: Option<String>,
    /// Without --target: how the in-process order service reaches the other four —
    /// through the queue (async), or by calling each of them inside POST /orders (sync,
    /// the baseline; ORDERFLOW_WIRING=sync).
    #[arg(long, value_enum, default_value_t = Wiring::Async, conflicts_with = "target")]
    pub wiring: Wiring,
    /// Runs the same load twice on fresh in-process stacks, async then sync wiring, and
    /// prints (and with --out draws, compare.svg) the two side by side.
    #[arg(long, conflicts_with = "target")]
    pub compare: bool,
    /// Without --target: stops the in-process logging service START into the run and
    /// starts it again LENGTH later, e.g. 20s@10s. With --compare: the window of the
    /// logging-down case (default: the middle half of the run).
    #[arg(long, value_name = "LENGTH@START", conflicts_with = "target")]
    pub logging_down: Option<Outage>,
    /// Without --target: the in-process SMS gateway's limit in texts/s instead of its
    /// default (50); a high value lifts it.
    #[arg(long, value_name = "TEXTS_PER_S", conflicts_with = "target")]
    pub sms_rate: Option<f64>,
    /// With --target: sends `GET PATH` (e.g. /healthz) instead of placing orders, and
    /// watches no broker — the generator's own ceiling against a trivial endpoint.
    #[arg(long, value_name = "PATH", requires = "target")]
    pub get: Option<String>,
    /// Orders per second outside the burst.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long orders are sent (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A burst: MULTIPLIERx:LENGTH@START, e.g. 10x:10s@20s (ten times the rate for ten
    /// seconds from second 20).
    #[arg(long)]
    pub burst: Option<Burst>,
    /// How arrivals are spread: evenly, or as a Poisson process.
    #[arg(long, value_enum, default_value_t = Arrivals::Uniform)]
    pub arrivals: Arrivals,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Requests in flight at most; a request due while this many are out is dropped (and
    /// counted), never delayed.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Per-request timeout (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// A request sent later than this after its intended time counts as late.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub late_after: Duration,
    /// After the load, how long to wait at most for every accepted order to settle
    /// (0s: do not wait).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the per-second series (series.csv, series.json), the report (report.json)
    /// and the charts (SVG) into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}
