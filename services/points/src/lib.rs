//! # orderflow-points
//!
//! The points service: consumes `payment.succeeded`, credits the customer one point per
//! whole yuan (100 cents) paid — exactly once per order, however often the payment event
//! arrives — and publishes `points.awarded`.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | settings (only the common ones) |
//! | [`store`] | the points ledger: one row per order, balances are its sums |
//! | [`handlers`] | what happens on `payment.succeeded` |
//! | [`routes`] | `GET /users/{id}/points`, `GET /internal/reconcile` |
//! | [`startup`] | [`startup::build`]: what it consumes and serves, as the kit's [`startup::Application`] |
//!
//! Run it alone with `cargo run -p orderflow-points --bin points-service`, or with the other
//! four through `orderflow demo`.

pub mod config;
pub mod handlers;
pub mod routes;
pub mod startup;
pub mod store;
