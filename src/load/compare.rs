//! `orderflow load --compare`: the same load against the two wirings, one after the
//! other, each on a fresh in-process stack — the queue (`async`) and the synchronous
//! baseline (`sync`, `POST /orders` calling payment, points, SMS and logging in the
//! request) — and the figures side by side.
//!
//! For each wiring: API latency p50/p99/p99.9 at the base rate and during the burst
//! (from each request's intended send time), errors and timeouts, accepted orders/s over
//! the run and within the base-rate and burst seconds, and the SMS backlog's peak (the
//! queue absorbing the burst; the sync wiring has no queue, so `null`).
//!
//! Then the same two again at the base rate with the logging service stopped for a while
//! (`--logging-down`, by default the middle half of the run): through the queue the API
//! should not notice and the log's backlog drains once logging is back; wired
//! synchronously every request needs logging, so the API fails while it is away.
//!
//! `--json` prints one object with all of it; `--out DIR` writes each run's own files under
//! `DIR/async`, `DIR/sync`, `DIR/async-logging-down` and `DIR/sync-logging-down`,
//! `compare.json` and the bar chart `compare.svg`.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::{
    args::Args,
    charts, compare_chart,
    latency::Percentiles,
    outage::{Outage, OutageReport},
    report::LoadReport,
    report::Setup,
    run::measure,
    series,
    wiring::Wiring,
};

/// One wiring's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WiringFigures {
    /// `async` or `sync`.
    pub wiring: Wiring,
    /// Requests scheduled.
    pub offered: u64,
    /// Answered 2xx with an order id.
    pub accepted: u64,
    /// Accepted orders per second over the load's duration.
    pub accepted_per_s: f64,
    /// Accepted per second within the base-rate seconds.
    pub accepted_per_s_base: f64,
    /// Accepted per second within the burst's seconds (`None` without a burst).
    pub accepted_per_s_burst: Option<f64>,
    /// Error answers and failed connections.
    pub errors: u64,
    /// Requests not answered within the timeout.
    pub timeouts: u64,
    /// Requests not sent: the in-flight limit was reached.
    pub dropped: u64,
    /// API latency of the requests scheduled at the base rate.
    pub latency_base_ms: Percentiles,
    /// API latency of the requests scheduled inside the burst.
    pub latency_burst_ms: Option<Percentiles>,
    /// API latency of every request.
    pub latency_ms: Percentiles,
    /// The SMS group's largest backlog (`None`: no queue was watched — the sync wiring).
    pub sms_backlog_peak: Option<u64>,
}

impl WiringFigures {
    /// The figures of one run.
    pub fn of(wiring: Wiring, report: &LoadReport) -> Self {
        let totals = &report.totals;
        let profile = &report.setup.profile;
        let window = profile.burst.map(|burst| {
            let start = burst.start.as_secs();
            let end = (burst.start + burst.length)
                .min(profile.duration)
                .as_secs()
                .max(start + 1);
            (start, end)
        });
        let in_burst =
            |second: u64| window.is_some_and(|(start, end)| (start..end).contains(&second));
        let load_seconds = profile.duration.as_secs().max(1);
        let per_second = |pick: &dyn Fn(u64) -> bool| {
            let seconds: Vec<_> = (0..load_seconds).filter(|&s| pick(s)).collect();
            let accepted: u64 = report
                .series
                .iter()
                .filter(|row| seconds.contains(&row.second))
                .map(|row| row.accepted)
                .sum();
            round1(accepted as f64 / seconds.len().max(1) as f64)
        };
        WiringFigures {
            wiring,
            offered: totals.offered,
            accepted: totals.accepted,
            accepted_per_s: totals.accepted_per_s,
            accepted_per_s_base: per_second(&|second| !in_burst(second)),
            accepted_per_s_burst: window.map(|_| per_second(&in_burst)),
            errors: totals.errors,
            timeouts: totals.timeouts,
            dropped: totals.dropped,
            latency_base_ms: report.latency_base_ms,
            latency_burst_ms: report.latency_burst_ms,
            latency_ms: report.latency_ms,
            sms_backlog_peak: report
                .backlog
                .iter()
                .find(|group| group.group == "sms")
                .and_then(|group| group.peak),
        }
    }
}

/// One wiring with the logging service stopped for a while.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggingDownFigures {
    /// `async` or `sync`.
    pub wiring: Wiring,
    /// Requests scheduled over the run.
    pub offered: u64,
    /// Answered 2xx with an order id, over the run.
    pub accepted: u64,
    /// Error answers and failed connections, over the run.
    pub errors: u64,
    /// Timeouts, over the run.
    pub timeouts: u64,
    /// The outage: when, and what the API did meanwhile (accepted/s, failed, latency) and
    /// the logging group's backlog.
    pub outage: OutageReport,
    /// Accepted orders whose every event the logging service holds by the end (`None`:
    /// not watched — in the sync wiring an accepted order was logged in its request).
    pub logged: Option<u64>,
}

impl LoggingDownFigures {
    /// The figures of one run with an outage.
    pub fn of(wiring: Wiring, report: &LoadReport) -> anyhow::Result<Self> {
        let outage = report
            .logging_outage
            .clone()
            .context("a logging-down run reports its outage")?;
        Ok(LoggingDownFigures {
            wiring,
            offered: report.totals.offered,
            accepted: report.totals.accepted,
            errors: report.totals.errors,
            timeouts: report.totals.timeouts,
            outage,
            logged: report
                .stages
                .iter()
                .find(|stage| stage.stage == super::stages::Stage::Logged)
                .map(|stage| stage.orders),
        })
    }
}

/// Both wirings with the logging service stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggingDown {
    /// When logging was away (planned), at the base rate with no burst.
    pub outage: Outage,
    /// Through the queue.
    #[serde(rename = "async")]
    pub asynchronous: LoggingDownFigures,
    /// Calling each service in the request.
    #[serde(rename = "sync")]
    pub synchronous: LoggingDownFigures,
}

/// Both wirings under one load: what `--compare --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareReport {
    /// The load and the machine (the async run's set-up; the sync run's differs only in
    /// its target and backend).
    pub setup: Setup,
    /// Through the queue.
    #[serde(rename = "async")]
    pub asynchronous: WiringFigures,
    /// Calling each service in the request.
    #[serde(rename = "sync")]
    pub synchronous: WiringFigures,
    /// Both again, at the base rate, with the logging service stopped for a while.
    pub logging_down: LoggingDown,
}

impl CompareReport {
    /// The two columns of the table, in order.
    pub fn columns(&self) -> [&WiringFigures; 2] {
        [&self.asynchronous, &self.synchronous]
    }

    /// The side-by-side table.
    pub fn render(&self) -> String {
        let mut out = format!("  {:<42} {:>12} {:>12}\n", "", "async", "sync");
        let [a, s] = self.columns();
        let mut row = |label: &str, value: &dyn Fn(&WiringFigures) -> String| {
            out.push_str(&format!(
                "  {label:<42} {:>12} {:>12}\n",
                value(a),
                value(s)
            ));
        };
        row("requests offered", &|f| f.offered.to_string());
        row("orders accepted", &|f| f.accepted.to_string());
        row("accepted orders/s, whole run", &|f| {
            format!("{:.1}", f.accepted_per_s)
        });
        row("accepted orders/s, base-rate seconds", &|f| {
            format!("{:.1}", f.accepted_per_s_base)
        });
        if self.asynchronous.accepted_per_s_burst.is_some() {
            row("accepted orders/s, burst seconds", &|f| {
                f.accepted_per_s_burst
                    .map_or("-".into(), |v| format!("{v:.1}"))
            });
        }
        row("errors / timeouts", &|f| {
            format!("{} / {}", f.errors, f.timeouts)
        });
        row("dropped (in-flight limit)", &|f| f.dropped.to_string());
        type Pick = fn(&Percentiles) -> f64;
        let picks: [(&str, Pick); 3] = [
            ("p50", |p| p.p50_ms),
            ("p99", |p| p.p99_ms),
            ("p99.9", |p| p.p99_9_ms),
        ];
        for (name, pick) in picks {
            row(&format!("API latency {name}, ms, base rate"), &|f| {
                format!("{:.1}", pick(&f.latency_base_ms))
            });
        }
        if self.asynchronous.latency_burst_ms.is_some() {
            for (name, pick) in picks {
                row(&format!("API latency {name}, ms, during the burst"), &|f| {
                    f.latency_burst_ms
                        .as_ref()
                        .map_or("-".into(), |p| format!("{:.1}", pick(p)))
                });
            }
        }
        row("SMS backlog peak (messages)", &|f| {
            f.sms_backlog_peak
                .map_or("no queue".into(), |peak| peak.to_string())
        });
        // A refusal answers fast: a wiring that refuses much can show a low latency.
        out.push_str("  (latency counts every answer, the errors' too)\n");
        let down = &self.logging_down;
        out.push_str(&format!(
            "\n  {:<42} {:>12} {:>12}\n",
            format!("{} (base rate)", down.outage),
            "async",
            "sync"
        ));
        let [a, s] = [&down.asynchronous, &down.synchronous];
        let mut row = |label: &str, value: &dyn Fn(&LoggingDownFigures) -> String| {
            out.push_str(&format!(
                "  {label:<42} {:>12} {:>12}\n",
                value(a),
                value(s)
            ));
        };
        row("logging stopped / ready again at (s)", &|f| {
            format!(
                "{:.1} / {:.1}",
                f.outage.times.stopped_at_s, f.outage.times.ready_again_at_s
            )
        });
        row("requests offered while it was down", &|f| {
            f.outage.offered.to_string()
        });
        row("accepted orders/s while it was down", &|f| {
            format!("{:.1}", f.outage.accepted_per_s)
        });
        row("errors + timeouts while it was down", &|f| {
            f.outage.failed.to_string()
        });
        for (name, pick) in picks {
            row(
                &format!("API latency {name}, ms, while it was down"),
                &|f| format!("{:.1}", pick(&f.outage.latency_ms)),
            );
        }
        row("orders accepted over the run", &|f| f.accepted.to_string());
        row("logging backlog peak / last (messages)", &|f| match (
            f.outage.logging_backlog_peak,
            f.outage.logging_backlog_last,
        ) {
            (Some(peak), Some(last)) => format!("{peak} / {last}"),
            _ => "no queue".into(),
        });
        row("accepted orders fully logged by the end", &|f| {
            f.logged
                .map_or("in request".into(), |logged| logged.to_string())
        });
        out
    }
}

/// Runs `--compare`: async, then sync, then prints and writes both.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = measure_both(&args).await?;
    if let Some(dir) = &args.out {
        write(dir, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report.compare)?);
    } else {
        println!(
            "\nload test, async vs sync wiring: {}",
            report.compare.setup.caption()
        );
        print!("{}", report.compare.render());
        if let Some(dir) = &args.out {
            println!(
                "  written to {}: compare.json, compare.svg, and each run's files in async/, sync/, async-logging-down/ and sync-logging-down/",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Both runs' full reports and the comparison.
pub struct BothRuns {
    /// Through the queue.
    pub asynchronous: LoadReport,
    /// Calling each service in the request.
    pub synchronous: LoadReport,
    /// Through the queue, logging stopped for a while.
    pub asynchronous_logging_down: LoadReport,
    /// Calling each service in the request, logging stopped for a while.
    pub synchronous_logging_down: LoadReport,
    /// Side by side.
    pub compare: CompareReport,
}

/// Measures the load against each wiring in turn, each on a fresh in-process stack.
pub async fn measure_both(args: &Args) -> anyhow::Result<BothRuns> {
    let with = |wiring| Args {
        wiring,
        compare: false,
        logging_down: None,
        ..args.clone()
    };
    let outage = args
        .logging_down
        .unwrap_or_else(|| Outage::middle_of(args.duration));
    // The outage alone, without the burst: one cause per run.
    let down = |wiring| Args {
        burst: None,
        logging_down: Some(outage),
        ..with(wiring)
    };
    let asynchronous = measure(&with(Wiring::Async))
        .await
        .context("the async run")?;
    let synchronous = measure(&with(Wiring::Sync)).await.context("the sync run")?;
    let asynchronous_logging_down = measure(&down(Wiring::Async))
        .await
        .context("the async run with logging down")?;
    let synchronous_logging_down = measure(&down(Wiring::Sync))
        .await
        .context("the sync run with logging down")?;
    let compare = CompareReport {
        setup: asynchronous.setup.clone(),
        asynchronous: WiringFigures::of(Wiring::Async, &asynchronous),
        synchronous: WiringFigures::of(Wiring::Sync, &synchronous),
        logging_down: LoggingDown {
            outage,
            asynchronous: LoggingDownFigures::of(Wiring::Async, &asynchronous_logging_down)?,
            synchronous: LoggingDownFigures::of(Wiring::Sync, &synchronous_logging_down)?,
        },
    };
    Ok(BothRuns {
        asynchronous,
        synchronous,
        asynchronous_logging_down,
        synchronous_logging_down,
        compare,
    })
}

/// Writes `compare.json`, `compare.svg` and each run's series, report and charts.
pub fn write(dir: &Path, runs: &BothRuns) -> anyhow::Result<()> {
    for (name, report) in [
        ("async", &runs.asynchronous),
        ("sync", &runs.synchronous),
        ("async-logging-down", &runs.asynchronous_logging_down),
        ("sync-logging-down", &runs.synchronous_logging_down),
    ] {
        let own = dir.join(name);
        std::fs::create_dir_all(&own).with_context(|| format!("creating {}", own.display()))?;
        series::write(&own, &report.series)?;
        let path = own.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        charts::write(&own, report)?;
    }
    let path = dir.join("compare.json");
    std::fs::write(&path, serde_json::to_string_pretty(&runs.compare)?)
        .with_context(|| format!("writing {}", path.display()))?;
    compare_chart::write(&dir.join("compare.svg"), &runs.compare)?;
    Ok(())
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
