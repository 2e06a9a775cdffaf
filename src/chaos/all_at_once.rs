//! `all-at-once`: every fault of the suite in one window while orders stream in — the order
//! service's crash between the broker's confirm and the outbox mark, poison mixed in, the
//! network cut, consumers killed while it is cut, the broker killed and restarted, a
//! rolling restart of two copies. Back to back, overlapping where they can (the services
//! killed during the cut come back while the broker is still recovering).
//!
//! The order service's crash comes first: the failpoint fires on the relay's next
//! confirmed batch, so it needs orders still arriving (the ones the client retried while
//! the order service was down are enough), which at the end of the window they may not be.

use super::{kill_order_relay, network_cut, rolling_restart, run::Fault, Setup};

/// In process: all of the embedded broker's faults together, plus the poison.
pub(crate) const MEMORY_FAULTS: &str = "duplicate=0.1&drop=0.05&reorder=0.1&delay=0.1";

/// Two copies of each consumer, order and payment behind the proxy, one poison message
/// per hundred orders (at least five).
pub(crate) fn setup(orders: usize) -> Setup {
    Setup {
        consumer_replicas: 2,
        proxied: network_cut::setup().proxied,
        poison: (orders / 100).max(5),
    }
}

/// The whole list, in one window.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    kill_order_relay::crash_after_confirm(fault).await?;
    let poison = fault.poison;
    fault.publish_poison(poison / 2).await?;
    let proxy = fault
        .proxy
        .ok_or_else(|| anyhow::anyhow!("all-at-once needs the run's proxy"))?;
    proxy.cut();
    fault.note("network cut between services and broker");
    fault.stack.kill("sms", 0)?;
    fault.note("kill -9 sms-1");
    fault.stack.kill("points", 1)?;
    fault.note("kill -9 points-2");
    tokio::time::sleep(network_cut::CUT_FOR / 2).await;
    fault.node.kill9().await?;
    fault.note("kill -9 broker");
    proxy.restore();
    fault.note("network restored");
    fault.node.restart().await?;
    fault.note("broker restarted and accepting clients");
    fault.stack.restart("sms", 0).await?;
    fault.stack.restart("points", 1).await?;
    fault.note("sms-1 and points-2 restarted and ready");
    fault.publish_poison(poison - poison / 2).await?;
    rolling_restart::restart_copies(fault, "payment").await?;
    rolling_restart::restart_copies(fault, "logging").await
}
