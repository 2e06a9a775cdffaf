//! Starting `order-service` processes, and the broker and database they share.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use orderflow_broker::{Broker, Deliveries, Subscription};
use orderflow_kit::{testenv, wait};
use serde_json::{json, Value};
use uuid::Uuid;

/// How long a test waits for something that should take moments.
pub const PATIENCE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A RabbitMQ virtual host of the test's own (its queues are invisible to every other
/// test), a PostgreSQL database of its own, and a scratch directory for the logs.
pub struct World {
    /// The broker URL the processes get.
    pub broker_url: String,
    /// The database URL the processes get.
    pub database_url: String,
    vhost: String,
    postgres_server: String,
    database: String,
    /// Where the processes' logs go.
    pub scratch: PathBuf,
}

impl World {
    /// `None` (the test skips, or fails under CI) without RabbitMQ and PostgreSQL.
    pub fn new() -> Option<World> {
        let amqp = testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ")?;
        let postgres = testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL")?;
        let run = Uuid::now_v7().simple().to_string();
        let vhost = format!("orderflow-order-processes-{run}");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let amqp_server = amqp
            .rsplit_once('/')
            .map_or(amqp.as_str(), |(server, _)| server);
        let database = format!("orderflow_order_processes_{run}");
        let mut database_url = url::Url::parse(&postgres).expect("ORDERFLOW_DATABASE_URL is a URL");
        database_url.set_path(&database);
        let scratch = std::env::temp_dir().join(format!("orderflow-order-processes-{run}"));
        std::fs::create_dir_all(&scratch).unwrap();
        Some(World {
            broker_url: format!("{amqp_server}/{vhost}"),
            database_url: database_url.to_string(),
            vhost,
            postgres_server: postgres,
            database,
            scratch,
        })
    }

    /// A client of the world's broker, for observing what the processes publish.
    pub async fn broker(&self) -> Arc<dyn Broker> {
        orderflow_broker::connect(&self.broker_url).await.unwrap()
    }

    /// An observer group of its own on `topic`: sees every message published from now on.
    pub async fn observe(&self, broker: &Arc<dyn Broker>, topic: &str) -> Deliveries {
        let group = format!("observer-{}", Uuid::now_v7().simple());
        broker
            .subscribe(Subscription::new(group, [topic]))
            .await
            .unwrap()
    }

    /// Starts `order-service` named `name` (its log file) with `extra` variables.
    pub fn spawn(&self, name: &str, extra: &[(&str, &str)]) -> OrderProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = self.scratch.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_order-service"));
        command
            .env("ORDERFLOW_BROKER", &self.broker_url)
            .env("DATABASE_URL", &self.database_url)
            .env("ORDERFLOW_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env_remove("FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (variable, value) in extra {
            command.env(variable, value);
        }
        OrderProcess {
            child: Some(command.spawn().expect("order-service starts")),
            address: format!("http://127.0.0.1:{port}"),
            log,
            client: reqwest::Client::new(),
        }
    }

    /// Removes the virtual host and the database.
    pub async fn tear_down(self) {
        rabbitmqctl(&["delete_vhost", &self.vhost]);
        use sqlx::{ConnectOptions, Connection};
        let options: sqlx::postgres::PgConnectOptions = self.postgres_server.parse().unwrap();
        let mut connection = options.connect().await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database
        ))
        .execute(&mut connection)
        .await
        .unwrap();
        let _ = connection.close().await;
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `order-service`.
pub struct OrderProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Its stderr.
    pub log: PathBuf,
    client: reqwest::Client,
}

impl OrderProcess {
    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let (client, url) = (&self.client, format!("{}/readyz", self.address));
        wait::until(&format!("{url} to answer 200"), PATIENCE, POLL, || async {
            let response = client.get(&url).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error}; log: {}", self.logs()));
    }

    /// `POST /orders` for `user`: the order id of the `202`, or `None` if the process did
    /// not answer.
    pub async fn place(&self, user: u64) -> Option<Uuid> {
        let body = json!({
            "user_id": user,
            "phone": "+8613800138000",
            "items": [{"sku": "teapot", "quantity": 1, "unit_price_cents": 4_500}],
        });
        let response = self
            .client
            .post(format!("{}/orders", self.address))
            .json(&body)
            .send()
            .await
            .ok()?;
        assert_eq!(response.status(), 202, "POST /orders");
        let body: Value = response.json().await.ok()?;
        Some(body["order_id"].as_str().unwrap().parse().unwrap())
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the service answers");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Outbox rows committed and not yet marked sent.
    pub async fn outbox_pending(&self) -> i64 {
        self.get_json("/internal/reconcile").await["common"]["outbox_pending"]
            .as_i64()
            .unwrap()
    }

    /// Waits for the process to exit by itself.
    pub async fn exited_within(&mut self, patience: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        wait::until("the process to exit", patience, POLL, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
        .ok()
    }

    /// SIGTERM (a graceful stop), then waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let child = self.child.as_ref().expect("running");
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        self.exited_within(PATIENCE)
            .await
            .expect("order-service stops within its patience after SIGTERM")
    }

    /// Waits until its log holds `text`.
    pub async fn wait_for_log(&self, text: &str) {
        wait::until(
            &format!("`{text}` in {}", self.log.display()),
            PATIENCE,
            POLL,
            || async { self.logs().contains(text).then_some(()) },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}; log: {}", self.logs()));
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OrderProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Message ids and keys as they arrive on an observer, each id counted.
#[derive(Debug, Default)]
pub struct Observed {
    /// How often each message id arrived.
    pub per_id: HashMap<Uuid, usize>,
    /// The message ids seen per key (order id), in arrival order, repeats included.
    pub per_key: HashMap<String, Vec<Uuid>>,
}

impl Observed {
    /// Receives and acks until every key in `keys` has been seen, failing after
    /// [`PATIENCE`], then keeps receiving until nothing arrives for a while (late copies).
    pub async fn collect(deliveries: &mut Deliveries, keys: &[Uuid]) -> Observed {
        let mut observed = Observed::default();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let all_seen = |observed: &Observed| {
            keys.iter()
                .all(|key| observed.per_key.contains_key(&key.to_string()))
        };
        while !all_seen(&observed) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(delivery) = deliveries.next_within(left).await else {
                let missing = keys
                    .iter()
                    .filter(|key| !observed.per_key.contains_key(&key.to_string()))
                    .count();
                panic!("{missing} of {} orders never published", keys.len());
            };
            observed.record(delivery).await;
        }
        while let Some(delivery) = deliveries.next_within(Duration::from_millis(500)).await {
            observed.record(delivery).await;
        }
        observed
    }

    async fn record(&mut self, delivery: orderflow_broker::Delivery) {
        let envelope = delivery.envelope();
        *self.per_id.entry(envelope.id).or_default() += 1;
        self.per_key
            .entry(envelope.key.clone())
            .or_default()
            .push(envelope.id);
        delivery.ack().await.unwrap();
    }
}
