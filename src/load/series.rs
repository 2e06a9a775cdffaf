//! The per-second series of a run — one row per second, every figure side by side — and
//! its two files: `series.csv` for spreadsheets, `series.json` for scripts.
//!
//! Which second a figure belongs to is said in [`super::recorder`]: requests by their
//! intended time, answers by their arrival; stage completions by the second the stage was
//! reached; backlog by the second its sample was taken (the sample at the start of it).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Context;
use serde::Serialize;

use super::{
    backlog::BacklogSeries,
    latency::Percentiles,
    recorder::Recorded,
    stages::{Journey, Stage},
};

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondRow {
    /// Seconds from the start of the run.
    pub second: u64,
    /// Requests scheduled.
    pub offered: u64,
    /// Of which sent.
    pub sent: u64,
    /// Of which dropped at the in-flight limit.
    pub dropped: u64,
    /// Sent later than the lateness threshold.
    pub late: u64,
    /// 2xx answers received.
    pub accepted: u64,
    /// Error answers and failed connections.
    pub errors: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// API latency of the requests scheduled in this second, from their intended time.
    pub latency_ms: Percentiles,
    /// Orders of this run that reached each stage in this second.
    pub stages: BTreeMap<Stage, u64>,
    /// Each group's backlog sampled at the start of this second (`None`: not sampled).
    pub backlog: BTreeMap<String, Option<u64>>,
}

/// Builds the rows from what the generator recorded, the journeys of the run's own
/// orders, and the backlog samples.
pub fn build(
    recorded: &Recorded,
    journeys: &[Journey],
    stages: &[Stage],
    backlog: &BacklogSeries,
) -> Vec<SecondRow> {
    let mut completions: BTreeMap<u64, BTreeMap<Stage, u64>> = BTreeMap::new();
    for journey in journeys {
        for &stage in stages {
            if let Some(at) = journey.at(stage) {
                *completions
                    .entry(at.as_secs())
                    .or_default()
                    .entry(stage)
                    .or_default() += 1;
            }
        }
    }
    let last_second = [
        recorded.seconds.len().checked_sub(1).map(|s| s as u64),
        completions.keys().next_back().copied(),
        backlog.samples.last().map(|sample| sample.at_s as u64),
    ]
    .into_iter()
    .flatten()
    .max();
    let Some(last_second) = last_second else {
        return Vec::new();
    };
    (0..=last_second)
        .map(|second| {
            let recorded_second = recorded.seconds.get(second as usize);
            let count =
                |counter: fn(&super::recorder::Second) -> u64| recorded_second.map_or(0, counter);
            SecondRow {
                second,
                offered: count(|s| s.offered),
                sent: count(|s| s.sent),
                dropped: count(|s| s.dropped),
                late: count(|s| s.late),
                accepted: count(|s| s.accepted),
                errors: count(|s| s.errors),
                timeouts: count(|s| s.timeouts),
                latency_ms: recorded_second
                    .map(|s| s.latency.percentiles())
                    .unwrap_or_default(),
                stages: stages
                    .iter()
                    .map(|&stage| {
                        let done = completions
                            .get(&second)
                            .and_then(|by_stage| by_stage.get(&stage))
                            .copied()
                            .unwrap_or(0);
                        (stage, done)
                    })
                    .collect(),
                backlog: backlog
                    .groups
                    .iter()
                    .map(|group| (group.clone(), backlog.at(group, second as f64)))
                    .collect(),
            }
        })
        .collect()
}

/// The rows as CSV: one header line, one line per second; an unsampled backlog is empty.
pub fn to_csv(rows: &[SecondRow]) -> String {
    let mut out = String::from(
        "second,offered,sent,dropped,late,accepted,errors,timeouts,\
         latency_p50_ms,latency_p90_ms,latency_p99_ms,latency_p99_9_ms,latency_max_ms",
    );
    let (stages, groups): (Vec<Stage>, Vec<String>) = match rows.first() {
        Some(row) => (
            row.stages.keys().copied().collect(),
            row.backlog.keys().cloned().collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    for stage in &stages {
        let _ = write!(out, ",{}_per_s", stage.name());
    }
    for group in &groups {
        let _ = write!(out, ",backlog_{}", group.replace('-', "_"));
    }
    out.push('\n');
    for row in rows {
        let latency = &row.latency_ms;
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            row.second,
            row.offered,
            row.sent,
            row.dropped,
            row.late,
            row.accepted,
            row.errors,
            row.timeouts,
            latency.p50_ms,
            latency.p90_ms,
            latency.p99_ms,
            latency.p99_9_ms,
            latency.max_ms
        );
        for stage in &stages {
            let _ = write!(out, ",{}", row.stages.get(stage).copied().unwrap_or(0));
        }
        for group in &groups {
            match row.backlog.get(group).copied().flatten() {
                Some(backlog) => {
                    let _ = write!(out, ",{backlog}");
                }
                None => out.push(','),
            }
        }
        out.push('\n');
    }
    out
}

/// Writes `series.csv` and `series.json` into `dir`.
pub fn write(dir: &Path, rows: &[SecondRow]) -> anyhow::Result<()> {
    let csv = dir.join("series.csv");
    std::fs::write(&csv, to_csv(rows)).with_context(|| format!("writing {}", csv.display()))?;
    let json = dir.join("series.json");
    std::fs::write(&json, serde_json::to_string_pretty(rows)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}
