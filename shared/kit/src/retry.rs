//! Retrying, written once: how long to wait before the next try, and how long to keep
//! trying a start-up step.
//!
//! Modelled on watermill's `middleware/retry.go`: a small value describes the policy
//! ([`RetryPolicy`]: how many attempts, the first delay, the growth, the cap, the jitter)
//! and the code that retries only asks it [`RetryPolicy::backoff`]. Three places use it:
//!
//! - the consumer loop ([`crate::consumer`]): a handler failing with `HandlerError::Retry`
//!   is redelivered after `backoff(attempt)`, and dead-lettered after `max_attempts`;
//! - the outbox relay ([`crate::outbox`]): after a failed publish it waits `backoff(failures)`
//!   before trying the unsent rows again (it never gives up on a committed row);
//! - [`retry_start_up_step`]: a service starting before its broker (a compose stack starts
//!   everything at once) tries to connect until its patience runs out.
//!
//! Why jitter: when a broker comes back, every consumer that failed against it retries.
//! Without jitter they all retry at the same instants (100 ms, 200 ms, 400 ms, …) and hit
//! the broker in waves; a random ± spread around each delay smooths the waves out.

use std::{future::Future, time::Duration};

use anyhow::Context;
use rand::Rng;
use tokio::time::Instant;

/// How a failing operation is retried: exponential backoff with a cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, before giving up (a consumer then
    /// dead-letters the message).
    pub max_attempts: u32,
    /// The wait after the first failed attempt.
    pub initial: Duration,
    /// The longest wait before jitter; growth stops here.
    pub max: Duration,
    /// How much each wait grows over the one before (2.0 doubles).
    pub multiplier: f64,
    /// The random spread around each wait, as a fraction: 0.2 makes a 1 s wait anything
    /// from 0.8 s to 1.2 s. 0.0 turns jitter off.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts; 100 ms, doubling, capped at 10 s; ± 20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based; 0 counts as 1):
    /// `initial × multiplier^(attempt − 1)`, capped at `max`, then spread by ± `jitter`.
    /// So the wait lies in `[d × (1 − jitter), d × (1 + jitter)]` where `d` is the capped
    /// delay; at the cap a wait may exceed `max` by the jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let delay = self.delay_before_jitter(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return delay;
        }
        let factor = 1.0 + rand::rng().random_range(-jitter..=jitter);
        delay.mul_f64(factor)
    }

    /// The exponential delay capped at `max`, before the jitter spreads it.
    fn delay_before_jitter(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        // An infinite or NaN product (a huge exponent) is past any cap.
        if grown.is_finite() && grown < self.max.as_secs_f64() {
            Duration::from_secs_f64(grown.max(0.0))
        } else {
            self.max
        }
    }
}

/// Runs a start-up `step` (connecting to the broker, say) until it succeeds, waiting
/// [`RetryPolicy::default`]'s backoff between tries, for at most `patience`.
///
/// The deadline is honoured: the last wait is cut short so that the last try starts at the
/// deadline, not a full backoff after it. When that try fails too, the error says `what`
/// was being done, how many tries were made, and the last error.
pub async fn retry_start_up_step<T, E, F, Fut>(
    what: &str,
    patience: Duration,
    mut step: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let policy = RetryPolicy::default();
    let deadline = Instant::now() + patience;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error: anyhow::Error = match step().await {
            Ok(value) => return Ok(value),
            Err(error) => error.into(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(error).with_context(|| {
                format!("{what}: still failing after {attempt} tries in {patience:?}")
            });
        }
        let pause = policy.backoff(attempt).min(left);
        tracing::warn!(
            error = format!("{error:#}"),
            attempt,
            ?pause,
            "{what}: not possible yet; retrying"
        );
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    use super::*;

    fn without_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_from_initial_and_caps_at_max() {
        let policy = without_jitter();
        let waits: Vec<Duration> = (1..=9).map(|attempt| policy.backoff(attempt)).collect();
        let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(
            millis,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        // Attempt 0 is treated as the first; a huge attempt number stays at the cap.
        assert_eq!(policy.backoff(0), Duration::from_millis(100));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_inside_its_band_and_does_spread() {
        let policy = RetryPolicy::default();
        for attempt in [1, 3, 8, 20] {
            let exact = without_jitter().backoff(attempt).as_secs_f64();
            let waits: Vec<f64> = (0..200)
                .map(|_| policy.backoff(attempt).as_secs_f64())
                .collect();
            for wait in &waits {
                assert!(
                    (exact * 0.8 - 1e-9..=exact * 1.2 + 1e-9).contains(wait),
                    "attempt {attempt}: {wait} s is outside {exact} s ± 20 %"
                );
            }
            let lowest = waits.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = waits.iter().copied().fold(0.0, f64::max);
            assert!(
                highest - lowest > exact * 0.1,
                "attempt {attempt}: 200 waits between {lowest} s and {highest} s are not spread"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_that_keeps_failing_gives_up_at_the_deadline() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let patience = Duration::from_secs(3);
        let error = retry_start_up_step("connecting to nowhere", patience, || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(anyhow::anyhow!("connection refused"))
        })
        .await
        .unwrap_err();
        // The paused clock moves only through the sleeps: the last try is at the deadline.
        assert_eq!(started.elapsed(), patience);
        // 100, 200, 400, 800 ms (± 20 %) take 1.2 to 1.8 s; the fifth wait (1.6 s ± 20 %)
        // either fits or is cut short at the deadline; one more try after each wait.
        let tries = tries.load(Ordering::Relaxed);
        assert!((6..=7).contains(&tries), "{tries} tries");
        let message = format!("{error:#}");
        assert!(
            message.contains("connecting to nowhere: still failing after")
                && message.contains("connection refused"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_step_that_recovers_returns_its_value_after_the_backoffs() {
        tokio::time::pause();
        let tries = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let task = tokio::spawn({
            let tries = tries.clone();
            retry_start_up_step("connecting", Duration::from_secs(60), move || {
                let attempt = tries.fetch_add(1, Ordering::Relaxed) + 1;
                async move {
                    if attempt < 3 {
                        Err(anyhow::anyhow!("not yet"))
                    } else {
                        Ok(attempt)
                    }
                }
            })
        });
        // The first try fails at once; the second waits its backoff (at least 80 ms).
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        assert_eq!(task.await.unwrap().unwrap(), 3);
        // Two waits: 100 ms and 200 ms, each ± 20 %.
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(240)..=Duration::from_millis(360)).contains(&waited),
            "{waited:?}"
        );
    }
}
