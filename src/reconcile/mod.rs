//! Reconciliation: did every effect happen exactly once?
//!
//! Each service reports what its *own* store holds (`GET /internal/reconcile`); this module
//! puts the five reports side by side and checks, order by order:
//!
//! | stage | expected per order |
//! | --- | --- |
//! | `payment` | exactly one payment outcome, and the gateway charged at most once |
//! | `order_status` | the order's status agrees with that outcome (`paid` / `payment_failed`) |
//! | `points` | paid orders: one ledger row worth ⌊total / 100⌋ points; failed orders: none |
//! | `sms` | paid orders: exactly one SMS; failed orders: none |
//! | `log` | each event of the order's journey stored exactly once |
//!
//! `missing` counts expected effects that are absent, `doubled` effects beyond the one
//! expected (a second SMS, points for an unpaid order, an event logged twice).
//!
//! | file | what it holds |
//! | --- | --- |
//! | `snapshot.rs` | where the services answer, and the five reports read side by side |
//! | `report.rs` | the verdict: counts, missing and doubled per stage, the table people read |
//! | `check.rs` | the comparison, order by order |

mod check;
mod report;
mod snapshot;

pub use check::reconcile;
pub use report::{Report, STAGES};
pub use snapshot::{
    fetch, Common, Endpoints, LedgerRow, LoggedRow, OrderRow, PaymentRow, SmsRow, Snapshot,
};
