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

#[cfg(test)]
mod tests {
    use orderflow_broker::{memory::MemoryBroker, Envelope};
    use sqlx::migrate::Migrator;

    use super::*;
    use crate::{
        db::{Db, Migrations},
        metrics::{install, scraped},
        outbox::{enqueue, RelaySettings},
    };

    #[tokio::test]
    async fn a_scrape_reads_the_backlog_and_the_outbox_and_a_failed_read_is_counted() {
        let handle = install();
        let run = uuid::Uuid::now_v7().simple().to_string();
        let scratch = std::env::temp_dir().join(format!("orderflow-sampled-{run}"));
        let empty = scratch.join("no-migrations");
        std::fs::create_dir_all(&empty).unwrap();
        let db = Db::connect(&format!("sqlite://{}/s.db", scratch.display()))
            .await
            .unwrap();
        // The kit's own tables (the outbox) only.
        db.migrate(&Migrations {
            postgres: Migrator::new(empty.as_path()).await.unwrap(),
            sqlite: Migrator::new(empty.as_path()).await.unwrap(),
        })
        .await
        .unwrap();
        let broker: Arc<dyn Broker> =
            Arc::new(MemoryBroker::from_url(&format!("memory://sampled-{run}")).unwrap());
        // Names of the test's own: the registry is the whole test binary's.
        let (group, service, topic) = (format!("g-{run}"), format!("s-{run}"), format!("t.{run}"));
        let subscription = Subscription::new(group.clone(), [topic.clone()]);
        broker.declare(&subscription).await.unwrap();
        for key in ["a", "b", "c"] {
            broker
                .publish(Envelope::new(topic.clone(), key, b"{}".to_vec()))
                .await
                .unwrap();
        }
        for key in ["d", "e"] {
            let mut transaction = db.pool().begin().await.unwrap();
            enqueue(
                &db,
                &mut transaction,
                &Envelope::new(topic.clone(), key, b"{}".to_vec()),
            )
            .await
            .unwrap();
            transaction.commit().await.unwrap();
        }
        // Never run: its two rows stay pending.
        let relay = Relay::new(
            db.clone(),
            broker.clone(),
            RelaySettings {
                publish_timeout: Duration::from_secs(5),
                retention: Duration::from_secs(3600),
            },
        );
        // Twice the same group: one backlog series.
        let sampled = Sampled::new(
            &service,
            broker.clone(),
            [subscription.clone(), subscription],
            relay,
        );

        sampled.sample().await;
        let samples = scraped::parse(&handle.render()).unwrap();
        assert_eq!(
            scraped::sum(&samples, names::BACKLOG, &[("group", &group)]),
            Some(3.0)
        );
        assert_eq!(
            scraped::sum(&samples, names::OUTBOX_PENDING, &[("service", &service)]),
            Some(2.0)
        );

        // The database goes away: the outbox read fails, is counted, and the gauge keeps
        // its last value rather than dropping to 0 (which would read as "all published").
        let failures_before = scraped::sum(
            &samples,
            names::SAMPLE_FAILURES,
            &[("sample", "outbox_pending")],
        )
        .unwrap_or(0.0);
        db.pool().close().await;
        sampled.sample().await;
        let samples = scraped::parse(&handle.render()).unwrap();
        assert_eq!(
            scraped::sum(&samples, names::OUTBOX_PENDING, &[("service", &service)]),
            Some(2.0)
        );
        let failures = scraped::sum(
            &samples,
            names::SAMPLE_FAILURES,
            &[("sample", "outbox_pending")],
        );
        assert!(failures >= Some(failures_before + 1.0), "{failures:?}");
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
