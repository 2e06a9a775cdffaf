//! `broker-restart`: kill -9 of the broker node mid-run, then a restart on the same ports
//! and data. Everything the broker confirmed before the kill is on disk (durable queues
//! and persistent messages on RabbitMQ, SQLite storage on tansu) and must be delivered
//! after the restart; what it had not confirmed is still in the order service's outbox
//! and is published again; the services reconnect by themselves.

use super::{run::Fault, Setup};

/// In process: publishes that get no confirm (drop) and deliveries that come late (delay).
pub(crate) const MEMORY_FAULTS: &str = "drop=0.05&delay=0.1";

/// One copy of everything.
pub(crate) fn setup() -> Setup {
    Setup::default()
}

/// Kills the broker and starts it again.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    fault.node.kill9().await?;
    fault.note("kill -9 broker");
    fault.node.restart().await?;
    fault.note("broker restarted and accepting clients");
    Ok(())
}
