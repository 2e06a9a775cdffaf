//! The in-process equivalents (`--broker memory`): the five services as tasks of this
//! process on the embedded broker, each scenario's fault staged by the broker's own fault
//! injection for the whole run instead of by killing processes:
//!
//! | scenario | memory faults | why that is its equivalent |
//! | --- | --- | --- |
//! | `kill-consumers` | `duplicate=0.2` | a crash hands what was in flight to the group again |
//! | `kill-order-relay` | `duplicate=0.1&drop=0.05` | the relay republishes a confirmed batch; unconfirmed ones are retried |
//! | `broker-restart` | `drop=0.05&delay=0.1` | publishes get no confirm, deliveries come late |
//! | `network-cut` | `drop=0.1&delay=0.2` | the same, harder |
//! | `rolling-restart` | `duplicate=0.1&reorder=0.1` | a handover between consumers duplicates and reorders |
//! | `poison` | none, poison published | poison is not a broker fault |
//! | `all-at-once` | all four faults, poison published | |
//!
//! The faults are seeded, so a run can be repeated; the ledger's timeline lists what the
//! broker injected.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use super::{
    ledger::{Ledger, Observed},
    traffic, ChaosRun,
};
use crate::{
    reconcile::{self, Settle},
    stack::{InProcessStack, StackOptions},
};

/// The seed of the injected faults.
const SEED: u64 = 9;

/// The memory URL a scenario runs on: a broker of the run's own, its faults, the seed.
pub fn broker_url(name: &str, faults: &str) -> String {
    if faults.is_empty() {
        format!("memory://{name}")
    } else {
        format!("memory://{name}?{faults}&seed={SEED}")
    }
}

/// Runs `run` in process.
pub(crate) async fn run(run: &ChaosRun) -> anyhow::Result<Ledger> {
    let setup = run.scenario.setup(run.orders);
    let name = format!("chaos-{}", uuid::Uuid::now_v7().simple());
    let faults = run.scenario.memory_faults();
    let url = broker_url(&name, faults);
    let stack = InProcessStack::start_with_sms_rate(
        StackOptions {
            broker_url: url.clone(),
            postgres: run.postgres.clone(),
        },
        Some(5000.0),
    )
    .await?;
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut timeline = vec![format!(
        "+     0 ms  memory broker faults: {}",
        if faults.is_empty() { "none" } else { faults }
    )];

    let accepted_so_far = AtomicUsize::new(0);
    let place = traffic::place(
        &client,
        &endpoints.order,
        0,
        run.orders,
        run.rate_per_s,
        Duration::from_secs(60),
        &accepted_so_far,
    );
    // The poison goes in on a handle without faults once a third of the orders are in.
    let poison_url = broker_url(&name, "");
    let poison = async {
        if setup.poison == 0 {
            return Ok((0, None));
        }
        let third = run.orders / 3;
        orderflow_kit::wait::until(
            "a third of the orders to be accepted",
            Duration::from_secs(600),
            Duration::from_millis(20),
            || {
                let accepted = accepted_so_far.load(Ordering::Relaxed);
                async move { (accepted >= third).then_some(()) }
            },
        )
        .await?;
        let expected = super::poison::publish(&poison_url, 0, setup.poison).await?;
        Ok::<_, anyhow::Error>((expected, Some(started.elapsed())))
    };
    let (sent, poisoned) = tokio::join!(place, poison);
    let (dead_letters_expected, poisoned_at) = poisoned?;
    if let Some(at) = poisoned_at {
        timeline.push(format!(
            "+{:>6} ms  {} poison messages published ({dead_letters_expected} dead letters expected)",
            at.as_millis(),
            setup.poison
        ));
    }
    // The faults last as long as the traffic: the run recovers from its end.
    let fault_ended = Instant::now();
    timeline.push(format!(
        "+{:>6} ms  traffic done: {} of {} accepted",
        started.elapsed().as_millis(),
        sent.accepted.len(),
        sent.sent
    ));

    let settle = Settle {
        orders: sent.accepted.len(),
        deadline: run.settle_deadline,
        stalled_after: Some(Duration::from_secs(30)),
        progress: false,
    };
    let settled = reconcile::wait_until_settled(&client, &endpoints, &settle).await?;
    let recovered = settled.is_exact() && settled.placed as usize >= sent.accepted.len();
    let time_to_recover_ms = recovered.then(|| fault_ended.elapsed().as_millis() as u64);
    let _ = orderflow_kit::wait::until(
        "the poison's dead letters to be counted",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let (client, endpoints) = (&client, &endpoints);
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
    if let Some(stats) = orderflow_broker::memory::fault_stats(&url) {
        timeline.push(format!(
            "injected by the broker: {} publishes without a confirm, {} deliveries duplicated, \
             {} reordered, {} delayed",
            stats.dropped, stats.duplicated, stats.reordered, stats.delayed
        ));
    }
    stack.stop().await?;

    let observed = Observed {
        scenario: run.scenario.name().to_owned(),
        backend: run.backend.name().to_owned(),
        faults: timeline,
        sent: sent.sent,
        accepted: sent.accepted,
        poison_published: setup.poison as u64,
        dead_letters_expected,
        time_to_recover_ms,
    };
    Ok(Ledger::new(observed, &report, &snapshot))
}
