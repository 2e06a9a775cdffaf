//! # orderflow-kit
//!
//! What every orderflow service needs, written once so that the five services contain
//! only what is particular to them:
//!
//! | module | what it gives a service |
//! | --- | --- |
//! | [`config`] | settings from environment variables with the same names everywhere; a bad value is a start-up error naming the variable |
//! | [`telemetry`] | tracing set-up, human or JSON; the order id as correlation id on every line about an order |
//! | [`shutdown`] | Ctrl-C / SIGTERM turned into a cancellation token |
//! | [`db`] | a connection pool to PostgreSQL or SQLite with one SQL dialect shim; `sqlx::migrate!` sets from each crate's `migrations/{postgres,sqlite}` |
//! | [`idempotency`] | "this message id was processed" in the same transaction as the effect |
//! | [`outbox`] | events written in the business transaction, published by a relay after commit (one replica at a time, by lease); sent rows and processed ids pruned after the retention window |
//! | [`failpoints`] | named fault-injection points for the chaos suite, compiled in only with the `failpoints` feature, switched on by `FAILPOINTS` |
//! | [`consumer`] | the consumer loop: bounded concurrency, per-key order, rate limit, retry with backoff, dead letters |
//! | [`retry`] | the retry policy (exponential backoff, cap, jitter) and retrying a start-up step until a deadline |
//! | [`http`] | JSON errors, the [`http::JsonBody`] extractor (refusals name the field), `/healthz` and `/readyz` (not ready while the database or broker is down), serving a router with a span per request |
//! | [`metrics`] | `GET /metrics` in the Prometheus text format: the one recorder per process, HTTP requests by route, consumer outcomes and handler durations, backlog and outbox gauges read at scrape time |
//! | [`service`] | the life of a service written once: [`service::Service`] (connect, migrate, consume, serve, stop) and the [`service::Application`] shell every `startup::build` returns |
//! | [`wait`], [`testenv`] | waiting on conditions with deadlines; finding brokers in tests |
//! | `testkit` (feature) | one service per test: its own broker and database, HTTP and broker helpers |

pub mod config;
pub mod consumer;
pub mod db;
pub mod failpoints;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod testenv;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod wait;
