//! What the fake gateways record about themselves: the requests they refused. A refusal
//! is the gateway's own limit speaking — the consumer in front of it is paced to the same
//! rate, so a steady count here means the pacing and the limit disagree (scaled copies
//! each have a bucket of their own, or a synchronous caller has no queue to wait in).

use super::names::{self, label};

/// `gateway` (e.g. `sms`) refused one request for `reason` (e.g. `rate_limited`).
pub fn refused(gateway: &'static str, reason: &'static str) {
    metrics::counter!(
        names::GATEWAY_REFUSALS,
        label::GATEWAY => gateway,
        label::REASON => reason,
    )
    .increment(1);
}
