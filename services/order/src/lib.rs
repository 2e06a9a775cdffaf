//! # orderflow-order
//!
//! The order service: the start of the order flow and the only service people talk to.
//!
//! ```text
//! POST /orders ──► validate ──► BEGIN; order + items + history + outbox(OrderPlaced); COMMIT
//!                                      └──► relay publishes order.placed after commit
//! payment.succeeded / payment.failed ──► BEGIN; claim message id; placed → paid / payment_failed; COMMIT
//! GET /orders/{id}                   ──► the order, its items and its status history
//! GET /internal/reconcile            ──► every order's status, for `orderflow reconcile`
//! ```
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | settings (the kit's common ones, and the wiring) |
//! | [`validation`] | turning a request body into a [`validation::NewOrder`] or a precise 4xx |
//! | [`store`] | the tables and every SQL statement |
//! | [`handlers`] | what happens on `payment.succeeded` and `payment.failed` |
//! | [`routes`] | `POST /orders`, `GET /orders/{id}`, `GET /internal/reconcile` |
//! | [`wiring`] | `ORDERFLOW_WIRING`: through the queue (default) or the synchronous baseline that calls each service inside `POST /orders` |
//! | [`startup`] | [`startup::build`]: what it consumes and serves, as the kit's [`startup::Application`] |
//!
//! Run it alone with `cargo run -p orderflow-order --bin order-service`, or with the other
//! four through `orderflow demo`.

pub mod config;
pub mod handlers;
pub mod routes;
pub mod startup;
pub mod store;
pub mod validation;
pub mod wiring;
