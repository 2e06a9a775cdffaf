//! The SMS service over real HTTP and a real (in-process) broker.
//!
//! `cargo test -p orderflow-sms` runs every test on SQLite; with
//! `ORDERFLOW_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` set (scripts/test.sh
//! does) the same tests run on PostgreSQL too, each in a database of its own.

mod exactly_once;
mod helpers;
mod sms;
