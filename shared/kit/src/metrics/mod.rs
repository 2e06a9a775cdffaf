//! `GET /metrics` on every service, in the Prometheus text format, one concept per file:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `names.rs` | every series' name, labels, closed label values and histogram buckets ([`names`]) |
//! | `recorder.rs` | the process's one recorder, installed once ([`install`]); in one process (the in-process stack) the five services share it |
//! | `requests.rs` | HTTP requests counted and timed by route template ([`track_requests`]) |
//! | `deliveries.rs` | what the consumer loop records: outcomes, handler durations, rate-limit waits ([`deliveries`]) |
//! | `gateways.rs` | what the fake gateways record: their refusals ([`gateways`]) |
//! | `sampled.rs` | gauges read at scrape time: broker backlog per group, outbox rows pending ([`Sampled`]) |
//! | `endpoint.rs` | the `/metrics` route ([`metrics_routes`]) |
//! | `scraped.rs` | the text format read back into samples, for tests (`testkit` feature) |
//!
//! Every service gets all of it from [`crate::service::Service`]: the recorder is
//! installed when the service starts, and `/metrics` and the request layer are mounted
//! beside `/healthz` — no service has metrics code of its own beyond what it alone does
//! (the SMS gateway calls [`gateways::refused`]).
//!
//! The series, as `/metrics` shows them:
//!
//! ```text
//! orderflow_http_requests_total{service,route,method,status}      counter
//! orderflow_http_request_duration_seconds{service,route}          histogram
//! orderflow_deliveries_total{group,outcome}                       counter  consumed|acked|retried|dead_lettered|duplicate
//! orderflow_handler_duration_seconds{group}                       histogram
//! orderflow_backlog{group}                                        gauge    at scrape time
//! orderflow_outbox_pending{service}                               gauge    at scrape time
//! orderflow_gateway_rate_limit_waits_total{group}                 counter
//! orderflow_gateway_rate_limit_wait_seconds{group}                histogram
//! orderflow_gateway_refusals_total{gateway,reason}                counter
//! orderflow_metrics_sample_failures_total{sample}                 counter
//! ```
//!
//! Histograms have explicit buckets ([`names::DURATION_BUCKETS`]), the same in every
//! process, so Prometheus can add them up across replicas.

pub mod deliveries;
mod endpoint;
pub mod gateways;
pub mod names;
mod recorder;
mod requests;
mod sampled;
#[cfg(any(test, feature = "testkit"))]
pub mod scraped;

pub use endpoint::{metrics_routes, CONTENT_TYPE};
pub use recorder::install;
pub use requests::track_requests;
pub use sampled::{Sampled, SAMPLE_TIMEOUT};
