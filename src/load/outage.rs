//! `--logging-down LENGTH@START`: the logging service of the in-process stack stopped
//! `START` into the run and started again `LENGTH` later (e.g. `20s@10s`), while the load
//! goes on — the case that tells the two wirings apart most plainly. Through the queue the
//! order API does not depend on logging: it keeps accepting, the logging group's backlog
//! grows, and drains once logging is back. Wired synchronously, each order request calls
//! logging, so while it is away the API refuses (or stalls).
//!
//! The times recorded are when the service really stopped and was ready again (a graceful
//! stop lets running handlers finish), not the planned ones.

use std::{fmt, str::FromStr, time::Duration};

use serde::Serialize;
use tokio::time::Instant;

use super::{
    backlog::BacklogSeries, latency::LatencyHistogram, latency::Percentiles, recorder::Recorded,
    schedule::parse_duration,
};
use crate::stack::InProcessStack;

/// When the logging service is away.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outage {
    /// How long, planned.
    #[serde(rename = "length_s", serialize_with = "seconds")]
    pub length: Duration,
    /// From when, after the start of the run.
    #[serde(rename = "start_s", serialize_with = "seconds")]
    pub start: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl Outage {
    /// The default of `--compare`: logging away for the middle half of the run.
    pub fn middle_of(duration: Duration) -> Outage {
        Outage {
            start: duration / 4,
            length: duration / 2,
        }
    }

    /// Whether a request meant to go out at `at` falls inside the planned outage.
    pub fn contains(&self, at: Duration) -> bool {
        at >= self.start && at < self.start + self.length
    }

    /// The whole seconds the planned outage covers (at least one).
    pub fn seconds(&self) -> std::ops::Range<u64> {
        let start = self.start.as_secs();
        let end = (self.start + self.length).as_secs().max(start + 1);
        start..end
    }
}

impl FromStr for Outage {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = "expected LENGTH@START, e.g. 20s@10s";
        let (length, start) = text
            .split_once('@')
            .ok_or_else(|| format!("`{text}`: {shape}"))?;
        let length = parse_duration(length)?;
        if length.is_zero() {
            return Err(format!("the outage must last longer than 0 s: {shape}"));
        }
        Ok(Outage {
            length,
            start: parse_duration(start)?,
        })
    }
}

impl fmt::Display for Outage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "logging down for {} s from {} s",
            self.length.as_secs_f64(),
            self.start.as_secs_f64()
        )
    }
}

/// When the logging service really went away and came back, seconds after the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OutageTimes {
    /// The logging service had stopped.
    pub stopped_at_s: f64,
    /// It answered `/readyz` again.
    pub ready_again_at_s: f64,
}

/// What the run measured around the outage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutageReport {
    /// The outage as planned.
    pub planned: Outage,
    /// As it happened.
    #[serde(flatten)]
    pub times: OutageTimes,
    /// Requests scheduled inside the planned outage.
    pub offered: u64,
    /// 2xx answers per second within the outage's seconds.
    pub accepted_per_s: f64,
    /// Error answers, failed connections and timeouts within the outage's seconds.
    pub failed: u64,
    /// API latency of the requests scheduled inside the outage, from their intended time.
    pub latency_ms: Percentiles,
    /// The logging group's largest backlog (`None`: no queue watched — the sync wiring).
    pub logging_backlog_peak: Option<u64>,
    /// Its last sample, after the drain: back to 0 when logging caught up.
    pub logging_backlog_last: Option<u64>,
}

impl OutageReport {
    /// Reads the outage's seconds out of what the generator recorded and the backlog.
    pub fn of(
        planned: Outage,
        times: OutageTimes,
        recorded: &Recorded,
        backlog: &BacklogSeries,
    ) -> OutageReport {
        let mut latency = LatencyHistogram::default();
        let (mut offered, mut accepted, mut failed) = (0, 0, 0);
        let seconds = planned.seconds();
        for second in recorded
            .seconds
            .iter()
            .skip(seconds.start as usize)
            .take((seconds.end - seconds.start) as usize)
        {
            latency.merge(&second.latency);
            offered += second.offered;
            accepted += second.accepted;
            failed += second.errors + second.timeouts;
        }
        let length = (seconds.end - seconds.start).max(1) as f64;
        OutageReport {
            planned,
            times,
            offered,
            accepted_per_s: round1(accepted as f64 / length),
            failed,
            latency_ms: latency.percentiles(),
            logging_backlog_peak: backlog.peak("logging"),
            logging_backlog_last: backlog.last("logging"),
        }
    }
}

/// Stops the stack's logging service at `start + outage.start` and starts it again
/// `outage.length` later; hands the stack back with what happened.
pub async fn stage(
    mut stack: InProcessStack,
    start: Instant,
    outage: Outage,
) -> (InProcessStack, anyhow::Result<OutageTimes>) {
    let since = |at: Instant| round1(at.saturating_duration_since(start).as_secs_f64());
    tokio::time::sleep_until(start + outage.start).await;
    if let Err(error) = stack.stop_logging().await {
        return (stack, Err(error));
    }
    let stopped_at_s = since(Instant::now());
    tokio::time::sleep_until(start + outage.start + outage.length).await;
    let restarted = stack.restart_logging().await;
    let times = OutageTimes {
        stopped_at_s,
        ready_again_at_s: since(Instant::now()),
    };
    (stack, restarted.map(|()| times))
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_reads_length_and_start() {
        let outage: Outage = "20s@10s".parse().unwrap();
        assert_eq!(outage.length, Duration::from_secs(20));
        assert_eq!(outage.start, Duration::from_secs(10));
        assert!(outage.contains(Duration::from_secs(10)));
        assert!(!outage.contains(Duration::from_secs(30)));
        assert_eq!(outage.seconds(), 10..30);
        assert!("20s".parse::<Outage>().is_err());
        assert!("0s@10s".parse::<Outage>().is_err());
    }
}
