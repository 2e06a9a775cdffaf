//! The comparison: the five stores, order by order, one function per [`Stage`].
//!
//! Every order is looked up in the other four stores once ([`Effects`]); each stage's
//! function then says what it expected of that order and tallies what is missing or
//! doubled. What counts as "paid", which events make a journey and how many points an
//! order earns are the services' own definitions, imported, never retyped.

use std::collections::HashMap;

use orderflow_events::EventKind;
use orderflow_order::store::{status, ReconcileRow as OrderRow};
use orderflow_payment::store::{PaymentOutcome, ReconcileRow as PaymentRow};
use orderflow_points::{handlers::points_for, store::ReconcileRow as LedgerRow};

use super::{
    stage::{Stage, Tally},
    Report, Snapshot,
};

/// What the other four stores hold for one order.
struct Effects<'a> {
    payments: &'a [&'a PaymentRow],
    ledger: &'a [&'a LedgerRow],
    sms: u64,
}

/// The four stores indexed by order id (and event type, for the log).
struct Index<'a> {
    payments: HashMap<&'a str, Vec<&'a PaymentRow>>,
    ledger: HashMap<&'a str, Vec<&'a LedgerRow>>,
    sms: HashMap<&'a str, u64>,
    logged: HashMap<(&'a str, &'a str), i64>,
}

impl<'a> Index<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let mut index = Index {
            payments: HashMap::new(),
            ledger: HashMap::new(),
            sms: HashMap::new(),
            logged: HashMap::new(),
        };
        for payment in &snapshot.payments {
            let rows = index.payments.entry(payment.order_id.as_str());
            rows.or_default().push(payment);
        }
        for row in &snapshot.ledger {
            index
                .ledger
                .entry(row.order_id.as_str())
                .or_default()
                .push(row);
        }
        for message in &snapshot.messages {
            *index.sms.entry(message.order_id.as_str()).or_default() += 1;
        }
        for row in &snapshot.events {
            let key = (row.order_id.as_str(), row.event_type.as_str());
            *index.logged.entry(key).or_default() += row.count;
        }
        index
    }

    fn effects(&self, order_id: &str) -> Effects<'_> {
        Effects {
            payments: self
                .payments
                .get(order_id)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            ledger: self
                .ledger
                .get(order_id)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            sms: self.sms.get(order_id).copied().unwrap_or(0),
        }
    }
}

/// Compares the five stores order by order.
pub fn reconcile(snapshot: &Snapshot) -> Report {
    let mut report = Report::default();
    let mut tally = Tally::default();
    let index = Index::new(snapshot);

    report.placed = snapshot.orders.len() as u64;
    for order in &snapshot.orders {
        let effects = index.effects(&order.order_id);
        let paid = check_payment(&effects, &mut tally);
        check_order_status(order, paid, &mut report, &mut tally);
        check_points(order, paid, &effects, &mut report, &mut tally);
        check_sms(paid, &effects, &mut tally);
        check_log(order, paid, &index, &mut tally);
    }

    for message in &snapshot.messages {
        *report
            .sms_by_instance
            .entry(message.instance.clone())
            .or_default() += 1;
    }
    report.points_awarded = snapshot.ledger.len() as u64;
    report.points_total = snapshot.ledger.iter().map(|row| row.points).sum();
    report.sms_sent = snapshot.messages.len() as u64;
    report.events_logged = snapshot
        .events
        .iter()
        .map(|row| row.count.max(0) as u64)
        .sum();
    report.duplicates_ignored = snapshot
        .common
        .values()
        .map(|common| common.duplicates_ignored.max(0) as u64)
        .sum();
    report.dead_lettered = snapshot
        .common
        .values()
        .map(|common| common.dead_lettered.max(0) as u64)
        .sum();
    report.missing = tally.missing;
    report.doubled = tally.doubled;
    report
}

/// [`Stage::Payment`]: one outcome per order, and the gateway charged at most once.
/// Returns the outcome: `Some(true)` paid, `Some(false)` declined, `None` not decided yet.
fn check_payment(effects: &Effects<'_>, tally: &mut Tally) -> Option<bool> {
    tally.expect_one(Stage::Payment, effects.payments.len() as u64);
    let extra_charges: i64 = effects
        .payments
        .iter()
        .map(|payment| (payment.charges - 1).max(0))
        .sum();
    tally.double(Stage::Payment, extra_charges as u64);
    effects
        .payments
        .first()
        .map(|payment| payment.outcome == PaymentOutcome::Succeeded.as_str())
}

/// [`Stage::OrderStatus`]: the order's status agrees with the payment outcome.
fn check_order_status(
    order: &OrderRow,
    paid: Option<bool>,
    report: &mut Report,
    tally: &mut Tally,
) {
    let expected = match paid {
        Some(true) => status::PAID,
        Some(false) => status::PAYMENT_FAILED,
        None => status::PLACED,
    };
    match order.status.as_str() {
        status::PAID => report.paid += 1,
        status::PAYMENT_FAILED => report.payment_failed += 1,
        _ => {}
    }
    if order.status != expected {
        tally.miss(Stage::OrderStatus, 1);
    }
}

/// [`Stage::Points`]: a paid order has one ledger row worth [`points_for`] its total; any
/// other order has none (points for an unpaid order count as doubled).
fn check_points(
    order: &OrderRow,
    paid: Option<bool>,
    effects: &Effects<'_>,
    report: &mut Report,
    tally: &mut Tally,
) {
    let rows = effects.ledger;
    if paid != Some(true) {
        // Declined, or not decided yet: later effects are not expected, and none may exist.
        tally.double(Stage::Points, rows.len() as u64);
        return;
    }
    let expected = points_for(order.total_cents);
    report.points_expected += expected;
    match rows {
        [] => tally.miss(Stage::Points, 1),
        [row] if row.points != expected => tally.double(Stage::Points, 1),
        [_] => {}
        more => tally.double(Stage::Points, more.len() as u64 - 1),
    }
}

/// [`Stage::Sms`]: a paid order has exactly one SMS; any other order none.
fn check_sms(paid: Option<bool>, effects: &Effects<'_>, tally: &mut Tally) {
    if paid == Some(true) {
        tally.expect_one(Stage::Sms, effects.sms);
    } else {
        tally.double(Stage::Sms, effects.sms);
    }
}

/// [`Stage::Log`]: every event of the order's journey so far stored exactly once.
fn check_log(order: &OrderRow, paid: Option<bool>, index: &Index<'_>, tally: &mut Tally) {
    let journey: &[EventKind] = match paid {
        Some(true) => &[
            EventKind::OrderPlaced,
            EventKind::PaymentSucceeded,
            EventKind::PointsAwarded,
            EventKind::SmsSent,
        ],
        Some(false) => &[EventKind::OrderPlaced, EventKind::PaymentFailed],
        None => &[EventKind::OrderPlaced],
    };
    for kind in journey {
        let key = (order.order_id.as_str(), kind.name());
        let stored = index.logged.get(&key).copied().unwrap_or(0);
        tally.expect_one(Stage::Log, stored.max(0) as u64);
    }
}

#[cfg(test)]
mod tests {
    use orderflow_logging::store::ReconcileRow as LoggedRow;
    use orderflow_sms::store::ReconcileRow as SmsRow;

    use super::*;

    fn order(id: &str, total: i64, status: &str) -> OrderRow {
        OrderRow {
            order_id: id.into(),
            total_cents: total,
            status: status.into(),
        }
    }
    fn payment(id: &str, outcome: PaymentOutcome) -> PaymentRow {
        PaymentRow {
            order_id: id.into(),
            outcome: outcome.as_str().into(),
            charges: i64::from(outcome == PaymentOutcome::Succeeded),
        }
    }
    fn logged(id: &str, kind: EventKind) -> LoggedRow {
        LoggedRow {
            order_id: id.into(),
            event_type: kind.name().into(),
            count: 1,
        }
    }

    fn complete() -> Snapshot {
        Snapshot {
            orders: vec![
                order("a", 12_345, status::PAID),
                order("b", 500, status::PAYMENT_FAILED),
            ],
            payments: vec![
                payment("a", PaymentOutcome::Succeeded),
                payment("b", PaymentOutcome::Failed),
            ],
            ledger: vec![LedgerRow {
                order_id: "a".into(),
                points: 123,
            }],
            messages: vec![SmsRow {
                order_id: "a".into(),
                instance: "sms-1".into(),
            }],
            events: vec![
                logged("a", EventKind::OrderPlaced),
                logged("a", EventKind::PaymentSucceeded),
                logged("a", EventKind::PointsAwarded),
                logged("a", EventKind::SmsSent),
                logged("b", EventKind::OrderPlaced),
                logged("b", EventKind::PaymentFailed),
            ],
            common: Default::default(),
        }
    }

    #[test]
    fn a_complete_flow_is_exact() {
        let report = reconcile(&complete());
        assert!(report.is_exact(), "{}", report.render());
        assert_eq!(
            (report.placed, report.paid, report.payment_failed),
            (2, 1, 1)
        );
        assert_eq!((report.points_total, report.points_expected), (123, 123));
        assert_eq!(report.events_logged, 6);
    }

    #[test]
    fn missing_and_doubled_effects_are_counted_per_stage() {
        let mut snapshot = complete();
        snapshot.messages.push(SmsRow {
            order_id: "a".into(),
            instance: "sms-2".into(),
        });
        snapshot.ledger.clear();
        snapshot
            .events
            .retain(|row| row.event_type != EventKind::PaymentFailed.name());
        snapshot.orders.push(order("c", 100, status::PLACED));
        let report = reconcile(&snapshot);
        assert!(!report.is_exact());
        assert_eq!(report.doubled[&Stage::Sms], 1);
        assert_eq!(report.missing[&Stage::Points], 1);
        // b's PaymentFailed, and c's OrderPlaced, are not logged.
        assert_eq!(report.missing[&Stage::Log], 2);
        assert_eq!(report.missing[&Stage::Payment], 1);
        assert_eq!(report.sms_by_instance.len(), 2);
    }

    #[test]
    fn effects_for_an_unpaid_order_count_as_doubled() {
        let mut snapshot = complete();
        snapshot.ledger.push(LedgerRow {
            order_id: "b".into(),
            points: 5,
        });
        let report = reconcile(&snapshot);
        assert_eq!(report.doubled[&Stage::Points], 1);
    }

    #[test]
    fn a_second_charge_at_the_gateway_is_doubled_even_with_one_payment_row() {
        let mut snapshot = complete();
        snapshot.payments[0].charges = 2;
        let report = reconcile(&snapshot);
        assert_eq!(report.doubled[&Stage::Payment], 1);
    }

    #[test]
    fn the_json_report_names_every_stage() {
        let json = serde_json::to_value(reconcile(&complete())).unwrap();
        for stage in Stage::ALL {
            assert_eq!(json["missing"][stage.name()], 0, "{json}");
            assert_eq!(json["doubled"][stage.name()], 0, "{json}");
        }
    }
}
