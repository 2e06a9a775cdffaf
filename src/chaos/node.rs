//! The broker node of one fault run, and the proxy in front of it when the scenario cuts
//! the network.
//!
//! RabbitMQ and plain Kafka runs use `orderflow-nodes` as it is. A Kafka run behind the
//! proxy needs one thing more: a Kafka client reaches the broker at the address the broker
//! *advertises*, whatever address it bootstrapped from, so the proxy only sits on the path
//! if tansu advertises the proxy's address. [`TansuNode`] advertises its own listener, so
//! for that case this file runs tansu itself, listening on one port and advertising the
//! proxy's.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use orderflow_nodes::{RabbitNode, TansuNode};

use super::{proxy::Proxy, Backend, ChaosRun};

/// How long tansu may take to listen.
const TANSU_BOOT: Duration = Duration::from_secs(60);

/// The run's broker.
pub(crate) enum BrokerNode {
    /// A RabbitMQ node of its own.
    Rabbit(RabbitNode),
    /// A tansu of its own.
    Tansu(TansuNode),
    /// A tansu that advertises the proxy in front of it.
    TansuBehindProxy(AdvertisingTansu),
}

impl BrokerNode {
    /// Starts the node for `run` under `dir`; with `proxied`, also the proxy in front of
    /// it (on Kafka, every client then goes through the proxy; see the module doc).
    pub(crate) async fn start(
        run: &ChaosRun,
        dir: &Path,
        proxied: bool,
    ) -> anyhow::Result<(BrokerNode, Option<Proxy>)> {
        match run.backend {
            Backend::Rabbitmq => {
                let node = RabbitNode::start(dir)
                    .await
                    .context("starting a RabbitMQ node of the run's own")?;
                let proxy = match proxied {
                    true => Some(Proxy::start(loopback(node.amqp_port())).await?),
                    false => None,
                };
                Ok((BrokerNode::Rabbit(node), proxy))
            }
            Backend::Kafka => {
                let binary = run.tansu_bin.as_deref().context(
                    "--broker kafka needs the tansu binary: set ORDERFLOW_TANSU_BIN or --tansu-bin",
                )?;
                if !proxied {
                    let node = TansuNode::start(binary, dir)
                        .await
                        .context("starting a tansu of the run's own")?;
                    return Ok((BrokerNode::Tansu(node), None));
                }
                let port = orderflow_nodes::free_port()?;
                let proxy = Proxy::start(loopback(port)).await?;
                let node = AdvertisingTansu::start(binary, dir, port, proxy.address().port())
                    .await
                    .context("starting a tansu of the run's own behind the proxy")?;
                Ok((BrokerNode::TansuBehindProxy(node), Some(proxy)))
            }
            Backend::Memory => anyhow::bail!("the memory broker runs in process, not as a node"),
        }
    }

    /// The broker's URL for clients that do not go through the proxy.
    pub(crate) fn url(&self) -> String {
        match self {
            BrokerNode::Rabbit(node) => node.amqp_url(),
            BrokerNode::Tansu(node) => node.kafka_url(),
            // Bootstrapping directly works, but the metadata sends every client to the
            // advertised proxy: on this node nobody bypasses it.
            BrokerNode::TansuBehindProxy(node) => format!("kafka://127.0.0.1:{}", node.port),
        }
    }

    /// The broker's URL through a proxy listening on `port`.
    pub(crate) fn url_via(&self, port: u16) -> String {
        match self {
            BrokerNode::Rabbit(_) => format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            BrokerNode::Tansu(_) | BrokerNode::TansuBehindProxy(_) => {
                format!("kafka://127.0.0.1:{port}")
            }
        }
    }

    /// SIGKILL to the broker; returns once it is gone.
    pub(crate) async fn kill9(&mut self) -> anyhow::Result<()> {
        match self {
            BrokerNode::Rabbit(node) => node.kill9().await,
            BrokerNode::Tansu(node) => node.kill9().await,
            BrokerNode::TansuBehindProxy(node) => node.kill9(),
        }
    }

    /// Starts the broker again on its ports and data; returns once it takes clients.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            BrokerNode::Rabbit(node) => node.restart().await,
            BrokerNode::Tansu(node) => node.restart().await,
            BrokerNode::TansuBehindProxy(node) => node.launch().await,
        }
    }

    /// Stops the broker the quick way: its data is thrown away with the run (errors are
    /// of no interest after the ledger is taken).
    pub(crate) async fn stop(&mut self) {
        match self {
            BrokerNode::Rabbit(node) => {
                let _ = node.kill9().await;
            }
            BrokerNode::Tansu(node) => {
                let _ = node.kill9().await;
            }
            BrokerNode::TansuBehindProxy(node) => {
                let _ = node.kill9();
            }
        }
    }

    /// The broker's own log, for a run that did not pass.
    pub(crate) fn log(&self) -> Option<PathBuf> {
        let log = match self {
            BrokerNode::Rabbit(node) => node.dir().join("server.log"),
            BrokerNode::Tansu(node) => node.dir().join("tansu.log"),
            BrokerNode::TansuBehindProxy(node) => node.dir.join("tansu.log"),
        };
        log.exists().then_some(log)
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// tansu listening on `port` and advertising `advertised` (the proxy), SQLite storage in
/// its own directory, killed when dropped.
pub(crate) struct AdvertisingTansu {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    advertised: u16,
    process: Option<Child>,
}

impl AdvertisingTansu {
    async fn start(
        binary: &Path,
        dir: &Path,
        port: u16,
        advertised: u16,
    ) -> anyhow::Result<AdvertisingTansu> {
        let dir = dir.join(format!("tansu-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut node = AdvertisingTansu {
            binary: binary.to_owned(),
            dir,
            port,
            advertised,
            process: None,
        };
        node.launch().await?;
        Ok(node)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))?;
        // tansu resolves a relative SQLite URL against its working directory.
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &format!("tcp://127.0.0.1:{}", self.port)])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", self.advertised),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {}", self.binary.display()))?;
        self.process = Some(child);
        let port = self.port;
        orderflow_kit::wait::until(
            &format!("tansu to listen on 127.0.0.1:{port}"),
            TANSU_BOOT,
            Duration::from_millis(50),
            || async move {
                tokio::net::TcpStream::connect(loopback(port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await
    }

    fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.process.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for AdvertisingTansu {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}
