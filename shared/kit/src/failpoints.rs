//! Failpoints for the chaos suite: named places in the code where a fault can be injected
//! on purpose, compiled in only with the kit's `failpoints` feature (the [`fail`] crate).
//!
//! | failpoint | where | what its action does |
//! | --- | --- | --- |
//! | `outbox-after-confirm` | the outbox relay, after the broker confirmed a batch and before it is marked sent | aborts the process (a `kill -9` at that instant) |
//!
//! They are switched on when a service starts, from the `FAILPOINTS` environment variable
//! in the `fail` crate's syntax: `FAILPOINTS=outbox-after-confirm=return` (several are
//! separated by `;`). A binary built without the feature refuses to start when
//! `FAILPOINTS` is set: a chaos run that believes it injects a fault the binary cannot
//! inject would prove nothing.
//!
//! ## Which builds carry them
//!
//! Never a release build: `cargo build --release` does not enable the feature. The test
//! builds do: `orderflow-order`'s dev-dependencies enable `orderflow-kit/failpoints`
//! (for `cargo test -p orderflow-order`), and the root crate's dev-dependencies enable
//! `orderflow-order/failpoints` (for `cargo test --workspace` and the root crate's tests).
//! Cargo unifies features per build, so every `*-service` binary a test build makes — the
//! ones the end-to-end and chaos tests start — has them.
//!
//! The variable is read with [`fail::cfg`], not `fail::FailScenario`: a scenario holds a
//! process-wide lock for its lifetime, and tests start many services in one process.

use std::sync::OnceLock;

/// The environment variable read at start.
pub const FAILPOINTS_VARIABLE: &str = "FAILPOINTS";

/// The failpoint between the broker's confirm and the outbox mark.
pub const OUTBOX_AFTER_CONFIRM: &str = "outbox-after-confirm";

/// Whether this build carries failpoints.
pub const fn compiled_in() -> bool {
    cfg!(feature = "failpoints")
}

/// Switches on the failpoints `FAILPOINTS` names. Runs once per process (every service
/// of an in-process stack calls it); later calls return the first call's result.
pub fn configure_from_env() -> anyhow::Result<()> {
    static CONFIGURED: OnceLock<Result<(), String>> = OnceLock::new();
    CONFIGURED
        .get_or_init(|| {
            let value = std::env::var(FAILPOINTS_VARIABLE).unwrap_or_default();
            configure(&value)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Switches on the failpoints in `spec` (`name=actions;name=actions`).
fn configure(spec: &str) -> Result<(), String> {
    let entries: Vec<&str> = spec
        .split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    if !compiled_in() {
        return Err(format!(
            "invalid {FAILPOINTS_VARIABLE}={spec:?}: this binary was built without the \
             failpoints feature (build it with `--features failpoints`, or a test build)"
        ));
    }
    for entry in entries {
        let Some((name, actions)) = entry.split_once('=') else {
            return Err(format!(
                "invalid {FAILPOINTS_VARIABLE}={spec:?}: `{entry}` is not name=actions"
            ));
        };
        set(name.trim(), actions.trim()).map_err(|reason| {
            format!("invalid {FAILPOINTS_VARIABLE}={spec:?}: {name}: {reason}")
        })?;
        tracing::warn!(
            failpoint = name.trim(),
            actions = actions.trim(),
            "failpoint switched on"
        );
    }
    Ok(())
}

#[cfg(feature = "failpoints")]
fn set(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions)
}

#[cfg(not(feature = "failpoints"))]
fn set(_name: &str, _actions: &str) -> Result<(), String> {
    unreachable!("configure refuses failpoints when they are not compiled in")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_variable_switches_nothing_on() {
        assert_eq!(configure(""), Ok(()));
        assert_eq!(configure(" ; "), Ok(()));
    }

    #[test]
    fn a_malformed_entry_names_the_variable() {
        let error = configure("outbox-after-confirm").unwrap_err();
        assert!(error.contains("FAILPOINTS"), "{error}");
    }
}
