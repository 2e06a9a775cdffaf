//! The backlog of every consumer group, sampled through the broker abstraction
//! ([`Subscriber::backlog`](orderflow_broker::Subscriber::backlog): queue length on the
//! embedded broker, ready messages on RabbitMQ, consumer lag on Kafka) — the number that
//! makes peak shaving visible: it rises while a burst outruns a slow consumer and drains
//! after.
//!
//! One sample per group per interval, on the run's clock (sample *k* is taken at
//! `start + k × interval`; a sample that could not be taken in time is skipped, not
//! bunched up with the next).

use std::{sync::Arc, time::Duration};

use orderflow_broker::{Broker, Subscription};
use orderflow_events::topology::GROUPS;
use orderflow_kit::shutdown::CancellationToken;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

/// One round of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacklogSample {
    /// When, in seconds from the start of the run.
    pub at_s: f64,
    /// One value per group, in the order of [`BacklogSeries::groups`]; `None` when the
    /// broker could not say.
    pub backlog: Vec<Option<u64>>,
}

/// Every sample of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BacklogSeries {
    /// The groups sampled: the order flow's, then the observer's own.
    pub groups: Vec<String>,
    /// The samples, in time order.
    pub samples: Vec<BacklogSample>,
}

impl BacklogSeries {
    /// The group's largest sampled backlog.
    pub fn peak(&self, group: &str) -> Option<u64> {
        let index = self.groups.iter().position(|name| name == group)?;
        self.samples
            .iter()
            .filter_map(|sample| sample.backlog[index])
            .max()
    }

    /// The group's last sampled backlog.
    pub fn last(&self, group: &str) -> Option<u64> {
        let index = self.groups.iter().position(|name| name == group)?;
        self.samples
            .iter()
            .rev()
            .find_map(|sample| sample.backlog[index])
    }

    /// The group's backlog in the sample taken at or just before `at_s`.
    pub fn at(&self, group: &str, at_s: f64) -> Option<u64> {
        let index = self.groups.iter().position(|name| name == group)?;
        self.samples
            .iter()
            .take_while(|sample| sample.at_s <= at_s + 1e-9)
            .last()
            .and_then(|sample| sample.backlog[index])
    }
}

/// The name the observer's group is shown under.
pub const OBSERVER: &str = "load-observer";

/// Samples every group of the order flow and `observer` every `interval` until `stop`, and
/// once more then.
pub async fn run(
    broker: Arc<dyn Broker>,
    observer: Subscription,
    start: Instant,
    interval: Duration,
    stop: CancellationToken,
) -> BacklogSeries {
    let mut subscriptions: Vec<(String, Subscription)> = GROUPS
        .iter()
        .map(|group| {
            (
                group.group.to_owned(),
                Subscription::new(group.group, group.topics.iter().copied()),
            )
        })
        .collect();
    subscriptions.push((OBSERVER.to_owned(), observer));
    let mut series = BacklogSeries {
        groups: subscriptions.iter().map(|(name, _)| name.clone()).collect(),
        samples: Vec::new(),
    };
    let sample = |at: Instant| {
        let (broker, subscriptions) = (&broker, &subscriptions);
        async move {
            let at_s = at.saturating_duration_since(start).as_secs_f64();
            let mut backlog = Vec::with_capacity(subscriptions.len());
            for (_, subscription) in subscriptions {
                backlog.push(broker.backlog(subscription).await.ok());
            }
            BacklogSample { at_s, backlog }
        }
    };
    let mut ticks = tokio::time::interval_at(start, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            tick = ticks.tick() => series.samples.push(sample(tick).await),
            () = stop.cancelled() => break,
        }
    }
    // One more round when stopped (after the drain): the last value is then what was left
    // at the end, not what was there up to an interval earlier.
    series.samples.push(sample(Instant::now()).await);
    series
}
