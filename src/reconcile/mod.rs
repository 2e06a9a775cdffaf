//! Reconciliation: did every effect happen exactly once?
//!
//! Each service reports what its *own* store holds (`GET /internal/reconcile`); this module
//! puts the five reports side by side and checks, order by order, one [`Stage`] at a time:
//!
//! | stage | expected per order |
//! | --- | --- |
//! | `payment` | exactly one payment outcome; the gateway's books: one charge made for a paid order, none for a declined one |
//! | `order_status` | the order's status agrees with that outcome (`paid` / `payment_failed`) |
//! | `points` | paid orders: one ledger row worth what the points service's own rule gives; failed orders: none |
//! | `sms` | paid orders: one SMS record and one text dispatched at the gateway; failed orders: none |
//! | `log` | each event of the order's journey stored exactly once |
//!
//! `missing` counts expected effects that are absent, `doubled` effects beyond the one
//! expected (a second charge or text at a gateway, a second award or more points than the
//! rule gives, points for an unpaid order, an event logged twice), `orphans` effects for
//! order ids the order service does not have (events published by someone else). A
//! report is exact when all three are zero everywhere.
//!
//! Doubles are counted where a UNIQUE constraint cannot hide them: the payment and SMS
//! gateways keep append-only books of what they actually did (`gateway_charges_made`,
//! `sms_gateway_texts`), apart from their idempotency keys, and report them per order.
//!
//! The rows, status names, event names and the points rule are the services' own
//! (`orderflow_order::store::ReconcileRow`, `orderflow_points::handlers::points_for`, …):
//! reconciliation reads what the services write, never a copy of it.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `snapshot.rs` | where the services answer, and the five reports read side by side |
//! | `stage.rs` | the five stages and the missing / doubled / orphans tally |
//! | `check.rs` | the comparison, one function per stage, and the orphans |
//! | `report.rs` | the verdict: counts, missing, doubled and orphans per stage, the table people read |
//! | `settle.rs` | polling until every order reached its end state, or a deadline |

mod check;
mod report;
mod settle;
mod snapshot;
mod stage;

pub use check::reconcile;
pub use report::Report;
pub use settle::{wait_until_settled, Settle};
pub use snapshot::{fetch, Endpoints, Snapshot};
pub use stage::Stage;
