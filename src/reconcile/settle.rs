//! Waiting for a flow to settle: poll the five reports until every order has reached its
//! end state with every effect, or a deadline passes.
//!
//! Used by `orderflow demo` (after placing its orders) and `orderflow reconcile
//! --wait-for N` (against services placed into by someone else). The progress bar is
//! drawn on stderr only when stderr is a terminal; otherwise one final line is printed.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{fetch, reconcile, Endpoints, Report};

/// How long to wait, and for what.
#[derive(Debug, Clone)]
pub struct Settle {
    /// How many orders must be stored (and settled) before the flow counts as done.
    pub orders: usize,
    /// Give up after this long.
    pub deadline: Duration,
    /// Give up early when the number of missing effects has not changed for this long:
    /// a lost message never arrives, so waiting longer shows nothing new.
    pub stalled_after: Option<Duration>,
    /// Show progress on stderr.
    pub progress: bool,
}

/// Polls the services until `settle.orders` orders are stored, every one has reached its
/// end state with every effect and no outbox row is pending — or the deadline (or the
/// stall limit) is reached. Returns the last reconciliation either way: the caller decides
/// what a report that is not exact means. A service that does not answer is asked again
/// until the deadline (it may be restarting); only then is its error returned.
pub async fn wait_until_settled(
    client: &reqwest::Client,
    endpoints: &Endpoints,
    settle: &Settle,
) -> anyhow::Result<Report> {
    let bar = progress_bar(settle);
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last_missing = u64::MAX;
    loop {
        let reached_deadline = started.elapsed() > settle.deadline;
        let (report, outbox_pending) = match fetch(client, endpoints).await {
            Ok(snapshot) => (reconcile(&snapshot), snapshot.outbox_pending()),
            Err(error) if reached_deadline => {
                bar.abandon();
                return Err(error.context("the services did not answer before the deadline"));
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reconciliation not readable yet; asking again"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let settled = (report.paid + report.payment_failed) as usize;
        let missing = report.missing_total();
        bar.set_position(settled as u64);
        bar.set_message(format!("{missing} effects pending"));

        let done = report.placed as usize >= settle.orders && missing == 0 && outbox_pending == 0;
        if missing != last_missing {
            last_missing = missing;
            last_change = Instant::now();
        }
        let stalled = settle
            .stalled_after
            .is_some_and(|patience| last_change.elapsed() > patience);
        if done || stalled || reached_deadline {
            let why = match (done, stalled) {
                (true, _) => String::new(),
                (false, true) => format!(
                    " (stopped waiting: nothing moved for {} s)",
                    settle.stalled_after.unwrap_or_default().as_secs()
                ),
                (false, false) => " (stopped waiting: deadline reached)".to_owned(),
            };
            finish(&bar, settle, settled, missing, &why);
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn progress_bar(settle: &Settle) -> ProgressBar {
    if !settle.progress {
        return ProgressBar::hidden();
    }
    // Hidden by indicatif itself when stderr is not a terminal.
    let bar = ProgressBar::new(settle.orders as u64);
    bar.set_style(
        ProgressStyle::with_template("  [{bar:30}] {pos}/{len} orders settled, {msg}")
            .expect("a valid template")
            .progress_chars("#>."),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Leaves one line behind: the bar in its last state on a terminal, else a plain line.
fn finish(bar: &ProgressBar, settle: &Settle, settled: usize, missing: u64, why: &str) {
    if !settle.progress {
        return;
    }
    if bar.is_hidden() {
        eprintln!(
            "  {settled}/{} orders settled, {missing} effects pending{why}",
            settle.orders
        );
    } else {
        bar.finish_with_message(format!("{missing} effects pending{why}"));
    }
}
