//! One fault run on separate processes, start to ledger:
//!
//! 1. a broker node of the run's own ([`BrokerNode`]), and a [`Proxy`] in front of it when
//!    the scenario cuts the network;
//! 2. the five services as processes ([`ProcessStack`]), as many copies as the scenario
//!    wants, the proxied ones dialling the proxy;
//! 3. orders at a steady rate through the order API, in the background;
//! 4. once a third of them are accepted, the scenario's fault ([`Fault`]);
//! 5. every order accepted, the wait for the flow to settle (with a deadline), and for
//!    the poison's dead letters to be counted;
//! 6. the last reconciliation, read beside what the client saw: the [`Ledger`].
//!
//! When a run does not pass, the services' logs are copied next to the temporary
//! directory and the ledger says where.

use std::{
    fmt::Display,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    ledger::{Ledger, Observed},
    node::BrokerNode,
    proxy::Proxy,
    traffic, ChaosRun, CONSUMERS,
};
use crate::{
    reconcile::{self, Settle},
    stack::{ProcessOptions, ProcessStack, StackOptions},
};

/// How long one order is retried (under its key) while the order service is down.
const ORDER_PATIENCE: Duration = Duration::from_secs(120);
/// How long settling may go without progress before the run stops waiting.
const STALL_PATIENCE: Duration = Duration::from_secs(60);
/// How long the poison's dead letters may take to be counted once the flow settled.
const DEAD_LETTER_PATIENCE: Duration = Duration::from_secs(60);

/// What a scenario gets to break, and where it notes what it did.
pub(crate) struct Fault<'a> {
    /// The services.
    pub(crate) stack: &'a mut ProcessStack,
    /// The broker node.
    pub(crate) node: &'a mut BrokerNode,
    /// The proxy between the proxied services and the broker, if the scenario has one.
    pub(crate) proxy: Option<&'a Proxy>,
    /// How many poison messages the scenario mixes in.
    pub(crate) poison: usize,
    /// Poison published so far, and the dead letters it should produce.
    pub(crate) poison_published: u64,
    pub(crate) dead_letters_expected: u64,
    started: Instant,
    timeline: Vec<String>,
}

impl Fault<'_> {
    /// Records one step of the fault with its time since the run's traffic began.
    pub(crate) fn note(&mut self, what: impl Display) {
        let line = format!("+{:>6} ms  {what}", self.started.elapsed().as_millis());
        tracing::info!("{line}");
        self.timeline.push(line);
    }

    /// Publishes `count` poison messages straight to the topics, on the broker itself
    /// (never through the proxy: the poison is not what is being cut).
    pub(crate) async fn publish_poison(&mut self, count: usize) -> anyhow::Result<()> {
        let url = self.node.url();
        let first = self.poison_published as usize;
        let expected = super::poison::publish(&url, first, count).await?;
        self.poison_published += count as u64;
        self.dead_letters_expected += expected;
        self.note(format!(
            "{count} poison messages published ({expected} dead letters expected)"
        ));
        Ok(())
    }
}

/// Runs `run` on its own broker node and the services as processes.
pub(crate) async fn run(run: &ChaosRun) -> anyhow::Result<Ledger> {
    let setup = run.scenario.setup(run.orders);
    let scratch =
        std::env::temp_dir().join(format!("orderflow-chaos-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let outcome = run_in(run, &setup, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

async fn run_in(
    run: &ChaosRun,
    setup: &super::Setup,
    scratch: &std::path::Path,
) -> anyhow::Result<Ledger> {
    let proxied = !setup.proxied.is_empty();
    let booting = Instant::now();
    let (mut node, proxy) = BrokerNode::start(run, scratch, proxied).await?;
    let mut preamble = vec![format!(
        "broker node up in {} ms",
        booting.elapsed().as_millis()
    )];

    let mut process = ProcessOptions::default();
    for consumer in CONSUMERS {
        process
            .replicas
            .insert(consumer.to_owned(), setup.consumer_replicas.max(1));
    }
    if let Some(proxy) = &proxy {
        for service in &setup.proxied {
            process
                .broker_urls
                .insert((*service).to_owned(), node.url_via(proxy.address().port()));
        }
    }
    // The gateway's pacing (50 texts/s by default) would make every run as long as its
    // SMS backlog; a fault run is about what survives, not about peak shaving.
    process
        .env
        .push(("ORDERFLOW_SMS_RATE_PER_S".to_owned(), "5000".to_owned()));
    let mut stack = ProcessStack::start_with(
        &run.binaries,
        StackOptions {
            broker_url: node.url(),
            postgres: run.postgres.clone(),
        },
        process,
    )
    .await
    .context("starting the services")?;
    preamble.push(format!(
        "services up in {} ms",
        booting.elapsed().as_millis()
    ));
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();

    let accepted_so_far = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let traffic = tokio::spawn({
        let client = client.clone();
        let order_url = endpoints.order.clone();
        let (orders, rate) = (run.orders, run.rate_per_s);
        let progress = accepted_so_far.clone();
        async move {
            traffic::place(
                &client,
                &order_url,
                0,
                orders,
                rate,
                ORDER_PATIENCE,
                &progress,
            )
            .await
        }
    });

    // The fault starts once a third of the orders are in: mid-stream, with work queued
    // and in flight, and more arriving while it lasts.
    let third = run.orders / 3;
    orderflow_kit::wait::until(
        "a third of the orders to be accepted",
        Duration::from_secs_f64(run.orders as f64 / run.rate_per_s) + ORDER_PATIENCE,
        Duration::from_millis(20),
        || {
            let accepted = accepted_so_far.load(Ordering::Relaxed);
            async move { (accepted >= third).then_some(()) }
        },
    )
    .await?;
    let mut fault = Fault {
        stack: &mut stack,
        node: &mut node,
        proxy: proxy.as_ref(),
        poison: setup.poison,
        poison_published: 0,
        dead_letters_expected: 0,
        started,
        timeline: preamble,
    };
    fault.note(format!(
        "fault begins ({} orders accepted)",
        accepted_so_far.load(Ordering::Relaxed)
    ));
    let injected = run.scenario.inject(&mut fault).await;
    fault.note(match &injected {
        Ok(()) => "fault ends".to_owned(),
        Err(error) => format!("fault could not be completed: {error:#}"),
    });
    let fault_ended = Instant::now();
    let Fault {
        poison_published,
        dead_letters_expected,
        mut timeline,
        ..
    } = fault;
    if let Err(error) = injected {
        // The run could not do what it set out to: no ledger would mean anything. Say
        // what happened up to here and where the logs are.
        let logs = keep_logs(&stack, &node, run)?;
        traffic.abort();
        return Err(error.context(format!(
            "{} on {} could not inject its fault; timeline:\n  {}\nlogs kept in {logs}",
            run.scenario.name(),
            run.backend.name(),
            timeline.join("\n  ")
        )));
    }

    let sent = traffic.await.context("the traffic task panicked")?;
    timeline.push(format!(
        "+{:>6} ms  traffic done: {} of {} accepted",
        started.elapsed().as_millis(),
        sent.accepted.len(),
        sent.sent
    ));
    for failure in sent.failures.iter().take(3) {
        timeline.push(format!("order not accepted: {failure}"));
    }

    let settle = Settle {
        orders: sent.accepted.len(),
        deadline: run.settle_deadline,
        stalled_after: Some(STALL_PATIENCE),
        progress: false,
    };
    let settled = reconcile::wait_until_settled(&client, &endpoints, &settle).await?;
    let recovered = settled.is_exact() && settled.placed as usize >= sent.accepted.len();
    let time_to_recover_ms = recovered.then(|| fault_ended.elapsed().as_millis() as u64);
    // Dead letters are counted by the consumer that rejects the poison; wait for them
    // (a mismatch after the wait is a finding, not a timeout).
    let _ = orderflow_kit::wait::until(
        "the poison's dead letters to be counted",
        DEAD_LETTER_PATIENCE,
        Duration::from_millis(250),
        || {
            let client = &client;
            let endpoints = &endpoints;
            async move {
                let snapshot = reconcile::fetch(client, endpoints).await.ok()?;
                (reconcile::reconcile(&snapshot).dead_lettered >= dead_letters_expected)
                    .then_some(())
            }
        },
    )
    .await;
    let snapshot = reconcile::fetch(&client, &endpoints).await?;
    let report = reconcile::reconcile(&snapshot);

    let observed = Observed {
        scenario: run.scenario.name().to_owned(),
        backend: run.backend.name().to_owned(),
        faults: timeline,
        sent: sent.sent,
        accepted: sent.accepted,
        poison_published,
        dead_letters_expected,
        time_to_recover_ms,
    };
    let mut ledger = Ledger::new(observed, &report, &snapshot);
    if !ledger.passed {
        ledger.logs = Some(keep_logs(&stack, &node, run)?);
    }
    let stopping = Instant::now();
    stack.stop().await?;
    node.stop().await;
    tracing::info!(
        "stack and broker stopped in {} ms",
        stopping.elapsed().as_millis()
    );
    Ok(ledger)
}

/// Copies the services' (and the broker's) logs somewhere that outlives the run.
fn keep_logs(stack: &ProcessStack, node: &BrokerNode, run: &ChaosRun) -> anyhow::Result<String> {
    let kept = std::env::temp_dir().join(format!(
        "orderflow-chaos-logs-{}-{}-{}",
        run.scenario.name(),
        run.backend.name(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&kept)?;
    for entry in std::fs::read_dir(stack.logs())?.flatten() {
        let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
    }
    if let Some(log) = node.log() {
        let _ = std::fs::copy(&log, kept.join("broker.log"));
    }
    Ok(kept.display().to_string())
}
