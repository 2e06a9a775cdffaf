//! Every series the services export, named once: the names, their labels, the label values
//! that are a closed set, and the histogram buckets.
//!
//! One place for the names keeps the code that records a series, the Prometheus
//! configuration, the Grafana dashboard and the tests spelling it the same way (the
//! dashboard test in `tests/compose.rs` reads this file). Conventions are Prometheus's:
//! an `orderflow_` prefix, base units in the name (`_seconds`), `_total` on counters, and
//! labels whose values are a small closed set — a route *template* (`/orders/{id}`), never
//! a raw path, and a consumer group, never a message id — so that the number of series
//! stays bounded however much traffic there is.

/// Counter, `{service, route, method, status}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "orderflow_http_requests_total";
/// Histogram, `{service, route}`: time from the request's arrival to its answer.
pub const HTTP_REQUEST_DURATION: &str = "orderflow_http_request_duration_seconds";
/// Counter, `{group, outcome}`: what the consumer loop did with deliveries
/// (see [`outcome`]).
pub const DELIVERIES: &str = "orderflow_deliveries_total";
/// Histogram, `{group}`: one handler call, from its start to its return (or its timeout).
pub const HANDLER_DURATION: &str = "orderflow_handler_duration_seconds";
/// Gauge, `{group}`: messages waiting for the group in the broker (queue depth, consumer
/// lag, memory queue length), sampled at scrape time.
pub const BACKLOG: &str = "orderflow_backlog";
/// Gauge, `{service}`: outbox rows committed but not yet published, sampled at scrape time.
pub const OUTBOX_PENDING: &str = "orderflow_outbox_pending";
/// Counter, `{sample}`: scrape-time samples that failed or timed out (the gauge then keeps
/// its last value; see `sampled.rs`).
pub const SAMPLE_FAILURES: &str = "orderflow_metrics_sample_failures_total";
/// Counter, `{group}`: handler starts that had to wait for the rate limit that paces a
/// consumer to its downstream gateway (the SMS gateway's rate).
pub const GATEWAY_RATE_LIMIT_WAITS: &str = "orderflow_gateway_rate_limit_waits_total";
/// Histogram, `{group}`: how long each of those waits was. Its `_sum` is the seconds
/// spent waiting (`rate()` of it: the share of time the consumer was held back); a
/// histogram rather than a counter of seconds because `metrics` counters count integers.
pub const GATEWAY_RATE_LIMIT_WAIT: &str = "orderflow_gateway_rate_limit_wait_seconds";
/// Counter, `{gateway, reason}`: requests a fake gateway refused (over its own limit).
pub const GATEWAY_REFUSALS: &str = "orderflow_gateway_refusals_total";

/// Every series above, for the tests that check the dashboard and the scrape.
pub const ALL: [&str; 10] = [
    HTTP_REQUESTS,
    HTTP_REQUEST_DURATION,
    DELIVERIES,
    HANDLER_DURATION,
    BACKLOG,
    OUTBOX_PENDING,
    SAMPLE_FAILURES,
    GATEWAY_RATE_LIMIT_WAITS,
    GATEWAY_RATE_LIMIT_WAIT,
    GATEWAY_REFUSALS,
];

/// The histograms among them, each given [`DURATION_BUCKETS`].
pub const HISTOGRAMS: [&str; 3] = [
    HTTP_REQUEST_DURATION,
    HANDLER_DURATION,
    GATEWAY_RATE_LIMIT_WAIT,
];

/// Label names.
pub mod label {
    /// The service that answered or sampled (`order`, `payment`, …). Prometheus adds
    /// `job` and `instance` at scrape time; this one is what tells the five services apart
    /// when they share one process's registry (the in-process stack).
    pub const SERVICE: &str = "service";
    /// The route template that matched (`/orders/{id}`), or [`super::UNMATCHED_ROUTE`].
    pub const ROUTE: &str = "route";
    /// The HTTP method.
    pub const METHOD: &str = "method";
    /// The HTTP status code.
    pub const STATUS: &str = "status";
    /// The consumer group.
    pub const GROUP: &str = "group";
    /// What happened to a delivery ([`super::outcome`]).
    pub const OUTCOME: &str = "outcome";
    /// Which scrape-time sample failed.
    pub const SAMPLE: &str = "sample";
    /// Which fake gateway.
    pub const GATEWAY: &str = "gateway";
    /// Why a gateway refused.
    pub const REASON: &str = "reason";
}

/// The `route` of a request no route matched: one series for every unknown path, so a
/// scanner trying a thousand URLs makes one series, not a thousand.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The values of `outcome` on [`DELIVERIES`]. `consumed` counts every delivery a handler
/// was started for; each then ends as `acked`, `retried` or `dead_lettered` (or is cut
/// short by a stop, and delivered again). `duplicate` is the part of `acked` an idempotent
/// handler recognised as already processed — redeliveries made harmless.
pub mod outcome {
    /// Taken from the broker and handed to the handler (or found undecodable).
    pub const CONSUMED: &str = "consumed";
    /// Settled with an ack: the effect is committed (or there was nothing to do).
    pub const ACKED: &str = "acked";
    /// Handed back for a later attempt, with backoff.
    pub const RETRIED: &str = "retried";
    /// Sent to `<group>.dlq`.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Recognised as processed before; acked without a second effect.
    pub const DUPLICATE: &str = "duplicate";

    /// Every outcome.
    pub const ALL: [&str; 5] = [CONSUMED, ACKED, RETRIED, DEAD_LETTERED, DUPLICATE];
}

/// The buckets of every duration histogram, in seconds: 1 ms to 30 s (the default handler
/// timeout). Explicit and the same on every replica, so that a `sum by (le)` across
/// replicas is a correct histogram of the whole service — a summary's quantiles could not
/// be added up that way.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers a help text for every series, shown as `# HELP` in `/metrics`.
pub(super) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template"
    );
    describe_counter!(
        DELIVERIES,
        "Deliveries by outcome: consumed, then acked, retried or dead_lettered; duplicate is part of acked"
    );
    describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "Time one handler call took"
    );
    describe_gauge!(
        BACKLOG,
        "Messages waiting for the consumer group in the broker, sampled at scrape time"
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Outbox rows committed but not yet published, sampled at scrape time"
    );
    describe_counter!(
        SAMPLE_FAILURES,
        "Scrape-time samples that failed or timed out (the gauge kept its last value)"
    );
    describe_counter!(
        GATEWAY_RATE_LIMIT_WAITS,
        "Handler starts that waited for the rate limit pacing the consumer to its gateway"
    );
    describe_histogram!(
        GATEWAY_RATE_LIMIT_WAIT,
        Unit::Seconds,
        "How long a handler start waited for the rate limit pacing the consumer to its gateway"
    );
    describe_counter!(
        GATEWAY_REFUSALS,
        "Requests a fake gateway refused, by reason"
    );
}
