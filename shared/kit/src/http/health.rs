//! `/healthz` and `/readyz`.
//!
//! Readiness is more than "started": a service whose database or broker connection is down
//! cannot do its work, so `/readyz` answers 503 then, and a load balancer or compose
//! healthcheck stops counting on it until the probes pass again ([`watch_database`],
//! [`watch_broker`]).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use orderflow_broker::{Broker, Subscription};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// How often the database and the broker are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A probe that has not answered in this long counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the service can do its work: started (migrated, subscribed) and every
/// dependency's last probe passed. Starts not ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug, Default)]
struct ReadinessState {
    started: AtomicBool,
    /// The dependencies whose last probe failed, with the error it gave.
    down: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    /// Marks the service started (or stopping).
    pub fn set(&self, ready: bool) {
        self.0.started.store(ready, Ordering::SeqCst);
    }

    /// Started, and nothing it depends on is down?
    pub fn is_ready(&self) -> bool {
        self.0.started.load(Ordering::SeqCst) && self.down().is_empty()
    }

    /// Records the outcome of one probe of `dependency`.
    pub fn report(&self, dependency: &'static str, outcome: Result<(), String>) {
        let mut down = self.0.down.lock().expect("never poisoned");
        match outcome {
            Ok(()) => {
                if down.remove(dependency).is_some() {
                    tracing::info!(dependency, "reachable again: ready");
                }
            }
            Err(error) => {
                if down.insert(dependency, error.clone()).is_none() {
                    tracing::warn!(dependency, %error, "unreachable: not ready");
                }
            }
        }
    }

    /// The dependencies down now, with their errors.
    pub fn down(&self) -> BTreeMap<&'static str, String> {
        self.0.down.lock().expect("never poisoned").clone()
    }

    /// Runs `probe` every `interval` until `shutdown`, recording each outcome under
    /// `dependency`; a probe slower than [`PROBE_TIMEOUT`] counts as failed.
    pub fn probe_every<F, Fut>(
        &self,
        dependency: &'static str,
        interval: Duration,
        shutdown: CancellationToken,
        mut probe: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let readiness = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(format!("{error:#}")),
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                };
                readiness.report(dependency, outcome);
            }
        })
    }
}

/// Probes the database with `SELECT 1` every `interval`: "database" is down while it fails.
pub fn watch_database(
    readiness: &Readiness,
    db: Db,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    readiness.probe_every("database", interval, shutdown, move || {
        let db = db.clone();
        async move {
            sqlx::query("SELECT 1").execute(db.pool()).await?;
            Ok(())
        }
    })
}

/// Probes the broker every `interval` with the cheapest round trip that proves the
/// service's own consumer group is reachable: its backlog (a passive queue declare on
/// RabbitMQ, watermarks and committed offsets on Kafka). "broker" is down while it fails.
pub fn watch_broker(
    readiness: &Readiness,
    broker: Arc<dyn Broker>,
    subscription: Subscription,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    readiness.probe_every("broker", interval, shutdown, move || {
        let broker = broker.clone();
        let subscription = subscription.clone();
        async move {
            broker.backlog(&subscription).await?;
            Ok(())
        }
    })
}

/// `/healthz` (the process answers) and `/readyz` (it can do its work: 503 until it has
/// started, and while a dependency is down).
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let down = readiness.down();
    if !readiness.0.started.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
    } else if !down.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "down": down})),
        )
    } else {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::http::{bind, serve};

    /// `GET /readyz` over a real socket: the status code and the body.
    async fn get_readyz(address: SocketAddr) -> (u16, serde_json::Value) {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let status = response[9..12].parse().unwrap();
            let body = response.split_once("\r\n\r\n").unwrap().1;
            (status, serde_json::from_str(body).unwrap())
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn readyz_is_503_while_the_database_is_down() {
        let dir = std::env::temp_dir().join(format!("orderflow-readyz-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(&format!("sqlite://{}/ready.db", dir.display()))
            .await
            .unwrap();
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            health_routes(readiness.clone()),
            shutdown.clone(),
        ));

        assert_eq!(get_readyz(address).await.0, 503, "not started yet");
        readiness.set(true);
        let probe = watch_database(
            &readiness,
            db.clone(),
            Duration::from_millis(20),
            shutdown.clone(),
        );
        assert_eq!(
            get_readyz(address).await,
            (200, serde_json::json!({"status": "ready"}))
        );

        // The database goes away: the next probe fails, and /readyz says so.
        db.pool().close().await;
        crate::wait::until(
            "readiness to notice the database is down",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async { (!readiness.is_ready()).then_some(()) },
        )
        .await
        .unwrap();
        let (status, body) = get_readyz(address).await;
        assert_eq!(status, 503);
        assert_eq!(body["status"], "not ready");
        assert!(body["down"]["database"].is_string(), "{body}");

        shutdown.cancel();
        probe.await.unwrap();
        server.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `rabbitmqctl ARGS…`, which must succeed.
    fn rabbitmqctl(args: &[&str]) {
        let output = std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The broker half. The service's broker is a RabbitMQ virtual host of the test's own;
    /// deleting it closes the connection and refuses every reconnect, which is what a
    /// broker that went away looks like to the service. Creating it again lets the
    /// reconnect supervisor and the subscription (which declares its queue again) recover.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_is_503_while_the_broker_is_unreachable() {
        let Some(base) = crate::testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") else {
            return;
        };
        let vhost = format!("orderflow-readyz-{}", uuid::Uuid::now_v7().simple());
        let grant = || rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        rabbitmqctl(&["add_vhost", &vhost]);
        grant();
        let server = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(server, _)| server);
        let broker = orderflow_broker::connect(&format!("{server}/{vhost}"))
            .await
            .unwrap();
        let subscription = Subscription::new("readyz", ["readyz.probe"]);
        // A live subscription, as a service has: it is what declares the queue again on
        // the next connection, so the probe can pass once the broker is back.
        let _deliveries = broker.subscribe(subscription.clone()).await.unwrap();

        let readiness = Readiness::default();
        readiness.set(true);
        let shutdown = CancellationToken::new();
        let probe = watch_broker(
            &readiness,
            broker.clone(),
            subscription,
            Duration::from_millis(50),
            shutdown.clone(),
        );
        let wait_until = |what: &'static str, ready: bool| {
            let readiness = readiness.clone();
            async move {
                crate::wait::until(
                    what,
                    Duration::from_secs(60),
                    Duration::from_millis(20),
                    || {
                        let readiness = readiness.clone();
                        async move { (readiness.is_ready() == ready).then_some(()) }
                    },
                )
                .await
                .unwrap();
            }
        };
        wait_until("the first broker probe to pass", true).await;

        rabbitmqctl(&["delete_vhost", &vhost]);
        wait_until("readiness to notice the broker is gone", false).await;
        assert!(
            readiness.down().contains_key("broker"),
            "{:?}",
            readiness.down()
        );

        rabbitmqctl(&["add_vhost", &vhost]);
        grant();
        wait_until("readiness to come back with the broker", true).await;

        shutdown.cancel();
        probe.await.unwrap();
        let _ = broker.close().await;
        rabbitmqctl(&["delete_vhost", &vhost]);
    }
}
