//! # orderflow-sms
//!
//! The SMS service: consumes `payment.succeeded`, sends "your order … is paid" through a
//! fake SMS gateway that is slow and rate-limited, and publishes `sms.sent` — one SMS per
//! order, however often the payment event arrives and however many copies of the service
//! run (`docker-compose up --scale sms=3`: each row records which instance sent it).
//!
//! It is the peak-shaving example: orders arrive in bursts, the gateway accepts only so many
//! texts a second, and the consumer is paced to that rate so the queue absorbs the burst.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | settings: the common ones plus gateway latency, rate limit and instance name |
//! | [`gateway`] | the fake SMS gateway: latency, a token-bucket rate limit, retryable refusals, an idempotency key, its own books of the texts it dispatched |
//! | [`store`] | the `sms_messages` table: one row per order |
//! | [`handlers`] | what happens on `payment.succeeded` |
//! | [`routes`] | `GET /sms?order_id=`, `GET /internal/reconcile` |
//! | [`startup`] | [`startup::build`]: what it consumes and serves, as the kit's [`startup::Application`] |
//!
//! Run it alone with `cargo run -p orderflow-sms --bin sms-service`, or with the other four
//! through `orderflow demo`.

pub mod config;
pub mod gateway;
pub mod handlers;
pub mod routes;
pub mod startup;
pub mod store;
