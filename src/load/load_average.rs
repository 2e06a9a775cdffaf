//! The machine's load average when a run starts, stated with every result and in every
//! chart's caption.
//!
//! The figures of a load test on a shared machine mean little without it: a p99 measured
//! while something else kept both cores busy is not the p99 of a quiet machine, and the
//! reader should be able to tell which one a chart shows.

use std::fmt;

use serde::Serialize;

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadAverage {
    /// Over the last minute.
    pub one_min: f64,
    /// Over the last 5 minutes.
    pub five_min: f64,
    /// Over the last 15 minutes.
    pub fifteen_min: f64,
}

impl LoadAverage {
    /// Reads `/proc/loadavg`; `None` where there is none (not Linux) or it cannot be read.
    pub fn now() -> Option<LoadAverage> {
        Self::parse(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }

    /// Parses the first three fields of a `/proc/loadavg` line, e.g.
    /// `0.52 0.58 0.59 1/123 4567`.
    pub fn parse(line: &str) -> Option<LoadAverage> {
        let mut fields = line.split_whitespace().map(str::parse::<f64>);
        Some(LoadAverage {
            one_min: fields.next()?.ok()?,
            five_min: fields.next()?.ok()?,
            fifteen_min: fields.next()?.ok()?,
        })
    }
}

impl fmt::Display for LoadAverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "load average {:.2} / {:.2} / {:.2} (1 / 5 / 15 min)",
            self.one_min, self.five_min, self.fifteen_min
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_averages_of_a_proc_loadavg_line() {
        let load = LoadAverage::parse("0.52 1.58 2.09 3/456 7890\n").unwrap();
        assert_eq!(
            load,
            LoadAverage {
                one_min: 0.52,
                five_min: 1.58,
                fifteen_min: 2.09
            }
        );
        assert_eq!(
            load.to_string(),
            "load average 0.52 / 1.58 / 2.09 (1 / 5 / 15 min)"
        );
        assert_eq!(LoadAverage::parse("0.52 1.58"), None);
        assert_eq!(LoadAverage::parse("high 1.58 2.09"), None);
    }
}
