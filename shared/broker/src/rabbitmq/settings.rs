//! What this backend reads from an `amqp://` URL itself, before lapin sees the rest:
//! `publish_timeout_ms`, how long a publish may wait for the broker's answer.

use std::time::Duration;

use crate::{BrokerError, Result};

/// How long a publish waits for its confirms unless the URL says otherwise.
pub(super) const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The URL parameter that sets the publish timeout, in milliseconds.
const PUBLISH_TIMEOUT_PARAMETER: &str = "publish_timeout_ms";

/// The settings of one broker handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    /// The URL for lapin: the given one without this backend's own parameters.
    pub(super) lapin_url: String,
    /// How long `publish` waits (for a channel, for its confirms) before failing.
    pub(super) publish_timeout: Duration,
}

/// Splits `url` into what lapin reads and this backend's own settings.
pub(super) fn parse(url: &str, redacted: impl Fn() -> String) -> Result<Settings> {
    let invalid = |reason: String| BrokerError::InvalidUrl {
        url: redacted(),
        reason,
    };
    let mut parsed = url::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    let mut publish_timeout = DEFAULT_PUBLISH_TIMEOUT;
    let mut others = Vec::new();
    for (name, value) in parsed.query_pairs() {
        if name == PUBLISH_TIMEOUT_PARAMETER {
            let millis: u64 = value.parse().map_err(|_| {
                invalid(format!(
                    "{PUBLISH_TIMEOUT_PARAMETER} must be a whole number of milliseconds, not `{value}`"
                ))
            })?;
            if millis == 0 {
                return Err(invalid(format!(
                    "{PUBLISH_TIMEOUT_PARAMETER} must be above 0"
                )));
            }
            publish_timeout = Duration::from_millis(millis);
        } else {
            others.push((name.into_owned(), value.into_owned()));
        }
    }
    if others.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(others);
    }
    Ok(Settings {
        lapin_url: parsed.into(),
        publish_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<Settings> {
        parse(url, || url.to_owned())
    }

    #[test]
    fn the_publish_timeout_comes_from_the_url_and_lapin_never_sees_it() {
        let plain = settings("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(plain.publish_timeout, DEFAULT_PUBLISH_TIMEOUT);
        assert_eq!(plain.lapin_url, "amqp://guest:guest@127.0.0.1:5672/%2f");

        let set =
            settings("amqp://guest:guest@h:5672/%2f?heartbeat=10&publish_timeout_ms=1500").unwrap();
        assert_eq!(set.publish_timeout, Duration::from_millis(1500));
        assert_eq!(set.lapin_url, "amqp://guest:guest@h:5672/%2f?heartbeat=10");

        let only = settings("amqp://h/%2f?publish_timeout_ms=20").unwrap();
        assert_eq!(only.lapin_url, "amqp://h/%2f");
    }

    #[test]
    fn a_publish_timeout_that_is_no_duration_is_refused() {
        for bad in ["soon", "-1", "0", ""] {
            let error = settings(&format!("amqp://h/%2f?publish_timeout_ms={bad}")).unwrap_err();
            assert!(
                matches!(&error, BrokerError::InvalidUrl { reason, .. } if reason.contains("publish_timeout_ms")),
                "{bad}: {error:?}"
            );
        }
    }
}
