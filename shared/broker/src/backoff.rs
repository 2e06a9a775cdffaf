//! The backends' own backoff: how long a backend waits before reconnecting to its broker
//! or publishing again after a lost connection. Internal to the crate; what a *service*
//! does about a failing handler or a broker that is not up yet is its own policy
//! (`orderflow_kit::retry::RetryPolicy`).

use std::time::Duration;

/// The wait before reconnect or republish attempt number `attempt` (1-based): 100 ms,
/// doubling, capped at 10 s.
pub(crate) fn retry_backoff(attempt: u32) -> Duration {
    let millis = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(millis.min(10_000))
}

#[cfg(test)]
mod tests {
    use super::retry_backoff;
    use std::time::Duration;

    #[test]
    fn doubles_from_100_ms_and_caps_at_10_s() {
        assert_eq!(retry_backoff(1), Duration::from_millis(100));
        assert_eq!(retry_backoff(2), Duration::from_millis(200));
        assert_eq!(retry_backoff(4), Duration::from_millis(800));
        assert_eq!(retry_backoff(8), Duration::from_secs(10));
        assert_eq!(retry_backoff(u32::MAX), Duration::from_secs(10));
    }
}
