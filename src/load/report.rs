//! The result of a load run: what `--json` prints, and the table a person reads.

use serde::Serialize;

use super::{
    latency::Percentiles,
    load_average::LoadAverage,
    outage::{Outage, OutageReport},
    schedule::{Arrivals, Profile},
    series::SecondRow,
    stages::Stage,
};

/// How the run was set up, printed with every result (and in every chart's caption).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    /// `in-process stack` or the order API's base URL.
    pub target: String,
    /// `memory`, `rabbitmq`, `kafka`, or `none` when no broker was watched.
    pub backend: String,
    /// The broker URL, password removed (`None` when no broker was watched).
    pub broker: Option<String>,
    /// The offered load.
    pub profile: Profile,
    /// How arrivals are spread.
    pub arrivals: Arrivals,
    /// The seed of the arrivals (and nothing else).
    pub seed: u64,
    /// Requests in flight at most.
    pub max_in_flight: usize,
    /// Per-request timeout, ms.
    pub timeout_ms: u64,
    /// A request sent more than this many ms after its intended time is late.
    pub late_after_ms: u64,
    /// The machine: cores and CPU model.
    pub machine: String,
    /// The machine's load average when the run started (`None` where the system does
    /// not say), so a figure from a busy machine can be told from a quiet one's.
    pub load_average: Option<LoadAverage>,
    /// The SMS gateway's limit, texts/s, when known (the in-process stack's).
    pub sms_limit_per_s: Option<f64>,
    /// When the logging service was stopped (`--logging-down`), if it was.
    pub logging_down: Option<Outage>,
}

impl Setup {
    /// One line: target, backend, rates, machine and its load average at the start.
    pub fn caption(&self) -> String {
        let burst = match self.profile.burst {
            Some(burst) => format!(", burst {burst}"),
            None => String::new(),
        };
        let outage = match self.logging_down {
            Some(outage) => format!(", {outage}"),
            None => String::new(),
        };
        let load = match self.load_average {
            Some(load) => format!(", {load} at the start"),
            None => String::new(),
        };
        format!(
            "{} on {}; {} orders/s {} for {} s{burst}{outage}; {}{load}",
            self.target,
            self.backend,
            self.profile.rate_per_s,
            self.arrivals.name(),
            self.profile.duration.as_secs_f64(),
            self.machine
        )
    }
}

/// The requests, added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests scheduled.
    pub offered: u64,
    /// Sent.
    pub sent: u64,
    /// Not sent: the in-flight limit was reached at their intended time.
    pub dropped: u64,
    /// Sent later than the lateness threshold.
    pub late: u64,
    /// Answered 2xx with an order id.
    pub accepted: u64,
    /// Answered otherwise, or the connection failed.
    pub errors: u64,
    /// Not answered within the timeout.
    pub timeouts: u64,
    /// Offered requests per second over the load's duration.
    pub offered_per_s: f64,
    /// Accepted orders per second over the load's duration.
    pub accepted_per_s: f64,
}

/// One stage of the journey, over the run's accepted orders.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSummary {
    /// Which.
    pub stage: Stage,
    /// Accepted orders that reached it.
    pub orders: u64,
    /// Sightings of the stage beyond the first, per order (redeliveries, republishes).
    pub repeats: u64,
    /// From each order's intended send time to the stage.
    pub latency_ms: Percentiles,
}

/// One consumer group's backlog over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupBacklog {
    /// The group.
    pub group: String,
    /// Its largest sample.
    pub peak: Option<u64>,
    /// Its last sample (after the drain).
    pub last: Option<u64>,
}

/// Everything a load run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// How it was set up.
    pub setup: Setup,
    /// The requests.
    pub totals: Totals,
    /// API latency from the intended send time, every answered or timed-out request.
    pub latency_ms: Percentiles,
    /// The same, for requests scheduled at the base rate.
    pub latency_base_ms: Percentiles,
    /// The same, for requests scheduled inside the burst (`None` without a burst).
    pub latency_burst_ms: Option<Percentiles>,
    /// How late requests left relative to their intended time (the generator's own lag).
    pub send_lag_ms: Percentiles,
    /// The journey, stage by stage (empty when no broker was watched).
    pub stages: Vec<StageSummary>,
    /// Accepted orders that reached their end state (every stage watched) before the end.
    pub settled: Option<u64>,
    /// Events the observer saw for orders this run did not get an id for (another
    /// client's, or a request that timed out after the service had taken it).
    pub other_orders: u64,
    /// Messages the observer could not read.
    pub unreadable: u64,
    /// The observer's consumer group (removed from RabbitMQ after the run).
    pub observer_group: Option<String>,
    /// Every group's backlog.
    pub backlog: Vec<GroupBacklog>,
    /// The logging service's outage and what it did (`--logging-down`).
    pub logging_outage: Option<OutageReport>,
    /// Seconds from the start to the end of the drain.
    pub elapsed_s: f64,
    /// Per second.
    pub series: Vec<SecondRow>,
}

impl LoadReport {
    /// The table for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let totals = &self.totals;
        let mut line =
            |label: &str, value: String| out.push_str(&format!("  {label:<34} {value}\n"));
        line(
            "requests offered / sent",
            format!(
                "{} / {}  ({:.1}/s offered)",
                totals.offered, totals.sent, totals.offered_per_s
            ),
        );
        line(
            "orders accepted",
            format!("{}  ({:.1}/s)", totals.accepted, totals.accepted_per_s),
        );
        line(
            "errors / timeouts",
            format!("{} / {}", totals.errors, totals.timeouts),
        );
        line("dropped (in-flight limit)", totals.dropped.to_string());
        line(
            &format!("late (sent > {} ms after time)", self.setup.late_after_ms),
            format!(
                "{}  (send lag p99 {} ms, max {} ms)",
                totals.late, self.send_lag_ms.p99_ms, self.send_lag_ms.max_ms
            ),
        );
        out.push_str(&format!(
            "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "API latency, ms from intended send", "p50", "p90", "p99", "p99.9", "max"
        ));
        let mut percentiles = |label: &str, p: &Percentiles| {
            out.push_str(&format!(
                "  {:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                label, p.p50_ms, p.p90_ms, p.p99_ms, p.p99_9_ms, p.max_ms
            ))
        };
        percentiles("  all requests", &self.latency_ms);
        if let Some(burst) = &self.latency_burst_ms {
            percentiles("  at the base rate", &self.latency_base_ms);
            percentiles("  during the burst", burst);
        }
        if !self.stages.is_empty() {
            out.push_str(&format!(
                "  {:<22} {:>7} {:>7} {:>9} {:>9} {:>9}   (ms from intended send)\n",
                "stage", "orders", "repeats", "p50", "p99", "max"
            ));
            for stage in &self.stages {
                out.push_str(&format!(
                    "    {:<20} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1}\n",
                    stage.stage.name(),
                    stage.orders,
                    stage.repeats,
                    stage.latency_ms.p50_ms,
                    stage.latency_ms.p99_ms,
                    stage.latency_ms.max_ms
                ));
            }
        }
        if !self.backlog.is_empty() {
            out.push_str(&format!(
                "  {:<22} {:>7} {:>7}\n",
                "backlog (messages)", "peak", "last"
            ));
            let show = |value: Option<u64>| value.map_or("?".to_owned(), |v| v.to_string());
            for group in &self.backlog {
                out.push_str(&format!(
                    "    {:<20} {:>7} {:>7}\n",
                    group.group,
                    show(group.peak),
                    show(group.last)
                ));
            }
        }
        if let Some(outage) = &self.logging_outage {
            let show = |value: Option<u64>| value.map_or("no queue".to_owned(), |v| v.to_string());
            out.push_str(&format!(
                "  logging stopped at {:.1} s, ready again at {:.1} s: {} requests scheduled meanwhile, \
                 {:.1} accepted/s, {} failed, p99 {:.1} ms; logging backlog peak {}, last {}\n",
                outage.times.stopped_at_s,
                outage.times.ready_again_at_s,
                outage.offered,
                outage.accepted_per_s,
                outage.failed,
                outage.latency_ms.p99_ms,
                show(outage.logging_backlog_peak),
                show(outage.logging_backlog_last),
            ));
        }
        if let Some(settled) = self.settled {
            out.push_str(&format!(
                "  settled: {settled} of {} accepted orders reached their end state ({:.1} s after the start)\n",
                totals.accepted, self.elapsed_s
            ));
        }
        if self.other_orders > 0 || self.unreadable > 0 {
            out.push_str(&format!(
                "  also seen: {} orders not placed by this run, {} unreadable messages\n",
                self.other_orders, self.unreadable
            ));
        }
        out
    }
}
