//! Test support for one service at a time (feature `testkit`, for services' tests only).
//!
//! Each test gets a service of its own — its own memory broker, its own database (a SQLite
//! file in a temporary directory, or a fresh database on a PostgreSQL server), a free
//! port — plus the client-side tools tests use on it: HTTP getters, an observer group on
//! the broker, waiting with a deadline, and a clean stop that drops the database.
//!
//! ```text
//! let prepared = testkit::prepare("points", store);             // ServiceConfig + where data goes
//! let application = startup::build(PointsConfig::new(prepared.config.clone())).await?;
//! let app = testkit::launch(prepared, application.address(), |stop| {
//!     tokio::spawn(application.run_until_stopped(stop))
//! }).await;                                                      // ready: /readyz answered 200
//! ```

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use orderflow_broker::{headers, Broker, Deliveries, Delivery, Envelope, Subscription};
use orderflow_events::Event;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{config::ServiceConfig, testenv, wait};

/// How long a test waits for something that should happen in milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// How often it looks.
pub const POLL: Duration = Duration::from_millis(20);

/// Which database the service under test gets.
pub enum Store {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on this PostgreSQL server.
    Postgres(String),
}

impl Store {
    /// PostgreSQL from `ORDERFLOW_DATABASE_URL`, or `None` (the test skips; fails under CI).
    pub fn postgres() -> Option<Store> {
        testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL").map(Store::Postgres)
    }
}

/// The settings of a service about to be started for one test, and where its data goes.
pub struct Prepared {
    /// The common settings: a memory broker and a database of the test's own, port 0.
    pub config: ServiceConfig,
    scratch: PathBuf,
    postgres: Option<(String, String)>,
}

/// Settings for `service` on `store`: a broker and a database no other test uses.
pub fn prepare(service: &str, store: Store) -> Prepared {
    let run = Uuid::now_v7().simple().to_string();
    let scratch = std::env::temp_dir().join(format!("orderflow-{service}-test-{run}"));
    let (database_url, postgres) = match store {
        Store::Sqlite => (format!("sqlite://{}/{service}.db", scratch.display()), None),
        Store::Postgres(server) => {
            let name = format!("orderflow_{service}_test_{run}");
            let mut url = url::Url::parse(&server).expect("ORDERFLOW_DATABASE_URL is a URL");
            url.set_path(&name);
            (url.to_string(), Some((server, name)))
        }
    };
    Prepared {
        config: ServiceConfig {
            concurrency: 8,
            max_attempts: 3,
            ..ServiceConfig::with_defaults(
                service,
                &format!("memory://{service}-test-{run}"),
                database_url,
            )
        },
        scratch,
        postgres,
    }
}

/// Runs the built service (`run` spawns it with the stop token) and waits until it is
/// ready: publishing before it subscribed would lose the message for its group.
pub async fn launch(
    prepared: Prepared,
    address: SocketAddr,
    run: impl FnOnce(CancellationToken) -> JoinHandle<anyhow::Result<()>>,
) -> TestApp {
    let shutdown = CancellationToken::new();
    let task = run(shutdown.clone());
    let broker = orderflow_broker::connect(&prepared.config.broker_url)
        .await
        .expect("the test connects to the service's memory broker");
    let app = TestApp {
        address: format!("http://{address}"),
        broker,
        client: reqwest::Client::new(),
        shutdown,
        task,
        scratch: prepared.scratch,
        postgres: prepared.postgres,
    };
    app.wait_for("/readyz to answer 200", |app| async move {
        let response = app.get("/readyz").await;
        (response.status() == 200).then_some(())
    })
    .await;
    app
}

/// A running service and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Another client of the service's broker, to publish input and observe output.
    pub broker: Arc<dyn Broker>,
    /// The HTTP client.
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    scratch: PathBuf,
    postgres: Option<(String, String)>,
}

impl TestApp {
    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the service answers")
    }

    /// `GET path` as JSON, asserting 200.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("a JSON body")
    }

    /// `GET /internal/reconcile`.
    pub async fn reconcile(&self) -> serde_json::Value {
        self.get_json("/internal/reconcile").await
    }

    /// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`].
    pub async fn wait_for<'a, T, F, Fut>(&'a self, what: &str, check: F) -> T
    where
        F: Fn(&'a TestApp) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        wait::until(what, PATIENCE, POLL, || check(self))
            .await
            .unwrap()
    }

    /// Subscribes an observer group of its own to `topics`: it sees every message
    /// published on them from now on.
    pub async fn observe(&self, topics: &[&str]) -> Deliveries {
        let group = format!("observer-{}", Uuid::now_v7().simple());
        self.broker
            .subscribe(Subscription::new(group, topics.iter().copied()))
            .await
            .expect("the observer subscribes")
    }

    /// Publishes `envelope` as a producer would.
    pub async fn publish(&self, envelope: Envelope) {
        self.broker.publish(envelope).await.expect("published");
    }

    /// Publishes `event` three times, the two ways a duplicate arrives: one envelope twice
    /// (the broker redelivering it), then a new envelope for the same event (a producer
    /// that published it again). Returns the first envelope's id.
    pub async fn publish_thrice(&self, event: &Event) -> Uuid {
        let first = event.to_envelope();
        self.publish(first.clone()).await;
        self.publish(first.clone()).await;
        self.publish(event.to_envelope()).await;
        first.id
    }

    /// Stops the service gracefully and removes its database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the service task does not panic")
            .expect("the service stops cleanly");
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some((server, name)) = self.postgres {
            drop_database(&server, &name).await;
        }
    }
}

/// Receives everything `deliveries` holds until nothing more arrives for a short while,
/// and acks it. Call it once the service reports its outbox empty: by then everything it
/// will ever publish has been handed to the broker, so the quiet period only confirms
/// that nothing else is in flight.
pub async fn drain(deliveries: &mut Deliveries) -> Vec<Envelope> {
    let mut received = Vec::new();
    while let Some(delivery) = deliveries.next_within(Duration::from_millis(300)).await {
        received.push(delivery.envelope().clone());
        delivery.ack().await.expect("acked");
    }
    received
}

/// The reason a dead letter carries in its [`headers::DEAD_LETTER_REASON`] header (empty
/// when it has none).
pub fn dead_letter_reason(letter: &Delivery) -> String {
    letter
        .envelope()
        .header(headers::DEAD_LETTER_REASON)
        .unwrap_or_default()
        .to_owned()
}

/// Best effort: a test database is not worth failing a test over.
async fn drop_database(server: &str, name: &str) {
    use sqlx::{ConnectOptions, Connection};
    let Ok(options) = server.parse::<sqlx::postgres::PgConnectOptions>() else {
        return;
    };
    if let Ok(mut connection) = options.connect().await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut connection)
            .await;
        let _ = connection.close().await;
    }
}

/// Turns each scenario `async fn name(store: Store)` into two tests, `sqlite::name` and
/// `postgres::name`: one on a SQLite file, one on a fresh PostgreSQL database (skipped,
/// or failed under CI, when `ORDERFLOW_DATABASE_URL` is unset — see [`Store::postgres`]).
/// The two databases differ in locking, types and SQL dialect, so every behaviour a
/// service promises is shown on both.
///
/// ```text
/// use orderflow_kit::on_every_store;
/// async fn awards_once_per_order(store: Store) { … }
/// on_every_store!(awards_once_per_order, users_without_points_and_bad_ids);
/// ```
#[macro_export]
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::testkit::Store::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    if let Some(store) = $crate::testkit::Store::postgres() {
                        super::$scenario(store).await;
                    }
                }
            )*
        }
    };
}
