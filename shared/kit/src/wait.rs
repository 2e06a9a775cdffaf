//! Waiting for a condition with a deadline.
//!
//! Tests and the demo never sleep "long enough" for work to happen: they poll the thing
//! they expect with a short interval and give up with a clear message at a deadline.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Polls `check` every `interval` until it returns `Some`, or fails with `what` once
/// `timeout` has passed.
pub async fn until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = until(
            "three calls",
            Duration::from_secs(1),
            Duration::from_millis(10),
            || {
                calls += 1;
                let done = calls >= 3;
                async move { done.then_some(calls) }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_at_the_deadline_naming_what_it_waited_for() {
        let error = until(
            "never",
            Duration::from_millis(100),
            Duration::from_millis(10),
            || async { None::<()> },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("waiting for never"), "{error}");
    }
}
