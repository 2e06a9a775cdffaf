//! When each request is meant to be sent: the load profile (a base rate, an optional
//! burst) and the arrival process (evenly spaced or Poisson), turned into a list of
//! intended send times before the first request goes out.
//!
//! The times come from the profile's cumulative rate Λ(t) — how many requests should have
//! been sent by time t. The n-th request is due when Λ reaches n (uniform arrivals) or when
//! it reaches the sum of n exponential(1) draws (Poisson arrivals: the time-rescaling
//! theorem turns a unit-rate Poisson process into one of any rate profile). Either way the
//! rate changes exactly at the burst's edges, and a fixed `--seed` gives the same schedule
//! every run.

use std::{fmt, str::FromStr, time::Duration};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;

/// How requests are spread within a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced: exactly 1/rate apart.
    Uniform,
    /// A Poisson process: exponential gaps, as independent customers arrive.
    Poisson,
}

impl Arrivals {
    /// `uniform` or `poisson`.
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Uniform => "uniform",
            Arrivals::Poisson => "poisson",
        }
    }
}

/// A flash sale: `multiplier` times the base rate for `length`, from `start` on
/// (`--burst 10x:10s@20s`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Burst {
    /// How many times the base rate.
    pub multiplier: f64,
    /// How long the burst lasts.
    #[serde(rename = "length_s", serialize_with = "seconds")]
    pub length: Duration,
    /// When it starts, from the start of the run.
    #[serde(rename = "start_s", serialize_with = "seconds")]
    pub start: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl FromStr for Burst {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = "expected MULTIPLIERx:LENGTH@START, e.g. 10x:10s@20s";
        let (multiplier, rest) = text
            .split_once("x:")
            .ok_or_else(|| format!("`{text}`: {shape}"))?;
        let (length, start) = rest
            .split_once('@')
            .ok_or_else(|| format!("`{text}`: {shape}"))?;
        let multiplier: f64 = multiplier
            .trim()
            .parse()
            .map_err(|_| format!("`{multiplier}` is not a number: {shape}"))?;
        if !(multiplier.is_finite() && multiplier > 0.0) {
            return Err(format!("the multiplier must be positive: {shape}"));
        }
        let length = parse_duration(length)?;
        if length.is_zero() {
            return Err(format!("the burst must last longer than 0 s: {shape}"));
        }
        Ok(Burst {
            multiplier,
            length,
            start: parse_duration(start)?,
        })
    }
}

impl fmt::Display for Burst {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}x for {} s from {} s",
            self.multiplier,
            self.length.as_secs_f64(),
            self.start.as_secs_f64()
        )
    }
}

/// `40s`, `2m`, `500ms` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 40s, 2m, 500ms)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!("`{text}` is not a duration of 0 s or more"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What load to offer: the base rate for `duration`, with an optional burst.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    /// Requests per second outside the burst.
    pub rate_per_s: f64,
    /// How long requests are sent.
    #[serde(rename = "duration_s", serialize_with = "seconds")]
    pub duration: Duration,
    /// The burst, if any.
    pub burst: Option<Burst>,
}

impl Profile {
    /// The burst clipped to the run: `(start, end)` in seconds, `None` without one.
    fn burst_window(&self) -> Option<(f64, f64)> {
        let burst = self.burst?;
        let end_of_run = self.duration.as_secs_f64();
        let start = burst.start.as_secs_f64().min(end_of_run);
        let end = (start + burst.length.as_secs_f64()).min(end_of_run);
        Some((start, end))
    }

    /// Whether `at` (from the start of the run) falls inside the burst.
    pub fn in_burst(&self, at: Duration) -> bool {
        let at = at.as_secs_f64();
        self.burst_window()
            .is_some_and(|(start, end)| at >= start && at < end)
    }

    /// The offered rate at `at`, requests per second.
    pub fn rate_at(&self, at: Duration) -> f64 {
        match self.burst {
            Some(burst) if self.in_burst(at) => self.rate_per_s * burst.multiplier,
            _ => self.rate_per_s,
        }
    }

    /// Λ⁻¹: the time by which `count` requests should have been sent, `None` past the end.
    fn time_of_count(&self, count: f64) -> Option<f64> {
        let base = self.rate_per_s;
        let (start, end, burst_rate) = match (self.burst_window(), self.burst) {
            (Some((start, end)), Some(burst)) => (start, end, base * burst.multiplier),
            _ => (0.0, 0.0, base),
        };
        let before_burst = base * start;
        let in_burst = burst_rate * (end - start);
        let at = if count < before_burst {
            count / base
        } else if count < before_burst + in_burst {
            start + (count - before_burst) / burst_rate
        } else {
            end + (count - before_burst - in_burst) / base
        };
        (at < self.duration.as_secs_f64()).then_some(at)
    }

    /// Every intended send time, from the start of the run, in order.
    pub fn intended_times(&self, arrivals: Arrivals, seed: u64) -> Vec<Duration> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut times = Vec::new();
        let mut count = 0.0;
        loop {
            count += match arrivals {
                // The first request goes at once, then one per 1/rate.
                Arrivals::Uniform if times.is_empty() => 0.0,
                Arrivals::Uniform => 1.0,
                // An exponential(1) draw; 1 - u is in (0, 1], so the logarithm is finite.
                Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln(),
            };
            match self.time_of_count(count) {
                Some(at) => times.push(Duration::from_secs_f64(at)),
                None => return times,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(rate: f64, seconds: u64, burst: Option<&str>) -> Profile {
        Profile {
            rate_per_s: rate,
            duration: Duration::from_secs(seconds),
            burst: burst.map(|burst| burst.parse().unwrap()),
        }
    }

    #[test]
    fn a_burst_reads_multiplier_length_and_start() {
        let burst: Burst = "10x:10s@20s".parse().unwrap();
        assert_eq!(burst.multiplier, 10.0);
        assert_eq!(burst.length, Duration::from_secs(10));
        assert_eq!(burst.start, Duration::from_secs(20));
        assert!("10:10s@20s".parse::<Burst>().is_err());
        assert!("0x:10s@20s".parse::<Burst>().is_err());
        assert!("2x:10q@20s".parse::<Burst>().is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn uniform_arrivals_are_evenly_spaced_and_the_burst_multiplies_the_rate() {
        let times = profile(10.0, 3, Some("5x:1s@1s")).intended_times(Arrivals::Uniform, 1);
        // 10 in the first second, 50 in the burst second, 10 in the last.
        let in_second = |second: u64| times.iter().filter(|at| at.as_secs() == second).count();
        assert_eq!(
            (in_second(0), in_second(1), in_second(2)),
            (10, 50, 10),
            "{times:?}"
        );
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(times[1] - times[0], Duration::from_millis(100));
    }

    #[test]
    fn poisson_arrivals_average_the_rate_and_repeat_with_the_seed() {
        let profile = profile(1000.0, 10, None);
        let times = profile.intended_times(Arrivals::Poisson, 7);
        let relative_error = (times.len() as f64 - 10_000.0).abs() / 10_000.0;
        assert!(relative_error < 0.05, "{} arrivals", times.len());
        assert_eq!(times, profile.intended_times(Arrivals::Poisson, 7));
        assert_ne!(times, profile.intended_times(Arrivals::Poisson, 8));
    }
}
