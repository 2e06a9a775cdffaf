//! Latency histograms (HdrHistogram) and the percentiles read from them.
//!
//! Every latency of a load run goes through [`LatencyHistogram`]: microseconds, three
//! significant digits, from 1 µs up to ten minutes. A value beyond that is recorded as the
//! maximum instead of being lost, so a stall never disappears from the tail.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency kept apart from the others, in microseconds (ten minutes).
const HIGHEST_US: u64 = 600_000_000;

/// A latency histogram.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(
            Histogram::new_with_bounds(1, HIGHEST_US, 3)
                .expect("1 µs to ten minutes at three digits are valid bounds"),
        )
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Adds every latency `other` recorded (the histograms share their bounds).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds add up");
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The quantile `q` (0.0–1.0) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The percentiles a reader compares.
    pub fn percentiles(&self) -> Percentiles {
        let max_ms = if self.0.is_empty() {
            0.0
        } else {
            self.0.max() as f64 / 1000.0
        };
        Percentiles {
            count: self.0.len(),
            p50_ms: round(self.quantile_ms(0.50)),
            p90_ms: round(self.quantile_ms(0.90)),
            p99_ms: round(self.quantile_ms(0.99)),
            p99_9_ms: round(self.quantile_ms(0.999)),
            max_ms: round(max_ms),
        }
    }
}

/// Milliseconds to three decimals (microseconds): what a histogram of µs can tell.
fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many latencies they summarise.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_request_in_a_thousand_shows_in_the_tail_not_the_median() {
        let mut histogram = LatencyHistogram::default();
        for _ in 0..999 {
            histogram.record(Duration::from_millis(2));
        }
        histogram.record(Duration::from_secs(3));
        let percentiles = histogram.percentiles();
        assert_eq!(percentiles.count, 1000);
        assert!((percentiles.p50_ms - 2.0).abs() < 0.01, "{percentiles:?}");
        assert!(percentiles.max_ms >= 2999.0, "{percentiles:?}");
        // A latency past the highest trackable value is kept as the highest.
        histogram.record(Duration::from_secs(3600));
        assert!(histogram.percentiles().max_ms >= 599_000.0);
    }
}
