//! The life of a service, written once: connect, migrate, subscribe, serve, stop.
//!
//! ```text
//! Service::start(config, migrations)      database connected and migrated, broker connected
//!   .consume(topics, handler, options)    consumer loop per subscription (declared now)
//!   .with_routes(router)                  an Application: built, not yet running
//!   .run_until_stopped(shutdown)          HTTP + /healthz + /readyz + /metrics + outbox relay + consumers
//! ```
//!
//! Each service's `startup::build` is the part that is its own — which topics it consumes,
//! at what rate, with which handler, and its routes — and returns an [`Application`].
//!
//! On shutdown: HTTP stops accepting, consumer loops stop taking deliveries and finish and
//! ack what they were handed, the relay publishes what is committed, the broker
//! connection closes — all of it within `ORDERFLOW_SHUTDOWN_TIMEOUT` (default 10 s). Past
//! that, what is unfinished is left to the brokers' redelivery and the outbox, and
//! `run_until_stopped` returns anyway, so that a hung handler or a vanished broker cannot
//! keep the process from exiting.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use orderflow_broker::{Broker, Subscription};
use orderflow_events::topology;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use tokio::time::Instant;

use crate::{
    config::ServiceConfig,
    consumer::{self, ConsumerOptions, ConsumerStats, CrashPolicy, Handler},
    db::{Db, Migrations},
    http::{self, Readiness},
    metrics,
    outbox::{Relay, RelaySettings},
    retry::{retry_start_up_step, RetryPolicy},
};

/// A started service: its database, broker, outbox relay and consumers.
pub struct Service {
    /// Its settings.
    pub config: ServiceConfig,
    /// Its own database.
    pub db: Db,
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// Publishes its outbox.
    pub relay: Relay,
    /// Counters of its consumer loops.
    pub stats: Arc<ConsumerStats>,
    readiness: Readiness,
    listener: tokio::net::TcpListener,
    consumers: Vec<(Subscription, Arc<dyn Handler>, ConsumerOptions)>,
}

/// What the HTTP handlers of a service share, the part every service has: its database,
/// and its outbox relay — woken after a commit so the event goes out now rather than at the
/// next poll, and counted for `/internal/reconcile`. A service that needs more (the payment
/// service's gateway) wraps it in a state of its own.
#[derive(Clone)]
pub struct ApiState {
    /// The service's database.
    pub db: Db,
    /// Its outbox relay.
    pub relay: Relay,
}

/// A built service with its routes, not yet running (zero2prod's `Application`).
///
/// Building does everything that can fail at start-up — database connected and migrated,
/// broker connected, port bound — so a caller (the binary, `orderflow demo`, a test) learns
/// of a bad setting before anything runs; [`Application::run_until_stopped`] then serves
/// and consumes until the token is cancelled.
pub struct Application {
    service: Service,
    router: Router,
}

impl Application {
    /// Where the HTTP API listens (the real port when port 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.service.address()
    }

    /// Serves and consumes until `shutdown` is cancelled, then stops gracefully (see
    /// [`Service::run`] for the order things stop in).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(self.router, shutdown).await
    }
}

/// Counters every service reports to `orderflow reconcile`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default, PartialEq, Eq)]
pub struct CommonReport {
    /// Redeliveries recognised and acked without a second effect (persisted).
    pub duplicates_ignored: i64,
    /// Messages this service dead-lettered (persisted).
    pub dead_lettered: i64,
    /// Deliveries that may have been handed out before (persisted; see
    /// [`consumer::counters::REDELIVERIES`]). Absent in an older service's answer.
    #[serde(default)]
    pub redeliveries: i64,
    /// Outbox rows committed but not yet published.
    pub outbox_pending: i64,
}

impl Service {
    /// Connects the database (migrating it) and the broker, and binds the HTTP port.
    /// The broker is retried for up to 60 s: in a compose stack it may start later.
    pub async fn start(config: ServiceConfig, migrations: &Migrations) -> anyhow::Result<Service> {
        crate::failpoints::configure_from_env()?;
        // Before anything is counted: what is recorded before a recorder exists is lost.
        metrics::install();
        let listener = http::bind(config.http_addr).await?;
        let db = Db::connect(&config.database_url).await?;
        db.migrate(migrations).await?;
        let broker =
            retry_start_up_step("connecting to the broker", Duration::from_secs(60), || {
                orderflow_broker::connect(&config.broker_url)
            })
            .await?;
        declare_topology(&config.name, broker.as_ref()).await?;
        let relay = Relay::new(
            db.clone(),
            broker.clone(),
            RelaySettings {
                publish_timeout: config.publish_timeout,
                retention: config.retention,
            },
        );
        Ok(Service {
            config,
            db,
            broker,
            relay,
            stats: Arc::new(ConsumerStats::default()),
            readiness: Readiness::default(),
            listener,
            consumers: Vec::new(),
        })
    }

    /// The address the HTTP API listens on (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Consumer options from the configuration, with persisted counters.
    pub fn consumer_options(&self) -> ConsumerOptions {
        ConsumerOptions {
            concurrency: self.config.concurrency,
            rate_per_s: None,
            retry: RetryPolicy {
                max_attempts: self.config.max_attempts,
                ..RetryPolicy::default()
            },
            counters: Some(self.db.clone()),
            handler_timeout: self.config.handler_timeout,
            crashes: CrashPolicy {
                max_crashes: self.config.max_crashes,
            },
            // Three quarters of the stop's bound: the rest is for the relay to publish what
            // the last handlers committed and for closing the broker.
            stop_timeout: self.config.shutdown_timeout.mul_f64(0.75),
        }
    }

    /// Adds a consumer loop for `topics`, in the consumer group named after the service.
    pub fn consume(
        &mut self,
        topics: &[&str],
        handler: Arc<dyn Handler>,
        options: ConsumerOptions,
    ) {
        let subscription = Subscription::new(self.config.name.clone(), topics.iter().copied())
            .with_prefetch(
                u16::try_from(options.concurrency.saturating_mul(4)).unwrap_or(u16::MAX),
            );
        self.consumers.push((subscription, handler, options));
    }

    /// The state its routes share.
    pub fn api_state(&self) -> ApiState {
        ApiState {
            db: self.db.clone(),
            relay: self.relay.clone(),
        }
    }

    /// The service with its routes: built, ready to run.
    pub fn with_routes(self, router: Router) -> Application {
        Application {
            service: self,
            router,
        }
    }

    /// The counters every service reports.
    pub async fn common_report(db: &Db, relay: &Relay) -> anyhow::Result<CommonReport> {
        Ok(CommonReport {
            duplicates_ignored: db.counter(consumer::counters::DUPLICATES_IGNORED).await?,
            dead_lettered: db.counter(consumer::counters::DEAD_LETTERED).await?,
            redeliveries: db.counter(consumer::counters::REDELIVERIES).await?,
            outbox_pending: relay.pending().await?,
        })
    }

    /// Serves `router` (plus `/healthz`, `/readyz` and `/metrics`, every route counted and
    /// timed), runs the relay and the consumers,
    /// until `shutdown` is cancelled; then stops them in order.
    pub async fn run(self, router: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Service {
            config,
            db,
            broker,
            relay,
            stats,
            readiness,
            listener,
            consumers,
            ..
        } = self;
        let name = config.name.clone();
        // On shutdown HTTP stops accepting and the consumer loops stop taking deliveries at
        // once; the loops let their running handlers finish and ack; only then does the
        // relay stop, after publishing what those last handlers committed.
        let consumers_stop = shutdown.child_token();
        // The relay gets a token of its own, cancelled only after the consumers are done,
        // so the events their last handlers committed are still published.
        let relay_stop = CancellationToken::new();
        let mut relay_task = tokio::spawn(relay.clone().run(relay_stop.clone()));
        let mut consumer_tasks = Vec::new();
        // The broker probe asks for the backlog of the service's own group.
        let probed_subscription = consumers
            .first()
            .map(|(subscription, ..)| subscription.clone());
        // `/metrics` reads the backlog of every group the service consumes in.
        let sampled = metrics::Sampled::new(
            &name,
            broker.clone(),
            consumers
                .iter()
                .map(|(subscription, ..)| subscription.clone()),
            relay.clone(),
        );
        for (subscription, handler, options) in consumers {
            let deliveries = broker
                .subscribe(subscription.clone())
                .await
                .with_context(|| format!("{name}: subscribing to {:?}", subscription.topics))?;
            consumer_tasks.push(tokio::spawn(consumer::run(
                deliveries,
                handler,
                options,
                stats.clone(),
                consumers_stop.clone(),
            )));
        }
        readiness.set(true);
        // From now on /readyz also follows the database and the broker connection.
        let probes_stop = shutdown.child_token();
        let mut probes = vec![http::watch_database(
            &readiness,
            db.clone(),
            http::PROBE_INTERVAL,
            probes_stop.clone(),
        )];
        if let Some(subscription) = probed_subscription {
            probes.push(http::watch_broker(
                &readiness,
                broker.clone(),
                subscription,
                http::PROBE_INTERVAL,
                probes_stop.clone(),
            ));
        }
        tracing::info!(service = %name, address = %listener.local_addr()?, "ready");
        let router = router
            .merge(http::health_routes(readiness.clone()))
            .merge(metrics::metrics_routes(sampled));
        let router = metrics::track_requests(router, &name);
        let serve = http::serve(listener, router, shutdown.clone());
        tokio::pin!(serve);
        // Serve until the stop begins (or the server fails on its own); from then on the
        // whole stop has `shutdown_timeout`, HTTP's last requests included.
        let (served, deadline) = tokio::select! {
            served = &mut serve => (served, Instant::now() + config.shutdown_timeout),
            () = shutdown.cancelled() => {
                let deadline = Instant::now() + config.shutdown_timeout;
                let served = tokio::time::timeout_at(deadline, serve)
                    .await
                    .unwrap_or_else(|_| {
                        tracing::warn!(service = %name, "HTTP requests still open at the stop's deadline");
                        Ok(())
                    });
                (served, deadline)
            }
        };
        readiness.set(false);
        // Already cancelled with `shutdown`, unless the server failed by itself.
        consumers_stop.cancel();
        let stopping = async {
            probes_stop.cancel();
            for probe in probes {
                let _ = probe.await;
            }
            for task in consumer_tasks.iter_mut() {
                let _ = task.await;
            }
            relay_stop.cancel();
            let _ = (&mut relay_task).await;
            let _ = broker.close().await;
        };
        if tokio::time::timeout_at(deadline, stopping).await.is_err() {
            // What is cut short here is not lost: unsettled deliveries go back to their
            // groups, committed outbox rows are published by the next start.
            tracing::error!(
                service = %name,
                timeout = ?config.shutdown_timeout,
                "the graceful stop did not finish in time (ORDERFLOW_SHUTDOWN_TIMEOUT); stopping anyway"
            );
            for task in &consumer_tasks {
                task.abort();
            }
            relay_task.abort();
        }
        // Close the pool too, so that nothing holds a connection to the database after
        // the service has stopped (tests drop their databases right after). Bounded: a
        // database that stopped answering must not hold the exit either.
        if tokio::time::timeout(POOL_CLOSE_TIMEOUT, db.pool().close())
            .await
            .is_err()
        {
            tracing::warn!(service = %name, "the database pool did not close in time");
        }
        tracing::info!(service = %name, "stopped");
        served
    }
}

/// How long closing the database pool may take once the rest has stopped.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer of every service's `GET /internal/reconcile`: `{"<rows_key>": rows,
/// "common": {...}}`, what `orderflow reconcile` reads. `rows` is the service's own part
/// (orders, payments, ledger, …), read from its store.
pub async fn reconcile_answer<R: Serialize>(
    db: &Db,
    relay: &Relay,
    rows_key: &str,
    rows: anyhow::Result<Vec<R>>,
) -> Result<axum::Json<serde_json::Value>, http::ApiError> {
    let internal = |error: anyhow::Error| http::ApiError::internal(format!("{error:#}"));
    let rows = rows.map_err(internal)?;
    let common = Service::common_report(db, relay).await.map_err(internal)?;
    Ok(axum::Json(
        serde_json::json!({ rows_key: rows, "common": common }),
    ))
}

/// Topology before traffic: declares every consumer group of the order flow
/// ([`orderflow_events::topology::GROUPS`]) with its topics, before this service's relay
/// publishes anything or its consumers start. Whichever service starts first, what it
/// publishes is then kept for the groups whose services have not run yet (see the
/// topology module for why a broker would otherwise drop it).
///
/// A service running under a group name of its own (a test's private group) declares only
/// that group, when it subscribes: declaring the flow's real groups on a shared broker would
/// leave queues there that nobody consumes.
async fn declare_topology(service: &str, broker: &dyn Broker) -> anyhow::Result<()> {
    if topology::group(service).is_none() {
        return Ok(());
    }
    for group in topology::GROUPS {
        let subscription = Subscription::new(group.group, group.topics.iter().copied());
        // Retried like the connect: a broker that answers slowly for a while (tansu under
        // load timing out a metadata request, seen in the 10,000-order chaos run) must
        // not end the start-up of a service that is otherwise ready to run.
        retry_start_up_step(
            &format!("declaring the consumer group {}", group.group),
            DECLARE_PATIENCE,
            || broker.declare(&subscription),
        )
        .await?;
    }
    Ok(())
}

/// How long [`declare_topology`] keeps trying one group before the start fails.
const DECLARE_PATIENCE: Duration = Duration::from_secs(60);
