//! `kill-order-relay`: the order service dies between the broker's confirm of an outbox
//! batch and the outbox mark — the one instant at which the relay's at-least-once is
//! visible: the batch is on the broker, the rows still say "unsent".
//!
//! The order service is stopped (SIGTERM), started again with the failpoint
//! `outbox-after-confirm` switched on (`FAILPOINTS=outbox-after-confirm=return`, compiled
//! in only with the order service's `failpoints` feature), which aborts the process right
//! there, and started once more without it. Its relay then publishes the confirmed batch a
//! second time; every consumer must recognise the copies (duplicates absorbed) and no
//! order may be charged, awarded or texted twice.

use std::time::Duration;

use super::{run::Fault, Setup};

/// The environment variable the `fail` crate reads, and the failpoint's setting.
pub(crate) const FAILPOINTS: (&str, &str) = ("FAILPOINTS", "outbox-after-confirm=return");

/// How long the order service may run with the failpoint before it must have hit it.
const HIT_WITHIN: Duration = Duration::from_secs(60);

/// In process: the relay republishing a confirmed batch is a duplicate publish; a
/// publish that got no confirm is retried (drop).
pub(crate) const MEMORY_FAULTS: &str = "duplicate=0.1&drop=0.05";

/// One copy of everything.
pub(crate) fn setup() -> Setup {
    Setup::default()
}

/// Stops the order service, runs it with the failpoint until it aborts, runs it without.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    crash_after_confirm(fault).await
}

/// The crash itself, shared with `all-at-once`.
pub(crate) async fn crash_after_confirm(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    let graceful = fault
        .stack
        .terminate("order", 0, Duration::from_secs(20))
        .await?;
    fault.note(format!(
        "order service stopped (SIGTERM{})",
        if graceful { "" } else { ", killed after 20 s" }
    ));
    fault
        .stack
        .set_service_env("order", FAILPOINTS.0, Some(FAILPOINTS.1));
    fault.stack.start_replica("order", 0)?;
    fault.note("order service started with failpoint outbox-after-confirm");
    let hit = fault.stack.wait_for_exit("order", 0, HIT_WITHIN).await?;
    fault.stack.set_service_env("order", FAILPOINTS.0, None);
    if !hit {
        fault.stack.kill("order", 0)?;
        fault.stack.restart("order", 0).await?;
        anyhow::bail!(
            "the order service ran {} s with {}={} and never hit it: build it with the \
             `failpoints` feature (cargo build -p orderflow-order --features failpoints)",
            HIT_WITHIN.as_secs(),
            FAILPOINTS.0,
            FAILPOINTS.1
        );
    }
    fault.note("order service aborted after the confirm, before the outbox mark");
    fault.stack.restart("order", 0).await?;
    fault.note("order service restarted without the failpoint and ready");
    Ok(())
}
