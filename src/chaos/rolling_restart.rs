//! `rolling-restart`: two copies of each consumer service, and a rolling restart of all
//! of them — SIGTERM one copy, wait for it to exit, start it again, wait until it is
//! ready, next — while orders stream in, as a deployment does it.
//!
//! A graceful stop stops taking deliveries, lets the running handlers finish and ack,
//! then exits; the other copy takes the group's work meanwhile. Nothing the stopped copy
//! finished may be handled again as a second effect, nothing it held may be lost.

use std::time::Duration;

use super::{run::Fault, Setup, CONSUMERS};

/// How long a copy may take to stop gracefully before it is killed (and the ledger's
/// timeline says so).
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// In process: a handover between consumers shows as duplicates and reordering.
pub(crate) const MEMORY_FAULTS: &str = "duplicate=0.1&reorder=0.1";

/// Two copies of each consumer service.
pub(crate) fn setup() -> Setup {
    Setup {
        consumer_replicas: 2,
        ..Setup::default()
    }
}

/// Restarts every copy of every consumer service, one at a time.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    for service in CONSUMERS {
        restart_copies(fault, service).await?;
    }
    Ok(())
}

/// SIGTERM and restart of each copy of `service`, one after the other.
pub(crate) async fn restart_copies(fault: &mut Fault<'_>, service: &str) -> anyhow::Result<()> {
    for replica in 0..fault.stack.replicas(service) {
        let graceful = fault
            .stack
            .terminate(service, replica, STOP_PATIENCE)
            .await?;
        fault.note(format!(
            "SIGTERM {service}-{}: {}",
            replica + 1,
            if graceful {
                "exited by itself"
            } else {
                "did not exit in time, killed"
            }
        ));
        fault.stack.restart(service, replica).await?;
        fault.note(format!("{service}-{} restarted and ready", replica + 1));
    }
    Ok(())
}
