//! Gauges read at scrape time: the broker backlog of each of the service's consumer groups
//! ([`names::BACKLOG`], through the broker abstraction's `backlog`, so it is RabbitMQ's
//! queue depth, Kafka's consumer lag or the memory queue's length alike) and its outbox's
//! unsent rows ([`names::OUTBOX_PENDING`]).
//!
//! Why at scrape time rather than on a timer: the value is as fresh as the scrape that
//! reads it, and a service nobody scrapes asks its broker and database nothing. Each read
//! has a short deadline ([`SAMPLE_TIMEOUT`]) so that a broker that stopped answering
//! cannot hold up the scrape (Prometheus gives up on a whole scrape after its timeout,
//! and would then lose every other series too). A read that fails or times out leaves
//! the gauge at its last value and counts a [`names::SAMPLE_FAILURES`] — `metrics` has no
//! way to withdraw one series, and the failure counter is what an alert can watch.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use orderflow_broker::{Broker, Subscription};

use super::names::{self, label};
use crate::outbox::Relay;

/// How long one scrape-time read may take.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one service's `/metrics` reads before it renders.
#[derive(Clone)]
pub struct Sampled {
    service: Arc<str>,
    broker: Arc<dyn Broker>,
    /// One subscription per consumer group: the backlog is the group's, however many
    /// subscriptions the service has in it.
    groups: Arc<[Subscription]>,
    relay: Relay,
}

impl Sampled {
    /// The gauges of `service`: the backlog of each group among `subscriptions`, and
    /// `relay`'s pending rows.
    pub fn new(
        service: &str,
        broker: Arc<dyn Broker>,
        subscriptions: impl IntoIterator<Item = Subscription>,
        relay: Relay,
    ) -> Self {
        let groups: BTreeMap<String, Subscription> = subscriptions
            .into_iter()
            .map(|subscription| (subscription.group.clone(), subscription))
            .collect();
        Sampled {
            service: service.into(),
            broker,
            groups: groups.into_values().collect(),
            relay,
        }
    }

    /// Reads every gauge, all at once, each within [`SAMPLE_TIMEOUT`].
    pub async fn sample(&self) {
        let backlogs = self.groups.iter().map(|subscription| async move {
            let read = within(self.broker.backlog(subscription)).await;
            match read {
                Ok(Ok(backlog)) => {
                    metrics::gauge!(names::BACKLOG, label::GROUP => subscription.group.clone())
                        .set(backlog as f64);
                }
                Ok(Err(error)) => failed("backlog", &subscription.group, &error),
                Err(timeout) => failed("backlog", &subscription.group, &timeout),
            }
        });
        let outbox = async {
            match within(self.relay.pending()).await {
                Ok(Ok(pending)) => {
                    metrics::gauge!(names::OUTBOX_PENDING, label::SERVICE => self.service.to_string())
                        .set(pending as f64);
                }
                Ok(Err(error)) => failed("outbox_pending", &self.service, &format!("{error:#}")),
                Err(timeout) => failed("outbox_pending", &self.service, &timeout),
            }
        };
        futures::future::join(futures::future::join_all(backlogs), outbox).await;
    }
}

async fn within<F: Future>(read: F) -> Result<F::Output, String> {
    tokio::time::timeout(SAMPLE_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {SAMPLE_TIMEOUT:?}"))
}

fn failed(sample: &'static str, of: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(sample, of, %error, "a metrics sample failed; the gauge keeps its last value");
    metrics::counter!(names::SAMPLE_FAILURES, label::SAMPLE => sample).increment(1);
}
