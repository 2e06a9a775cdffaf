//! The client side of a fault run: the demo's orders at a steady rate through the order
//! API, kept trying through the fault, and a record of what was sent and what accepted.
//!
//! Unlike `orderflow place`, a fault run does not stop at the first order that fails: the
//! order service may be down for seconds (killed, restarting). Each order keeps its
//! `Idempotency-Key` across every attempt ([`crate::place::place_with_key`]), so an
//! attempt that was stored but never answered is found by the next one, not doubled.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures::StreamExt;

/// How many requests are in flight at once.
const IN_FLIGHT: usize = 32;

/// What the client did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Orders tried.
    pub sent: u64,
    /// Ids of the orders accepted, in generation order.
    pub accepted: Vec<String>,
    /// Why the others were not (the last error of each).
    pub failures: Vec<String>,
}

/// Places orders `first..first + count` through `{order_url}/orders` at `rate_per_s`,
/// each retried under its own key for up to `patience`; `accepted_so_far` counts the
/// acceptances as they come (the fault starts on it).
pub async fn place(
    client: &reqwest::Client,
    order_url: &str,
    first: usize,
    count: usize,
    rate_per_s: f64,
    patience: Duration,
    accepted_so_far: &AtomicUsize,
) -> Sent {
    let url = format!("{}/orders", order_url.trim_end_matches('/'));
    let url = url.as_str();
    let started = tokio::time::Instant::now();
    let outcomes: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
        // Pacing: the n-th order is not sent before start + n / rate.
        .then(|n| async move {
            tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate_per_s))
                .await;
            first + n
        })
        .map(|index| async move {
            let outcome = place_patiently(client, url, index, patience).await;
            if outcome.is_ok() {
                accepted_so_far.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let mut sent = Sent {
        sent: count as u64,
        ..Sent::default()
    };
    for outcome in outcomes {
        match outcome {
            Ok(id) => sent.accepted.push(id),
            Err(error) => sent.failures.push(format!("{error:#}")),
        }
    }
    sent
}

/// One order, its key fixed, tried again until accepted or `patience` has passed.
async fn place_patiently(
    client: &reqwest::Client,
    url: &str,
    index: usize,
    patience: Duration,
) -> anyhow::Result<String> {
    let key = uuid::Uuid::now_v7().to_string();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match crate::place::place_with_key(client, url, index, &key).await {
            Ok(id) => return Ok(id),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(error) => {
                tracing::info!(
                    error = format!("{error:#}"),
                    index,
                    "order not accepted yet"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
