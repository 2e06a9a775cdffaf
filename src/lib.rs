//! # orderflow
//!
//! The command line's library: everything `orderflow demo`, `orderflow place`,
//! `orderflow reconcile`, `orderflow bench`, `orderflow load`, `orderflow chaos` and
//! `orderflow scenario` do,
//! usable from the end-to-end tests in `tests/`.
//!
//! - [`stack`] — the five services started in this process (the demo) or as separate
//!   processes (the end-to-end tests, `scripts/up.sh`).
//! - [`demo`] — the stack in process, orders placed, the flow settled, reconciled.
//! - [`place`] — the demo's orders, placed through the real HTTP API.
//! - [`reconcile`] — reads every service's own store and says what is missing or doubled.
//! - [`bench`] — the broker abstraction against the raw clients.
//! - [`chaos`] — the fault suite: kill, cut, restart, poison mid-run, and the ledger.
//! - [`load`] — the open-loop load test: API latency, the journey stage by stage, backlogs.
//! - [`scenarios`] — each claim of the article staged on the order flow and measured.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod load;
pub mod place;
pub mod reconcile;
pub mod scenarios;
pub mod stack;
