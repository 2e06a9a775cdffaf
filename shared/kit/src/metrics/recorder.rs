//! The process's one Prometheus recorder, installed once.
//!
//! The `metrics` macros (`counter!`, `histogram!`, …) write to a process-global recorder,
//! and a process can set that only once. [`install`] does it on first use and hands every
//! later caller the same [`PrometheusHandle`], so the first service to start installs it
//! and the others share it.
//!
//! **In one process, one registry.** The in-process stack (`orderflow demo`, the
//! end-to-end tests) runs all five services in one process, so they share this registry:
//! each one's `/metrics` shows the series of all five. The `service` and `group` labels
//! tell them apart; in the deployed stack (one service per process) each registry holds
//! one service's series only.
//!
//! Only the recorder of `metrics-exporter-prometheus` is used, without its HTTP listener or
//! push gateway: the services render the handle in their own axum route (`endpoint.rs`).

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names;

/// How often raw histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder handle, installing the recorder first if nobody has yet.
/// Call before anything is recorded: what the macros record before a recorder is
/// installed goes nowhere.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for histogram in names::HISTOGRAMS {
            // Explicit buckets make these Prometheus histograms (`_bucket{le=…}`); without
            // them the exporter would render summaries, which cannot be aggregated
            // across replicas.
            builder = builder
                .set_buckets_for_metric(
                    Matcher::Full(histogram.to_owned()),
                    &names::DURATION_BUCKETS,
                )
                .expect("the bucket list is not empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            // Someone else's recorder got there first (an embedding program's): ours then
            // records nothing, and /metrics answers with what little it has.
            tracing::warn!(%error, "another metrics recorder is installed; /metrics will be empty");
        }
        names::describe();
        spawn_upkeep(handle.clone());
        handle
    })
}

/// Every histogram sample is kept raw until it is folded into its buckets, which a
/// render does — but a process nobody scrapes (the demo) would keep them all. A plain
/// thread rather than a task: the recorder outlives any one tokio runtime (each test has
/// its own), and the thread costs nothing while it sleeps.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no metrics upkeep thread: histogram samples wait for the next scrape");
    }
}
