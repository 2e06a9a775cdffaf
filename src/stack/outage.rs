//! The logging service stopped and started again while the other four keep running — the
//! outage `orderflow load --logging-down` stages: wired through the queue, the order API
//! should not notice and the log's backlog drains when logging returns; wired
//! synchronously, every order request needs logging and fails while it is away.
//!
//! Both stacks stop it gracefully (in-flight handlers finish and ack, as on a deploy) and
//! start it again on the **same port and database**: the synchronous order service and the
//! load's *logged* checker know logging by its address, and what it stored before the
//! outage is still there afterwards.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;

use super::{wait_ready_at, InProcessStack, ProcessStack};

/// How long a stopped process gets to finish its work before SIGKILL.
const PROCESS_PATIENCE: Duration = Duration::from_secs(20);

impl InProcessStack {
    /// Stops the logging service (its task ends once its running handlers have acked);
    /// the other four keep running. Stopping it twice is a no-op.
    pub async fn stop_logging(&mut self) -> anyhow::Result<()> {
        self.logging_stop.cancel();
        let Some(index) = self.tasks.iter().position(|(name, _)| *name == "logging") else {
            return Ok(());
        };
        let (_, task) = self.tasks.remove(index);
        task.await
            .map_err(|error| anyhow::anyhow!("the logging task panicked: {error}"))?
            .context("the logging service failed while stopping")
    }

    /// Starts the logging service again on the port it had, and waits until it is ready.
    pub async fn restart_logging(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.tasks.iter().any(|(name, _)| *name == "logging"),
            "the logging service is running"
        );
        let address: SocketAddr = self
            .endpoints
            .logging
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("the logging address {}", self.endpoints.logging))?;
        let logging = self.build_logging(address).await?;
        self.logging_stop = self.shutdown.child_token();
        self.tasks.push((
            "logging",
            tokio::spawn(logging.run_until_stopped(self.logging_stop.clone())),
        ));
        wait_ready_at(&[&self.endpoints.logging]).await
    }
}

impl ProcessStack {
    /// Stops the logging service's copies with SIGTERM (SIGKILL after 20 s).
    pub async fn stop_logging(&mut self) -> anyhow::Result<()> {
        for replica in 0..self.replicas("logging") {
            self.terminate("logging", replica, PROCESS_PATIENCE).await?;
        }
        Ok(())
    }

    /// Starts the logging service's copies again on their ports and waits until they are
    /// ready.
    pub async fn restart_logging(&mut self) -> anyhow::Result<()> {
        for replica in 0..self.replicas("logging") {
            self.restart("logging", replica).await?;
        }
        Ok(())
    }
}
