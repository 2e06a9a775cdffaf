//! A tansu broker of one's own: [`TansuNode`].
//!
//! tansu speaks the Kafka protocol. This one stores to SQLite in its own directory, so
//! what it acknowledged is on disk and survives a SIGKILL, and it listens on a loopback
//! port of its own that it keeps across restarts (clients reconnect to the same address).
//!
//! tansu resolves `sqlite://tansu.db` relative to its working directory, and an absolute
//! `sqlite:///path` loses its leading slash, so the process runs inside the node's
//! directory with the relative URL (as `scripts/lib/brokers.sh` `start_tansu` does).
//!
//! A Kafka client bootstraps from any address but then talks to the address the broker
//! *advertises*. [`TansuNode::start_advertising`] makes tansu advertise another address
//! than its listener (a proxy in front of it, which a network-cut scenario controls), so
//! that every client connection goes through that address.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use orderflow_kit::wait;
use tokio::process::{Child, Command};

use crate::{ports::free_port, probe, process};

/// How long tansu may take to listen.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long tansu may take to be gone after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The storage URL, relative to the node's directory (see the module doc).
const STORAGE: &str = "sqlite://tansu.db";

/// A tansu broker on its own port with its own SQLite data, killed when dropped.
pub struct TansuNode {
    binary: PathBuf,
    /// The working directory: `tansu.db` and `tansu.log`.
    dir: PathBuf,
    /// The port tansu listens on.
    port: u16,
    /// The address tansu tells clients to use: its own listener, or a proxy in front.
    advertised: SocketAddr,
    /// The tansu process while it runs (tansu is our direct child).
    process: Option<Child>,
}

impl TansuNode {
    /// Starts tansu (`binary`, e.g. from `ORDERFLOW_TANSU_BIN`) with its files in a fresh
    /// directory under `dir`, and waits until it listens.
    pub async fn start(binary: &Path, dir: &Path) -> anyhow::Result<TansuNode> {
        Self::start_on(binary, dir, None).await
    }

    /// Like [`TansuNode::start`], but tansu advertises `advertised` to clients instead of
    /// its own listener (see the module doc); [`TansuNode::kafka_url`] then names
    /// `advertised` too.
    pub async fn start_advertising(
        binary: &Path,
        dir: &Path,
        advertised: SocketAddr,
    ) -> anyhow::Result<TansuNode> {
        Self::start_on(binary, dir, Some(advertised)).await
    }

    async fn start_on(
        binary: &Path,
        dir: &Path,
        advertised: Option<SocketAddr>,
    ) -> anyhow::Result<TansuNode> {
        anyhow::ensure!(
            binary.is_file(),
            "no tansu binary at {} (scripts/test.sh builds one into ~/.cache/orderflow)",
            binary.display()
        );
        let dir = dir.join(format!("tansu-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = free_port()?;
        let mut node = TansuNode {
            binary: binary.to_path_buf(),
            dir,
            port,
            advertised: advertised.unwrap_or((Ipv4Addr::LOCALHOST, port).into()),
            process: None,
        };
        node.launch().await?;
        Ok(node)
    }

    /// The URL `orderflow_broker::connect` takes: `kafka://<advertised address>`
    /// (`kafka://127.0.0.1:<port>` unless started with [`TansuNode::start_advertising`]).
    pub fn kafka_url(&self) -> String {
        format!("kafka://{}", self.advertised)
    }

    /// The port tansu listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's directory (`tansu.db`, `tansu.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True while the tansu process runs.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills tansu with SIGKILL and waits until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.process.take().context("tansu is not running")?;
        child.start_kill().context("killing tansu")?;
        tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .context("the killed tansu did not exit")?
            .context("waiting for the killed tansu")?;
        Ok(())
    }

    /// Freezes tansu (SIGSTOP): connections stay open and nothing is answered, the way a
    /// broker stalled on its disk or starved of CPU looks to its clients.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused tansu run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .process
            .as_ref()
            .and_then(|child| child.id())
            .context("tansu is not running")?;
        process::signal(pid, signal)
    }

    /// Starts tansu again on the same port with the same data, and waits until it listens.
    /// A tansu still running is killed first (tansu keeps nothing in memory that SQLite
    /// does not have, so there is no gentler stop to prefer).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.kill9().await?;
        }
        self.launch().await
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("tansu.log")
    }

    /// Runs tansu and waits until it listens, or fails at once with the end of its log
    /// when it exits first.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.advertised);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .with_context(|| format!("cannot open {}", self.log_file().display()))?;
        let mut child = Command::new(&self.binary)
            .args(["broker", "--storage-engine", STORAGE])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        let port = self.port;
        let listening = wait::until(
            &format!("tansu to listen on 127.0.0.1:{port}"),
            BOOT_TIMEOUT,
            Duration::from_millis(50),
            || {
                let exited = child.try_wait().ok().flatten();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    probe::listens(port).await.then_some(Ok(()))
                }
            },
        )
        .await;
        match listening {
            Ok(Ok(())) => {
                self.process = Some(child);
                Ok(())
            }
            Ok(Err(status)) => anyhow::bail!(
                "tansu exited while starting ({status}); the end of {}:\n{}",
                self.log_file().display(),
                process::tail(&self.log_file(), 30)
            ),
            Err(timeout) => {
                let _ = child.kill().await;
                Err(timeout.context(format!(
                    "the end of {}:\n{}",
                    self.log_file().display(),
                    process::tail(&self.log_file(), 30)
                )))
            }
        }
    }
}

impl Drop for TansuNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.start_kill();
        }
        process::remove_unless_kept(&self.dir);
    }
}
