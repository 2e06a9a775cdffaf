//! Which brokers a test talks to.
//!
//! Tests find real brokers through environment variables that `scripts/test.sh` sets:
//!
//! | variable | example |
//! | --- | --- |
//! | `ORDERFLOW_AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | `ORDERFLOW_KAFKA_URL` | `kafka://127.0.0.1:19092` |
//! | `ORDERFLOW_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test` |
//!
//! When a variable is missing, a test outside CI skips with a message naming it; with
//! `CI=true` it panics, so a CI run without its brokers is red, never falsely green.

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// The value of `variable`, or `None` after printing why the caller skips. Under CI a
/// missing variable panics instead.
pub fn require(variable: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            let message = format!("{what} is not available: set {variable} (scripts/test.sh does)");
            if in_ci() {
                panic!("CI=true and {message}");
            }
            eprintln!("SKIPPED: {message}");
            None
        }
    }
}
