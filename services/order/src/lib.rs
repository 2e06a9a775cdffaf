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
//! | [`config`] | settings (the kit's common ones) |
//! | [`validation`] | turning a request body into a [`validation::NewOrder`] or a precise 4xx |
//! | [`store`] | the tables and every SQL statement |
//! | [`payments`] | the consumer of payment outcomes |
//! | [`api`] | the HTTP routes |
//! | [`startup`] | wiring it together: [`startup::Application`] |

pub mod api;
pub mod config;
pub mod payments;
pub mod startup;
pub mod store;
pub mod validation;

/// The service name: its consumer group, its log target, its default database file.
pub const SERVICE_NAME: &str = "order";

/// The port the HTTP API listens on unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;
