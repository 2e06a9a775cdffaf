//! The fake SMS gateway.
//!
//! There is no real SMS provider to run on a developer machine, so this stands in for one
//! with the two properties that shape the service around it:
//!
//! - **latency**: accepting a text takes [`SmsGatewaySettings::latency`];
//! - **a rate limit**: a token bucket holding one second's worth of texts, refilled at
//!   [`SmsGatewaySettings::rate_per_s`]. A text over the limit is refused with
//!   [`GatewayError::RateLimited`] — retryable, as a real provider's HTTP 429 is.
//!
//! The consumer loop is paced to the same rate (`rate_per_s` in the consumer options), so
//! in normal operation the gateway never refuses: the burst waits in the queue instead of
//! bouncing off the gateway. The bucket is per process; scaled copies each have their own.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// How the fake gateway behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsGatewaySettings {
    /// Time to accept one text.
    pub latency: Duration,
    /// Texts accepted per second, on average.
    pub rate_per_s: f64,
}

impl Default for SmsGatewaySettings {
    fn default() -> Self {
        SmsGatewaySettings {
            latency: Duration::from_millis(10),
            rate_per_s: 50.0,
        }
    }
}

/// Why the gateway did not accept a text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// Over the rate limit; try again later.
    #[error("SMS gateway rate limit ({rate_per_s}/s) exceeded; try again later")]
    RateLimited {
        /// The limit.
        rate_per_s: f64,
    },
}

/// A token bucket: `capacity` tokens, refilled continuously at `rate` per second.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        // One second's worth, and at least one token so a rate below 1/s still sends.
        let capacity = rate.max(1.0);
        TokenBucket {
            capacity,
            rate,
            tokens: capacity,
            refilled_at: Instant::now(),
        }
    }

    fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The fake gateway.
#[derive(Debug)]
pub struct SmsGateway {
    settings: SmsGatewaySettings,
    bucket: Mutex<TokenBucket>,
    accepted: AtomicU64,
}

impl SmsGateway {
    /// A gateway with a full bucket.
    pub fn new(settings: SmsGatewaySettings) -> Self {
        let bucket = Mutex::new(TokenBucket::new(settings.rate_per_s));
        SmsGateway {
            settings,
            bucket,
            accepted: AtomicU64::new(0),
        }
    }

    /// Hands `text` for `phone` to the gateway; returns when it was accepted.
    pub async fn send(&self, phone: &str, text: &str) -> Result<DateTime<Utc>, GatewayError> {
        let admitted = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take();
        if !admitted {
            return Err(GatewayError::RateLimited {
                rate_per_s: self.settings.rate_per_s,
            });
        }
        tokio::time::sleep(self.settings.latency).await;
        self.accepted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(phone, text, "SMS gateway accepted a text");
        Ok(Utc::now())
    }

    /// Texts accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refuses_over_the_rate_and_recovers_as_the_bucket_refills() {
        let gateway = SmsGateway::new(SmsGatewaySettings {
            latency: Duration::from_millis(10),
            rate_per_s: 5.0,
        });
        for _ in 0..5 {
            gateway.send("+86", "hi").await.unwrap();
        }
        // 50 ms of latency refilled a quarter of a token: still empty.
        assert_eq!(
            gateway.send("+86", "hi").await,
            Err(GatewayError::RateLimited { rate_per_s: 5.0 })
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        gateway.send("+86", "hi").await.unwrap();
        assert_eq!(gateway.accepted(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_sender_is_never_refused() {
        let gateway = SmsGateway::new(SmsGatewaySettings {
            latency: Duration::ZERO,
            rate_per_s: 10.0,
        });
        for _ in 0..100 {
            gateway.send("+86", "hi").await.unwrap();
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(gateway.accepted(), 100);
    }
}
