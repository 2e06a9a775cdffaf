//! What the consumer loop records: each delivery's outcome, each handler call's duration,
//! and the waits for the rate limit that paces a consumer to its gateway. Called from
//! [`crate::consumer`], so every service's consumers are measured by the same code.
//!
//! These are the process's counters since it started — gone with a restart, as
//! Prometheus counters are meant to be (`rate()` copes with the reset). The counts that
//! must survive a restart (duplicates, dead letters, redeliveries for reconciliation) are
//! persisted in the service database by the consumer loop, apart from these.

use std::time::Duration;

use super::names::{self, label};

/// One delivery of `group` reached `outcome` (one of [`names::outcome`]).
pub fn delivery(group: &str, outcome: &'static str) {
    metrics::counter!(
        names::DELIVERIES,
        label::GROUP => group.to_owned(),
        label::OUTCOME => outcome,
    )
    .increment(1);
}

/// One handler call of `group` took `took` (a timed-out call: the timeout).
pub fn handler_call(group: &str, took: Duration) {
    metrics::histogram!(names::HANDLER_DURATION, label::GROUP => group.to_owned())
        .record(took.as_secs_f64());
}

/// A handler start of `group` waited `waited` for the consumer's rate limit. A start that
/// found its slot free is not a wait and is not counted.
pub fn rate_limit_wait(group: &str, waited: Duration) {
    if waited.is_zero() {
        return;
    }
    metrics::counter!(names::GATEWAY_RATE_LIMIT_WAITS, label::GROUP => group.to_owned())
        .increment(1);
    metrics::histogram!(names::GATEWAY_RATE_LIMIT_WAIT, label::GROUP => group.to_owned())
        .record(waited.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{install, scraped};

    #[test]
    fn a_free_slot_is_not_a_wait_and_waits_add_up_in_seconds() {
        let handle = install();
        let group = format!("waits-{}", uuid::Uuid::now_v7().simple());
        rate_limit_wait(&group, Duration::ZERO);
        rate_limit_wait(&group, Duration::from_millis(250));
        rate_limit_wait(&group, Duration::from_millis(750));
        let samples = scraped::parse(&handle.render()).unwrap();
        let of_group = [("group", group.as_str())];
        assert_eq!(
            scraped::sum(&samples, names::GATEWAY_RATE_LIMIT_WAITS, &of_group),
            Some(2.0)
        );
        let wait = |suffix: &str| {
            scraped::sum(
                &samples,
                &format!("{}{suffix}", names::GATEWAY_RATE_LIMIT_WAIT),
                &of_group,
            )
        };
        assert_eq!(wait("_count"), Some(2.0));
        assert_eq!(wait("_sum"), Some(1.0));
    }
}
