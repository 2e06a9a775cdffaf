//! The five services, started two ways:
//!
//! - [`InProcessStack`] — as tasks in this process (`orderflow demo`, the end-to-end tests
//!   on every backend), each with its own database: a SQLite file in a temporary directory,
//!   or a database of its own on a PostgreSQL server;
//! - [`ProcessStack`] — as the real `*-service` binaries, one process per copy, configured
//!   only through environment variables (the end-to-end test that restarts a service
//!   mid-run, `orderflow chaos`). [`ProcessOptions`] gives a service several copies, a
//!   broker URL of its own (through a proxy that can cut the network) and extra
//!   environment; single copies can be killed (SIGKILL), stopped (SIGTERM) and restarted.
//!
//! [`InProcessStack::start_sync`] starts the same five with the order service in the
//! synchronous wiring (`ORDERFLOW_WIRING=sync`, `orderflow_order::wiring`), the baseline of
//! `orderflow load --compare`.
//!
//! Both listen on free loopback ports and hand back [`Endpoints`] for placing orders and
//! reconciling. In both, the logging service can be stopped and started again on its port
//! while the others run (`outage.rs`): the case of `orderflow load --logging-down`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use orderflow_kit::{config::ServiceConfig, shutdown::CancellationToken};
use tokio::task::JoinHandle;

use crate::reconcile::Endpoints;

mod outage;

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
    ServiceConfig::with_defaults(name, broker_url, database_url)
}

/// The five services as tasks of this process.
pub struct InProcessStack {
    endpoints: Endpoints,
    broker_url: String,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    databases: Databases,
    /// Texts per second the SMS gateway takes; its default when `None`.
    sms_rate_per_s: Option<f64>,
    /// Stops the logging service alone (a child of `shutdown`), so it can be stopped and
    /// started again while the other four run.
    logging_stop: CancellationToken,
}

impl InProcessStack {
    /// Builds all five (databases migrated, broker connected, ports bound), then runs them.
    pub async fn start(options: StackOptions) -> anyhow::Result<InProcessStack> {
        InProcessStack::start_with_sms_rate(options, None).await
    }

    /// [`InProcessStack::start`] with an SMS gateway that takes `sms_rate_per_s` texts a
    /// second instead of its default (a fault run of thousands of orders would otherwise
    /// spend most of its time waiting for the gateway's pacing).
    pub async fn start_with_sms_rate(
        options: StackOptions,
        sms_rate_per_s: Option<f64>,
    ) -> anyhow::Result<InProcessStack> {
        let mut stack = InProcessStack::start_order_service(options).await?;
        stack.sms_rate_per_s = sms_rate_per_s;
        stack.start_downstream().await?;
        Ok(stack)
    }

    /// The five with the order service in the synchronous wiring: the other four first
    /// (the order service needs their addresses), then the order service calling them
    /// inside `POST /orders`.
    pub async fn start_sync(options: StackOptions) -> anyhow::Result<InProcessStack> {
        InProcessStack::start_sync_with_sms_rate(options, None).await
    }

    /// [`InProcessStack::start_sync`] with an SMS gateway that takes `sms_rate_per_s` texts
    /// a second instead of its default.
    pub async fn start_sync_with_sms_rate(
        options: StackOptions,
        sms_rate_per_s: Option<f64>,
    ) -> anyhow::Result<InProcessStack> {
        let databases = Databases::new(options.postgres.clone())?;
        let shutdown = CancellationToken::new();
        let mut stack = InProcessStack {
            endpoints: Endpoints {
                order: String::new(),
                payment: String::new(),
                points: String::new(),
                sms: String::new(),
                logging: String::new(),
            },
            broker_url: options.broker_url,
            logging_stop: shutdown.child_token(),
            shutdown,
            tasks: Vec::new(),
            databases,
            sms_rate_per_s,
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
            logging_stop: shutdown.child_token(),
            shutdown,
            tasks,
            databases,
            sms_rate_per_s: None,
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
        let mut sms_config = orderflow_sms::config::SmsConfig::new(config("sms"));
        if let Some(rate) = self.sms_rate_per_s {
            sms_config.gateway.rate_per_s = rate;
        }
        let sms = orderflow_sms::startup::build(sms_config)
            .await
            .context("starting the SMS service")?;
        let logging = self
            .build_logging(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await?;
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
                tokio::spawn(logging.run_until_stopped(self.logging_stop.clone())),
            ),
        ]);
        Ok(())
    }

    /// Builds the logging service on `http_addr` (port 0: any free one) with this stack's
    /// broker and its logging database.
    async fn build_logging(
        &self,
        http_addr: std::net::SocketAddr,
    ) -> anyhow::Result<orderflow_logging::startup::Application> {
        let mut config = service_config("logging", &self.broker_url, self.databases.url("logging"));
        config.http_addr = http_addr;
        orderflow_logging::startup::build(orderflow_logging::config::LoggingConfig::new(config))
            .await
            .context("starting the logging service")
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

/// Waits until each of `bases` answers `/readyz` with 200 (120 s at most each: a consumer
/// restarted after a `kill -9` on Kafka may wait out the dead member's 45 s session and a
/// rejoin before it owns partitions and its service is ready).
async fn wait_ready_at(bases: &[&String]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for base in bases {
        let url = format!("{base}/readyz");
        orderflow_kit::wait::until(
            &format!("{url} to answer 200"),
            Duration::from_secs(120),
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

/// How [`ProcessStack`] runs each service beyond [`StackOptions`]: how many copies, which
/// broker address each one dials (a fault-injecting proxy, say) and what else is in its
/// environment. The default is one copy of each, all on the stack's broker URL.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// Copies per service (1 when absent). Every copy listens on a port of its own and
    /// shares the service's database, as `docker compose --scale` would.
    pub replicas: BTreeMap<String, usize>,
    /// A broker URL for one service in place of [`StackOptions::broker_url`].
    pub broker_urls: BTreeMap<String, String>,
    /// Environment for every service (e.g. a faster SMS gateway).
    pub env: Vec<(String, String)>,
    /// Environment for one service only, on top of [`ProcessOptions::env`].
    pub service_env: BTreeMap<String, Vec<(String, String)>>,
}

impl ProcessOptions {
    fn replicas_of(&self, name: &str) -> usize {
        self.replicas.get(name).copied().unwrap_or(1).max(1)
    }
}

/// One running (or stopped) copy of a service.
struct Replica {
    port: u16,
    child: Option<Child>,
}

/// The five services as separate processes of their real binaries.
pub struct ProcessStack {
    binaries: PathBuf,
    broker_url: String,
    databases: Databases,
    options: ProcessOptions,
    /// Per service (in [`SERVICES`] order), its copies.
    replicas: Vec<Vec<Replica>>,
    logs: PathBuf,
}

impl ProcessStack {
    /// Starts the `*-service` binaries found in `binaries` (e.g. `target/debug`), one of each.
    pub async fn start(binaries: &Path, options: StackOptions) -> anyhow::Result<ProcessStack> {
        ProcessStack::start_with(binaries, options, ProcessOptions::default()).await
    }

    /// Starts the `*-service` binaries found in `binaries`, as many copies of each and
    /// with the broker URLs and environment `process` says; waits until every copy is ready.
    pub async fn start_with(
        binaries: &Path,
        options: StackOptions,
        process: ProcessOptions,
    ) -> anyhow::Result<ProcessStack> {
        let databases = Databases::new(options.postgres.clone())?;
        let logs = databases.scratch.join("logs");
        std::fs::create_dir_all(&logs)?;
        let replicas = SERVICES
            .iter()
            .map(|(name, _)| {
                (0..process.replicas_of(name))
                    .map(|_| free_port().map(|port| Replica { port, child: None }))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<_>>()?;
        let mut stack = ProcessStack {
            binaries: binaries.to_owned(),
            broker_url: options.broker_url,
            databases,
            options: process,
            replicas,
            logs,
        };
        for (index, (name, _)) in SERVICES.iter().enumerate() {
            for replica in 0..stack.replicas[index].len() {
                stack.spawn(name, replica)?;
            }
        }
        stack.wait_all_ready().await?;
        Ok(stack)
    }

    fn index_of(name: &str) -> anyhow::Result<usize> {
        SERVICES
            .iter()
            .position(|(service, _)| *service == name)
            .with_context(|| format!("no service {name}"))
    }

    fn replica_mut(&mut self, name: &str, replica: usize) -> anyhow::Result<&mut Replica> {
        let index = ProcessStack::index_of(name)?;
        self.replicas[index]
            .get_mut(replica)
            .with_context(|| format!("{name} has no replica {replica}"))
    }

    /// Starts copy `replica` of `name` (which must not be running) on its port.
    fn spawn(&mut self, name: &str, replica: usize) -> anyhow::Result<()> {
        let binary = self.binaries.join(format!("{name}-service"));
        anyhow::ensure!(
            binary.exists(),
            "{} not found: build it first (cargo build --bins)",
            binary.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}-{}.log", replica + 1)))?;
        let broker_url = self
            .options
            .broker_urls
            .get(name)
            .unwrap_or(&self.broker_url)
            .clone();
        let database_url = self.databases.url(name);
        let extra: Vec<(String, String)> = self
            .options
            .env
            .iter()
            .chain(self.options.service_env.get(name).into_iter().flatten())
            .cloned()
            .collect();
        let slot = self.replica_mut(name, replica)?;
        anyhow::ensure!(slot.child.is_none(), "{name} replica {replica} is running");
        let child = Command::new(&binary)
            .env("ORDERFLOW_BROKER", broker_url)
            .env("DATABASE_URL", database_url)
            .env("ORDERFLOW_HTTP_ADDR", format!("127.0.0.1:{}", slot.port))
            .env("ORDERFLOW_INSTANCE", format!("{name}-{}", replica + 1))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        slot.child = Some(child);
        Ok(())
    }

    /// Where the services answer (the first copy of each).
    pub fn endpoints(&self) -> Endpoints {
        let url = |index: usize| format!("http://127.0.0.1:{}", self.replicas[index][0].port);
        Endpoints {
            order: url(0),
            payment: url(1),
            points: url(2),
            sms: url(3),
            logging: url(4),
        }
    }

    /// How many copies of `name` the stack runs.
    pub fn replicas(&self, name: &str) -> usize {
        ProcessStack::index_of(name).map_or(0, |index| self.replicas[index].len())
    }

    async fn wait_all_ready(&self) -> anyhow::Result<()> {
        let bases: Vec<String> = self
            .replicas
            .iter()
            .flatten()
            .map(|replica| format!("http://127.0.0.1:{}", replica.port))
            .collect();
        wait_ready_at(&bases.iter().collect::<Vec<_>>())
            .await
            .with_context(|| self.log_tails())
    }

    /// The last lines of every copy's log: the logs go with the stack's temporary
    /// directory, so an error that ends the stack carries what they said.
    fn log_tails(&self) -> String {
        let mut out = format!("service logs in {} end with:", self.logs.display());
        let mut files: Vec<_> = std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "\n--- {}\n{}",
                file.file_name().unwrap_or_default().to_string_lossy(),
                lines[lines.len().saturating_sub(4)..].join("\n")
            ));
        }
        out
    }

    /// Kills one service with SIGKILL — a crash, no chance to ack or flush — and starts
    /// it again on the same port and database.
    pub async fn crash_and_restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name, 0)?;
        self.restart(name, 0).await
    }

    /// SIGKILL to copy `replica` of `name`: it dies on the spot, mid-handler, mid-commit.
    pub fn kill(&mut self, name: &str, replica: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.replica_mut(name, replica)?.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM to copy `replica` of `name`, then waits (up to `patience`, SIGKILL after)
    /// for it to finish its running work and exit. `Ok(true)` when it exited on its own.
    pub async fn terminate(
        &mut self,
        name: &str,
        replica: usize,
        patience: Duration,
    ) -> anyhow::Result<bool> {
        let Some(child) = self.replica_mut(name, replica)?.child.take() else {
            return Ok(true);
        };
        send_sigterm(&child);
        Ok(stop_within(child, patience).await)
    }

    /// Waits up to `patience` for copy `replica` of `name` to exit by itself (a failpoint
    /// that aborts it, say). `Ok(true)` when it did; it is then no longer running.
    pub async fn wait_for_exit(
        &mut self,
        name: &str,
        replica: usize,
        patience: Duration,
    ) -> anyhow::Result<bool> {
        let slot = self.replica_mut(name, replica)?;
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            let exited = match slot.child.as_mut() {
                None => true,
                Some(child) => child.try_wait()?.is_some(),
            };
            if exited {
                slot.child = None;
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(false)
    }

    /// Starts copy `replica` of `name` again (after [`ProcessStack::kill`] or
    /// [`ProcessStack::terminate`]) without waiting for it: a copy that is meant to crash
    /// (a failpoint) may never become ready.
    pub fn start_replica(&mut self, name: &str, replica: usize) -> anyhow::Result<()> {
        self.spawn(name, replica)
    }

    /// Starts copy `replica` of `name` again (after [`ProcessStack::kill`] or
    /// [`ProcessStack::terminate`]) and waits until it is ready.
    pub async fn restart(&mut self, name: &str, replica: usize) -> anyhow::Result<()> {
        self.spawn(name, replica)?;
        let port = self.replica_mut(name, replica)?.port;
        wait_ready_at(&[&format!("http://127.0.0.1:{port}")])
            .await
            .with_context(|| self.log_tails())
    }

    /// Sets (`Some`) or removes (`None`) one environment variable of `name` for the
    /// copies started from now on; running copies keep theirs.
    pub fn set_service_env(&mut self, name: &str, variable: &str, value: Option<&str>) {
        let env = self.options.service_env.entry(name.to_owned()).or_default();
        env.retain(|(key, _)| key != variable);
        if let Some(value) = value {
            env.push((variable.to_owned(), value.to_owned()));
        }
    }

    /// Where the services' logs are (`<service>-<copy>.log`).
    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// Stops every service with SIGTERM (graceful), SIGKILL after 20 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for child in self
            .replicas
            .iter()
            .flatten()
            .filter_map(|replica| replica.child.as_ref())
        {
            send_sigterm(child);
        }
        let children: Vec<Child> = self
            .replicas
            .iter_mut()
            .flatten()
            .filter_map(|replica| replica.child.take())
            .collect();
        for child in children {
            stop_within(child, Duration::from_secs(20)).await;
        }
        Ok(())
    }
}

impl Drop for ProcessStack {
    fn drop(&mut self) {
        for mut child in self
            .replicas
            .iter_mut()
            .flatten()
            .filter_map(|replica| replica.child.take())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send_sigterm(child: &Child) {
    // std only sends SIGKILL; `kill -TERM` avoids an unsafe libc call.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// Waits up to `patience` for `child` to exit, then kills it. True when it exited itself.
async fn stop_within(mut child: Child, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
