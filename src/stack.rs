//! The five services, started two ways:
//!
//! - [`InProcessStack`] — as tasks in this process (`orderflow demo`, the end-to-end tests
//!   on every backend), each with its own database: a SQLite file in a temporary directory,
//!   or a database of its own on a PostgreSQL server;
//! - [`ProcessStack`] — as the real `*-service` binaries, one process each, configured only
//!   through environment variables (the end-to-end test that restarts a service mid-run).
//!
//! [`InProcessStack::start_sync`] starts the same five with the order service in the
//! synchronous wiring (`ORDERFLOW_WIRING=sync`, `orderflow_order::wiring`), the baseline of
//! `orderflow load --compare`.
//!
//! Both listen on free loopback ports and hand back [`Endpoints`] for placing orders and
//! reconciling.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use orderflow_kit::{config::ServiceConfig, shutdown::CancellationToken};
use tokio::task::JoinHandle;

use crate::reconcile::Endpoints;

/// The services, in flow order, with the port each listens on by default.
pub const SERVICES: [(&str, u16); 5] = [
    ("order", 8080),
    ("payment", 8081),
    ("points", 8082),
    ("sms", 8083),
    ("logging", 8084),
];

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The broker every service connects to.
    pub broker_url: String,
    /// A PostgreSQL server (`postgres://user@host:port`) to give each service a database
    /// of its own on; SQLite files in a temporary directory when `None`.
    pub postgres: Option<String>,
}

/// Where each service keeps its data for this run.
struct Databases {
    run: String,
    scratch: PathBuf,
    postgres: Option<String>,
}

impl Databases {
    fn new(postgres: Option<String>) -> anyhow::Result<Self> {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let scratch = std::env::temp_dir().join(format!("orderflow-{run}"));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        Ok(Databases {
            run,
            scratch,
            postgres,
        })
    }

    fn url(&self, service: &str) -> String {
        match &self.postgres {
            Some(server) => format!(
                "{}/orderflow_{service}_{}",
                server.trim_end_matches('/'),
                self.run
            ),
            None => format!("sqlite://{}/{service}.db", self.scratch.display()),
        }
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn service_config(name: &str, broker_url: &str, database_url: String) -> ServiceConfig {
    ServiceConfig {
        name: name.to_owned(),
        broker_url: broker_url.to_owned(),
        database_url,
        // Port 0: the OS picks a free one; the stack reads it back.
        http_addr: "127.0.0.1:0".parse().expect("a literal address"),
        concurrency: 16,
        max_attempts: 5,
        publish_timeout: orderflow_kit::config::DEFAULT_PUBLISH_TIMEOUT,
        retention: orderflow_kit::config::DEFAULT_RETENTION,
    }
}

/// The five services as tasks of this process.
pub struct InProcessStack {
    endpoints: Endpoints,
    broker_url: String,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    databases: Databases,
}

impl InProcessStack {
    /// Builds all five (databases migrated, broker connected, ports bound), then runs them.
    pub async fn start(options: StackOptions) -> anyhow::Result<InProcessStack> {
        let mut stack = InProcessStack::start_order_service(options).await?;
        stack.start_downstream().await?;
        Ok(stack)
    }

    /// The five with the order service in the synchronous wiring: the other four first
    /// (the order service needs their addresses), then the order service calling them
    /// inside `POST /orders`.
    pub async fn start_sync(options: StackOptions) -> anyhow::Result<InProcessStack> {
        let databases = Databases::new(options.postgres.clone())?;
        let mut stack = InProcessStack {
            endpoints: Endpoints {
                order: String::new(),
                payment: String::new(),
                points: String::new(),
                sms: String::new(),
                logging: String::new(),
            },
            broker_url: options.broker_url,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            databases,
        };
        stack.build_downstream().await?;
        let endpoints = &stack.endpoints;
        let downstream = orderflow_order::wiring::Downstream {
            payment: endpoints.payment.clone(),
            points: endpoints.points.clone(),
            sms: endpoints.sms.clone(),
            logging: endpoints.logging.clone(),
        };
        let config = service_config("order", &stack.broker_url, stack.databases.url("order"));
        let order = orderflow_order::startup::build(
            orderflow_order::config::OrderConfig::new(config).with_sync_wiring(downstream),
        )
        .await
        .context("starting the order service (synchronous wiring)")?;
        stack.endpoints.order = format!("http://{}", order.address());
        stack.tasks.push((
            "order",
            tokio::spawn(order.run_until_stopped(stack.shutdown.clone())),
        ));
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// Runs the order service alone: orders are accepted and their events published while
    /// no other service has ever run — what `docker compose up` can do when the order
    /// service is up first. [`InProcessStack::start_downstream`] starts the other four.
    pub async fn start_order_service(options: StackOptions) -> anyhow::Result<InProcessStack> {
        let databases = Databases::new(options.postgres.clone())?;
        let shutdown = CancellationToken::new();
        let config = service_config("order", &options.broker_url, databases.url("order"));
        let order =
            orderflow_order::startup::build(orderflow_order::config::OrderConfig::new(config))
                .await
                .context("starting the order service")?;
        let endpoints = Endpoints {
            order: format!("http://{}", order.address()),
            payment: String::new(),
            points: String::new(),
            sms: String::new(),
            logging: String::new(),
        };
        let tasks = vec![(
            "order",
            tokio::spawn(order.run_until_stopped(shutdown.clone())),
        )];
        let stack = InProcessStack {
            endpoints,
            broker_url: options.broker_url,
            shutdown,
            tasks,
            databases,
        };
        wait_ready_at(&[&stack.endpoints.order]).await?;
        Ok(stack)
    }

    /// Builds payment, points, SMS and logging next to the running order service, then
    /// runs them.
    pub async fn start_downstream(&mut self) -> anyhow::Result<()> {
        self.build_downstream().await?;
        self.wait_ready().await
    }

    /// Builds and runs payment, points, SMS and logging, without waiting for them.
    async fn build_downstream(&mut self) -> anyhow::Result<()> {
        let broker = self.broker_url.as_str();
        let databases = &self.databases;
        let config = |name: &str| service_config(name, broker, databases.url(name));
        let payment = orderflow_payment::startup::build(
            orderflow_payment::config::PaymentConfig::new(config("payment")),
        )
        .await
        .context("starting the payment service")?;
        let points = orderflow_points::startup::build(orderflow_points::config::PointsConfig::new(
            config("points"),
        ))
        .await
        .context("starting the points service")?;
        let sms =
            orderflow_sms::startup::build(orderflow_sms::config::SmsConfig::new(config("sms")))
                .await
                .context("starting the SMS service")?;
        let logging = orderflow_logging::startup::build(
            orderflow_logging::config::LoggingConfig::new(config("logging")),
        )
        .await
        .context("starting the logging service")?;
        let url = |address: std::net::SocketAddr| format!("http://{address}");
        self.endpoints.payment = url(payment.address());
        self.endpoints.points = url(points.address());
        self.endpoints.sms = url(sms.address());
        self.endpoints.logging = url(logging.address());
        let shutdown = &self.shutdown;
        self.tasks.extend([
            (
                "payment",
                tokio::spawn(payment.run_until_stopped(shutdown.clone())),
            ),
            (
                "points",
                tokio::spawn(points.run_until_stopped(shutdown.clone())),
            ),
            ("sms", tokio::spawn(sms.run_until_stopped(shutdown.clone()))),
            (
                "logging",
                tokio::spawn(logging.run_until_stopped(shutdown.clone())),
            ),
        ]);
        Ok(())
    }

    /// Where the services answer.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        wait_ready(&self.endpoints).await
    }

    /// Stops all five gracefully and reports the first failure, if any.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_error = None;
        for (name, task) in self.tasks {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(error) => Err(anyhow::anyhow!("task panicked: {error}")),
            };
            if let Err(error) = outcome {
                first_error.get_or_insert(error.context(format!("the {name} service failed")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Waits until every service answers `/readyz` with 200 (60 s at most).
pub async fn wait_ready(endpoints: &Endpoints) -> anyhow::Result<()> {
    wait_ready_at(&[
        &endpoints.order,
        &endpoints.payment,
        &endpoints.points,
        &endpoints.sms,
        &endpoints.logging,
    ])
    .await
}

/// Waits until each of `bases` answers `/readyz` with 200 (60 s at most each).
async fn wait_ready_at(bases: &[&String]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for base in bases {
        let url = format!("{base}/readyz");
        orderflow_kit::wait::until(
            &format!("{url} to answer 200"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let request = client.get(&url).timeout(Duration::from_secs(2)).send();
                async move {
                    request
                        .await
                        .ok()
                        .filter(|response| response.status().is_success())
                        .map(drop)
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// The five services as separate processes of their real binaries.
pub struct ProcessStack {
    binaries: PathBuf,
    broker_url: String,
    databases: Databases,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    logs: PathBuf,
}

impl ProcessStack {
    /// Starts the `*-service` binaries found in `binaries` (e.g. `target/debug`).
    pub async fn start(binaries: &Path, options: StackOptions) -> anyhow::Result<ProcessStack> {
        let databases = Databases::new(options.postgres.clone())?;
        let logs = databases.scratch.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut stack = ProcessStack {
            binaries: binaries.to_owned(),
            broker_url: options.broker_url,
            ports: SERVICES
                .iter()
                .map(|_| free_port())
                .collect::<anyhow::Result<_>>()?,
            children: SERVICES.iter().map(|_| None).collect(),
            databases,
            logs,
        };
        for index in 0..SERVICES.len() {
            stack.spawn(index)?;
        }
        wait_ready(&stack.endpoints())
            .await
            .with_context(|| format!("service logs are in {}", stack.logs.display()))?;
        Ok(stack)
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let (name, _) = SERVICES[index];
        let binary = self.binaries.join(format!("{name}-service"));
        anyhow::ensure!(
            binary.exists(),
            "{} not found: build it first (cargo build --bins)",
            binary.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let child = Command::new(&binary)
            .env("ORDERFLOW_BROKER", &self.broker_url)
            .env("DATABASE_URL", self.databases.url(name))
            .env(
                "ORDERFLOW_HTTP_ADDR",
                format!("127.0.0.1:{}", self.ports[index]),
            )
            .env("ORDERFLOW_INSTANCE", format!("{name}-{}", index + 1))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.children[index] = Some(child);
        Ok(())
    }

    /// Where the services answer.
    pub fn endpoints(&self) -> Endpoints {
        let url = |index: usize| format!("http://127.0.0.1:{}", self.ports[index]);
        Endpoints {
            order: url(0),
            payment: url(1),
            points: url(2),
            sms: url(3),
            logging: url(4),
        }
    }

    /// Kills one service with SIGKILL — a crash, no chance to ack or flush — and starts
    /// it again on the same port and database.
    pub async fn crash_and_restart(&mut self, name: &str) -> anyhow::Result<()> {
        let index = SERVICES
            .iter()
            .position(|(service, _)| *service == name)
            .with_context(|| format!("no service {name}"))?;
        if let Some(mut child) = self.children[index].take() {
            child.kill()?;
            child.wait()?;
        }
        self.spawn(index)?;
        wait_ready(&self.endpoints()).await
    }

    /// Where the services' logs are.
    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// Stops every service with SIGTERM (graceful), SIGKILL after 20 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for child in self.children.iter_mut().flatten() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for child in self.children.iter_mut().filter_map(Option::take) {
            stop_within(child, Duration::from_secs(20)).await;
        }
        Ok(())
    }
}

impl Drop for ProcessStack {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn stop_within(mut child: Child, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
