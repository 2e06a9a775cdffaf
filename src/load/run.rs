//! One load run, start to finish: the target up (or found), the observer declared before
//! the first order, the load sent on schedule, the flow drained, the report built.

use std::{collections::HashSet, io::IsTerminal, sync::Arc, time::Duration};

use anyhow::Context;
use orderflow_broker::Broker;
use orderflow_kit::shutdown::CancellationToken;
use tokio::{sync::mpsc, time::Instant};

use super::{
    args::Args,
    backlog::{self, BacklogSeries},
    charts, cleanup, generator,
    load_average::LoadAverage,
    logged, observer,
    order_api::OrderApi,
    outage::{self, OutageReport},
    recorder::Recorder,
    report::{GroupBacklog, LoadReport, Setup, StageSummary, Totals},
    schedule::Profile,
    series,
    stages::{Journeys, Stage},
    wiring::Wiring,
};
use crate::stack::{InProcessStack, StackOptions};

/// How often every group's backlog is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Time between setting up and the first intended send, so the first requests are not
/// late because the dispatcher was still starting.
const LEAD: Duration = Duration::from_millis(200);

/// Runs `orderflow load`: measures, prints the table or the JSON, writes `--out`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.compare {
        return super::compare::run(args).await;
    }
    let report = measure(&args).await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        series::write(dir, &report.series)?;
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        charts::write(dir, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("\nload test: {}", report.setup.caption());
        print!("{}", report.render());
        if let Some(dir) = &args.out {
            println!(
                "  written to {}: series.csv, series.json, report.json, peak-shaving.svg, latency.svg",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Where the orders go and what can be watched.
struct Target {
    stack: Option<InProcessStack>,
    order_url: String,
    logging_url: Option<String>,
    broker_url: Option<String>,
}

async fn target(args: &Args) -> anyhow::Result<Target> {
    if let Some(url) = &args.target {
        // `--get` measures the generator against a trivial endpoint: no orders, nothing
        // to watch.
        let watch = args.get.is_none();
        return Ok(Target {
            stack: None,
            order_url: url.clone(),
            logging_url: args.logging_url.clone().filter(|_| watch),
            broker_url: args.broker.clone().filter(|_| watch),
        });
    }
    let broker_url = match args.broker.as_deref() {
        // A broker of this run's own: nothing else in the process shares it.
        None | Some("memory://") => format!("memory://load-{}", uuid::Uuid::now_v7().simple()),
        Some(url) => url.to_owned(),
    };
    let options = StackOptions {
        broker_url: broker_url.clone(),
        postgres: args.postgres.clone(),
    };
    if args.wiring == Wiring::Sync {
        // Nothing is published in the synchronous wiring: no broker to watch, and an
        // order is finished when its request is answered.
        let stack = InProcessStack::start_sync_with_sms_rate(options, args.sms_rate).await?;
        return Ok(Target {
            order_url: stack.endpoints().order,
            stack: Some(stack),
            logging_url: None,
            broker_url: None,
        });
    }
    let stack = InProcessStack::start_with_sms_rate(options, args.sms_rate).await?;
    let endpoints = stack.endpoints();
    Ok(Target {
        stack: Some(stack),
        order_url: endpoints.order,
        logging_url: Some(endpoints.logging),
        broker_url: Some(broker_url),
    })
}

fn check(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of orders per second"
    );
    anyhow::ensure!(
        !args.duration.is_zero(),
        "--duration must be longer than 0 s"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.max_in_flight),
        "--max-in-flight must be between 1 and 1000000"
    );
    anyhow::ensure!(!args.timeout.is_zero(), "--timeout must be longer than 0 s");
    if let Some(rate) = args.sms_rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--sms-rate must be a positive number of texts per second"
        );
    }
    Ok(())
}

/// The machine, for captions: cores and CPU model.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    format!("{cores} cores, {model}")
}

/// The tasks that watch the broker during a run.
struct Watchers {
    broker: Arc<dyn Broker>,
    /// The observer's group, removed after the run.
    group: String,
    stop: CancellationToken,
    observer: tokio::task::JoinHandle<u64>,
    checker: Option<tokio::task::JoinHandle<()>>,
    sampler: tokio::task::JoinHandle<BacklogSeries>,
}

async fn watch(
    broker_url: &str,
    logging_url: Option<&str>,
    start: Instant,
    journeys: &Arc<Journeys>,
) -> anyhow::Result<Watchers> {
    let broker = orderflow_broker::connect(broker_url)
        .await
        .with_context(|| format!("connecting to {}", orderflow_kit::db::redact(broker_url)))?;
    let (subscription, deliveries) = observer::start(&broker).await?;
    let group = subscription.group.clone();
    let stop = CancellationToken::new();
    let (complete_tx, complete_rx) = mpsc::unbounded_channel();
    let checker = logging_url.map(|url| {
        tokio::spawn(logged::run(
            url.to_owned(),
            complete_rx,
            complete_tx.clone(),
            start,
            journeys.clone(),
            stop.clone(),
        ))
    });
    let observer = tokio::spawn(observer::run(
        deliveries,
        start,
        journeys.clone(),
        checker.is_some().then_some(complete_tx),
        stop.clone(),
    ));
    let sampler = tokio::spawn(backlog::run(
        broker.clone(),
        subscription,
        start,
        SAMPLE_EVERY,
        stop.clone(),
    ));
    Ok(Watchers {
        broker,
        group,
        stop,
        observer,
        checker,
        sampler,
    })
}

/// Runs the load and returns what it measured.
pub async fn measure(args: &Args) -> anyhow::Result<LoadReport> {
    check(args)?;
    // Read before this run's own stack starts, which would add to it.
    let load_average = LoadAverage::now();
    let profile = Profile {
        rate_per_s: args.rate,
        duration: args.duration,
        burst: args.burst,
    };
    let intended = profile.intended_times(args.arrivals, args.seed);
    let mut target = target(args).await?;
    let api = Arc::new(match &args.get {
        Some(path) => OrderApi::getting(&target.order_url, path, args.timeout)?,
        None => OrderApi::new(&target.order_url, args.timeout)?,
    });
    let journeys = Arc::new(Journeys::default());
    let recorder = Arc::new(Recorder::new(profile, args.late_after));
    // The run's clock starts a little ahead, so the watchers exist before it does.
    let start = Instant::now() + LEAD;
    let watchers = match &target.broker_url {
        Some(url) => Some(watch(url, target.logging_url.as_deref(), start, &journeys).await?),
        None => None,
    };
    // The outage runs beside the load, holding the stack until logging is back.
    let outage = match (args.logging_down, target.stack.take()) {
        (Some(planned), Some(stack)) => {
            Some((planned, tokio::spawn(outage::stage(stack, start, planned))))
        }
        (_, stack) => {
            target.stack = stack;
            None
        }
    };
    tokio::time::sleep_until(start).await;

    generator::run(
        api,
        &intended,
        start,
        generator::Limits {
            max_in_flight: args.max_in_flight,
        },
        recorder.clone(),
    )
    .await;
    let outage = match outage {
        Some((planned, task)) => {
            let (stack, times) = task.await.context("the logging outage task")?;
            target.stack = Some(stack);
            Some((planned, times.context("stopping or restarting logging")?))
        }
        None => None,
    };

    let with_logging = watchers.as_ref().is_some_and(|w| w.checker.is_some());
    if watchers.is_some() {
        // The progress line rewrites itself: only worth printing to a terminal.
        let progress = !args.json && std::io::stderr().is_terminal();
        drain(&recorder, &journeys, with_logging, args.drain, progress).await;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let observer_group = watchers.as_ref().map(|watchers| watchers.group.clone());
    let (backlog, unreadable) = match watchers {
        Some(watchers) => {
            watchers.stop.cancel();
            let unreadable = watchers.observer.await.unwrap_or(0);
            if let Some(checker) = watchers.checker {
                let _ = checker.await;
            }
            let backlog = watchers.sampler.await.unwrap_or_default();
            let _ = watchers.broker.close().await;
            if let Some(url) = &target.broker_url {
                if let Err(error) = cleanup::remove_group(url, &watchers.group).await {
                    tracing::warn!(
                        "could not remove the observer's group {}: {error:#}",
                        watchers.group
                    );
                }
            }
            (backlog, unreadable)
        }
        None => (BacklogSeries::default(), 0),
    };
    let in_process = target.stack.is_some();
    if let Some(stack) = target.stack {
        stack.stop().await?;
    }

    let watched = target.broker_url.is_some();
    let setup = Setup {
        target: match (&args.target, args.wiring) {
            (Some(url), _) => url.clone(),
            (None, Wiring::Async) => "in-process stack".to_owned(),
            (None, Wiring::Sync) => "in-process stack, synchronous wiring".to_owned(),
        },
        backend: match &target.broker_url {
            None if in_process => "no queue (HTTP calls)".to_owned(),
            Some(url) => url
                .split("://")
                .next()
                .unwrap_or("?")
                .replace("amqp", "rabbitmq"),
            None => "an unwatched broker".to_owned(),
        },
        broker: target.broker_url.as_deref().map(orderflow_kit::db::redact),
        profile,
        arrivals: args.arrivals,
        seed: args.seed,
        max_in_flight: args.max_in_flight,
        timeout_ms: args.timeout.as_millis() as u64,
        late_after_ms: args.late_after.as_millis() as u64,
        machine: machine(),
        load_average,
        sms_limit_per_s: in_process.then(|| {
            args.sms_rate
                .unwrap_or(orderflow_sms::gateway::SmsGatewaySettings::default().rate_per_s)
        }),
        logging_down: outage.map(|(planned, _)| planned),
    };
    let mut report = build_report(
        setup,
        &recorder,
        &journeys,
        watched,
        with_logging,
        backlog,
        unreadable,
        elapsed_s,
        outage,
    );
    report.observer_group = observer_group;
    Ok(report)
}

/// Waits until every accepted order has settled, or `patience` has passed.
async fn drain(
    recorder: &Recorder,
    journeys: &Journeys,
    with_logging: bool,
    patience: Duration,
    progress: bool,
) {
    let deadline = Instant::now() + patience;
    let mut last_shown = Instant::now();
    loop {
        let accepted = recorder.accepted();
        let settled = journeys.settled_among(&accepted, with_logging);
        if progress && last_shown.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\r  draining: {settled} of {} accepted orders settled ",
                accepted.len()
            );
            last_shown = Instant::now();
        }
        if settled == accepted.len() || Instant::now() >= deadline {
            if progress {
                eprintln!();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    setup: Setup,
    recorder: &Recorder,
    journeys: &Journeys,
    watched: bool,
    with_logging: bool,
    backlog: BacklogSeries,
    unreadable: u64,
    elapsed_s: f64,
    outage: Option<(outage::Outage, outage::OutageTimes)>,
) -> LoadReport {
    let recorded = recorder.take();
    let logging_outage =
        outage.map(|(planned, times)| OutageReport::of(planned, times, &recorded, &backlog));
    let (all_journeys, repeats) = journeys.snapshot();
    let ours: Vec<_> = recorded
        .accepted
        .iter()
        .map(|(order_id, intended)| {
            (
                all_journeys.get(order_id).copied().unwrap_or_default(),
                *intended,
            )
        })
        .collect();
    let accepted_ids: HashSet<_> = recorded.accepted.iter().map(|(id, _)| *id).collect();
    let stages: Vec<Stage> = if !watched {
        Vec::new()
    } else if with_logging {
        Stage::ALL.to_vec()
    } else {
        Stage::ALL
            .into_iter()
            .filter(|stage| *stage != Stage::Logged)
            .collect()
    };
    let stage_summaries = stages
        .iter()
        .map(|&stage| {
            let mut latency = super::latency::LatencyHistogram::default();
            for (journey, intended) in &ours {
                if let Some(at) = journey.at(stage) {
                    latency.record(at.saturating_sub(*intended));
                }
            }
            StageSummary {
                stage,
                orders: latency.len(),
                repeats: repeats[stage as usize],
                latency_ms: latency.percentiles(),
            }
        })
        .collect();
    let journeys_only: Vec<_> = ours.iter().map(|(journey, _)| *journey).collect();
    let rows = series::build(&recorded, &journeys_only, &stages, &backlog);
    let duration_s = setup.profile.duration.as_secs_f64();
    let offered = recorded.total(|second| second.offered);
    let accepted = recorded.total(|second| second.accepted);
    let totals = Totals {
        offered,
        sent: recorded.total(|second| second.sent),
        dropped: recorded.total(|second| second.dropped),
        late: recorded.total(|second| second.late),
        accepted,
        errors: recorded.total(|second| second.errors),
        timeouts: recorded.total(|second| second.timeouts),
        offered_per_s: round1(offered as f64 / duration_s),
        accepted_per_s: round1(accepted as f64 / duration_s),
    };
    let settled = watched.then(|| {
        journeys_only
            .iter()
            .filter(|journey| journey.settled(with_logging))
            .count() as u64
    });
    LoadReport {
        totals,
        latency_ms: recorded.latency.percentiles(),
        latency_base_ms: recorded.latency_base.percentiles(),
        latency_burst_ms: setup
            .profile
            .burst
            .map(|_| recorded.latency_burst.percentiles()),
        send_lag_ms: recorded.send_lag.percentiles(),
        stages: stage_summaries,
        settled,
        other_orders: all_journeys
            .keys()
            .filter(|order_id| !accepted_ids.contains(order_id))
            .count() as u64,
        unreadable,
        observer_group: None,
        backlog: backlog
            .groups
            .iter()
            .map(|group| GroupBacklog {
                group: group.clone(),
                peak: backlog.peak(group),
                last: backlog.last(group),
            })
            .collect(),
        elapsed_s: round1(elapsed_s),
        logging_outage,
        series: rows,
        setup,
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
