//! `kill-consumers`: kill -9 of each consumer service in turn — payment, points, SMS,
//! logging — mid-run, each started again on its port and database at once.
//!
//! What a crash leaves: deliveries taken but not acked go back to the group and are
//! handled after the restart; a handler that committed its effect but died before the ack
//! sees its message again and recognises it (a duplicate absorbed, not a second effect).

use super::{run::Fault, Setup, CONSUMERS};

/// In process: a crash is a redelivery of what was in flight, so duplicate deliveries.
pub(crate) const MEMORY_FAULTS: &str = "duplicate=0.2";

/// One copy of everything.
pub(crate) fn setup() -> Setup {
    Setup::default()
}

/// Kills and restarts each consumer service, one after the other.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    for service in CONSUMERS {
        fault.stack.kill(service, 0)?;
        fault.note(format!("kill -9 {service}"));
        fault.stack.restart(service, 0).await?;
        fault.note(format!("{service} restarted and ready"));
    }
    Ok(())
}
