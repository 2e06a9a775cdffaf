//! `network-cut`: the TCP path between services and the broker cut for a while, then
//! restored ([`super::proxy::Proxy`]). On RabbitMQ the order service (its relay publishes)
//! and the payment service (consumes and publishes) dial the broker through the proxy;
//! on Kafka every service does, because a Kafka client talks to the address the broker
//! advertises, and the run's broker advertises the proxy.
//!
//! The cut closes their live connections mid-stream (unacked deliveries go back to the
//! group, unconfirmed publishes fail and stay in the outbox) and refuses new ones until
//! the restore; then the clients reconnect by themselves.

use std::time::Duration;

use super::{run::Fault, Setup};

/// How long the network stays cut. The duration of the fault itself, not a wait for work.
pub(crate) const CUT_FOR: Duration = Duration::from_secs(5);

/// In process: publishes lost on the way (no confirm) and deliveries held up.
pub(crate) const MEMORY_FAULTS: &str = "drop=0.1&delay=0.2";

/// Order and payment behind the proxy (every service on Kafka, see the module doc).
pub(crate) fn setup() -> Setup {
    Setup {
        proxied: vec!["order", "payment"],
        ..Setup::default()
    }
}

/// Cuts, waits, restores.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    let proxy = fault
        .proxy
        .ok_or_else(|| anyhow::anyhow!("network-cut needs the run's proxy"))?;
    proxy.cut();
    fault.note("network cut between services and broker");
    tokio::time::sleep(CUT_FOR).await;
    let refused = proxy.refused();
    proxy.restore();
    fault.note(format!(
        "network restored ({refused} connection attempts refused while cut)"
    ));
    Ok(())
}
