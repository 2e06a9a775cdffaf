//! The order service end to end, over real HTTP, on the embedded broker.
//!
//! `cargo test -p orderflow-order` runs every test on SQLite; with
//! `ORDERFLOW_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` set (scripts/test.sh
//! does) the same tests run on PostgreSQL too, each in a database of its own.

mod helpers;
mod orders;
mod payment_outcomes;
mod refusals;
mod relay;
