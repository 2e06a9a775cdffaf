//! `memory://name?drop=…&lose=…&duplicate=…&reorder=…&delay=…&delay_ms=…&seed=…&capacity=…`:
//! what a memory URL says — which named broker, which faults to inject, how many waiting
//! messages a group queue holds.

use std::time::Duration;

use super::{faults::Faults, group::DEFAULT_CAPACITY};
use crate::{BrokerError, Result};

/// Everything a `memory://` URL sets.
#[derive(Debug)]
pub(super) struct Settings {
    /// The broker's name (`default` for `memory://`).
    pub(super) name: String,
    /// The faults the handle injects.
    pub(super) faults: Faults,
    /// Waiting messages a group queue holds before `publish` waits for room. Only the
    /// handle that creates the named broker sets it; later handles share that broker.
    pub(super) capacity: usize,
}

/// The broker name and the query string of a memory URL.
pub(super) fn split_url(url: &str) -> (String, &str) {
    let rest = url.strip_prefix("memory://").unwrap_or(url);
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    let name = name.trim_matches('/');
    let name = if name.is_empty() { "default" } else { name };
    (name.to_owned(), query)
}

/// Parses a memory URL; an unknown parameter or a value out of range is an error that
/// names it.
pub(super) fn parse(url: &str) -> Result<Settings> {
    if !url.starts_with("memory://") {
        return Err(invalid(url, "a memory broker URL starts with memory://"));
    }
    let (name, query) = split_url(url);
    let mut faults = Faults {
        delay_max: Duration::from_millis(100),
        ..Faults::default()
    };
    let mut capacity = DEFAULT_CAPACITY;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (parameter, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid(url, &format!("`{pair}` is not parameter=value")))?;
        let probability = || -> Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| {
                    invalid(
                        url,
                        &format!("{parameter}={value}: a probability between 0 and 1"),
                    )
                })
        };
        let number = || -> Result<u64> {
            value
                .parse::<u64>()
                .map_err(|_| invalid(url, &format!("{parameter}={value}: a whole number")))
        };
        match parameter {
            "drop" => faults.drop = probability()?,
            "lose" => faults.lose = probability()?,
            "duplicate" => faults.duplicate = probability()?,
            "reorder" => faults.reorder = probability()?,
            "delay" => faults.delay = probability()?,
            "delay_ms" => faults.delay_max = Duration::from_millis(number()?),
            "seed" => faults.seed = Some(number()?),
            "capacity" => capacity = number()?.max(1) as usize,
            other => {
                return Err(invalid(
                    url,
                    &format!(
                        "unknown parameter `{other}` (known: drop, lose, duplicate, reorder, \
                         delay, delay_ms, seed, capacity)"
                    ),
                ))
            }
        }
    }
    Ok(Settings {
        name,
        faults,
        capacity,
    })
}

fn invalid(url: &str, reason: &str) -> BrokerError {
    BrokerError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryBroker;

    #[test]
    fn urls_name_brokers_and_faults() {
        let broker = MemoryBroker::from_url("memory://shop?duplicate=0.2&seed=7").unwrap();
        assert_eq!(broker.name(), "shop");
        assert_eq!(broker.faults().duplicate, 0.2);
        assert_eq!(broker.faults().seed, Some(7));
        assert_eq!(
            MemoryBroker::from_url("memory://").unwrap().name(),
            "default"
        );
        let error = MemoryBroker::from_url("memory://x?duplicat=0.2").unwrap_err();
        assert!(
            error.to_string().contains("unknown parameter `duplicat`"),
            "{error}"
        );
        let error = MemoryBroker::from_url("memory://x?drop=2").unwrap_err();
        assert!(error.to_string().contains("between 0 and 1"), "{error}");
    }
}
