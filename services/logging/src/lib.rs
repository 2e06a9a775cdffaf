//! # orderflow-logging
//!
//! The logging service: subscribes to every topic of the order flow in a consumer group of
//! its own and stores each event once — the "log collection" use of a message queue. Any
//! order's journey (placed → paid → points → SMS) can then be read back in order, and the
//! reconciliation counts how often each event of each order was stored.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | settings (only the common ones) |
//! | [`store`] | the `events` table: one row per message id |
//! | [`handlers`] | what happens on any event |
//! | [`routes`] | `GET /events?order_id=`, `GET /internal/reconcile` |
//! | [`startup`] | [`startup::build`]: what it consumes and serves, as the kit's [`startup::Application`] |
//!
//! Run it alone with `cargo run -p orderflow-logging --bin logging-service`, or with the
//! other four through `orderflow demo`.

pub mod config;
pub mod handlers;
pub mod routes;
pub mod startup;
pub mod store;
