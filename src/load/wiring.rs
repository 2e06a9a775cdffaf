//! `--wiring`: how the in-process order service reaches payment, points, SMS and logging.
//!
//! `async` is the flow as deployed: `POST /orders` stores the order and its event and
//! answers; the queue carries the rest. `sync` is the baseline a reader asks about ("why
//! not call them from the order API?"): the order service in `ORDERFLOW_WIRING=sync`
//! (`orderflow_order::wiring`) calls each service's own handler over HTTP inside the
//! request. In the sync wiring nothing is queued, so the run watches no broker: it has no
//! stages or backlogs to report, and an accepted order is a finished one.

use serde::Serialize;

/// How the in-process order service reaches the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Wiring {
    /// Through the queue (the default).
    Async,
    /// By calling each service inside `POST /orders` (the baseline).
    Sync,
}

impl Wiring {
    /// As written on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Wiring::Async => "async",
            Wiring::Sync => "sync",
        }
    }
}
