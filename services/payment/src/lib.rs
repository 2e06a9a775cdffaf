//! # orderflow-payment
//!
//! The payment service: consumes `order.placed`, asks a simulated payment gateway to charge
//! the order, and publishes `payment.succeeded` or `payment.failed` — once per order, however
//! often the broker delivers the order.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | settings: the common ones plus the gateway's latency, failure rate, seed, card limit |
//! | [`gateway`] | the simulated gateway: deterministic decisions, idempotency keys, its own record of charges |
//! | [`store`] | the `payments` table and its queries |
//! | [`handlers`] | what happens on `order.placed` |
//! | [`routes`] | `GET /payments/{order_id}`, `GET /internal/reconcile` |
//! | [`startup`] | [`startup::build`]: what it consumes and serves, as the kit's [`startup::Application`] |
//!
//! Run it alone with `cargo run -p orderflow-payment --bin payment-service` (settings from
//! the environment, see [`config`]), or with the other four through `orderflow demo`.

pub mod config;
pub mod gateway;
pub mod handlers;
pub mod routes;
pub mod startup;
pub mod store;
