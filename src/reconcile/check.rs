//! The comparison: the five stores, order by order, one function per [`Stage`].
//!
//! Every order is looked up in the other four stores once ([`Effects`]); each stage's
//! function then says what it expected of that order and tallies what is missing or
//! doubled. The payment and SMS stages count at the gateways too — their own books of
//! charges made and texts dispatched, which no UNIQUE constraint keeps at one — so a card
//! charged twice or a customer texted twice shows as doubled. Effects for order ids the
//! order service does not have are tallied as orphans. What counts as "paid", which events
//! make a journey and how many points an order earns are the services' own definitions,
//! imported, never retyped.

use std::collections::{HashMap, HashSet};

use orderflow_events::EventKind;
use orderflow_order::store::{status, ReconcileRow as OrderRow};
use orderflow_payment::store::{PaymentOutcome, ReconcileRow as PaymentRow};
use orderflow_points::{handlers::points_for, store::ReconcileRow as LedgerRow};

use super::{
    stage::{Stage, Tally},
    Report, Snapshot,
};

/// What the other four stores hold for one order.
#[derive(Default)]
struct Effects<'a> {
    payments: &'a [&'a PaymentRow],
    /// Charges the payment gateway made.
    charges: u64,
    ledger: &'a [&'a LedgerRow],
    /// Rows of the SMS service's record.
    sms: u64,
    /// Texts the SMS gateway dispatched.
    texts: u64,
    /// Events stored by the logging service, all kinds.
    logged: u64,
}

/// The four stores indexed by order id (and event type, for the log).
#[derive(Default)]
struct Index<'a> {
    payments: HashMap<&'a str, Vec<&'a PaymentRow>>,
    charges: HashMap<&'a str, u64>,
    ledger: HashMap<&'a str, Vec<&'a LedgerRow>>,
    sms: HashMap<&'a str, u64>,
    texts: HashMap<&'a str, u64>,
    logged: HashMap<(&'a str, &'a str), i64>,
    logged_by_order: HashMap<&'a str, u64>,
}

impl<'a> Index<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let mut index = Index::default();
        for payment in &snapshot.payments {
            let rows = index.payments.entry(payment.order_id.as_str());
            rows.or_default().push(payment);
        }
        for row in &snapshot.charges {
            *index.charges.entry(row.order_id.as_str()).or_default() += row.charges.max(0) as u64;
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
        for row in &snapshot.texts {
            *index.texts.entry(row.order_id.as_str()).or_default() += row.texts.max(0) as u64;
        }
        for row in &snapshot.events {
            let key = (row.order_id.as_str(), row.event_type.as_str());
            *index.logged.entry(key).or_default() += row.count;
            *index
                .logged_by_order
                .entry(row.order_id.as_str())
                .or_default() += row.count.max(0) as u64;
        }
        index
    }

    fn effects(&self, order_id: &str) -> Effects<'_> {
        let count = |counts: &HashMap<&str, u64>| counts.get(order_id).copied().unwrap_or(0);
        Effects {
            payments: self
                .payments
                .get(order_id)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            charges: count(&self.charges),
            ledger: self
                .ledger
                .get(order_id)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            sms: count(&self.sms),
            texts: count(&self.texts),
            logged: count(&self.logged_by_order),
        }
    }

    /// Every order id some downstream store holds an effect for.
    fn order_ids(&self) -> HashSet<&'a str> {
        self.payments
            .keys()
            .chain(self.charges.keys())
            .chain(self.ledger.keys())
            .chain(self.sms.keys())
            .chain(self.texts.keys())
            .chain(self.logged_by_order.keys())
            .copied()
            .collect()
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
    check_orphans(snapshot, &index, &mut tally);

    for message in &snapshot.messages {
        *report
            .sms_by_instance
            .entry(message.instance.clone())
            .or_default() += 1;
    }
    report.points_awarded = snapshot.ledger.len() as u64;
    report.points_total = snapshot.ledger.iter().map(|row| row.points).sum();
    report.charges_made = index.charges.values().sum();
    report.sms_sent = snapshot.messages.len() as u64;
    report.texts_dispatched = index.texts.values().sum();
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
    report.redeliveries = snapshot
        .common
        .values()
        .map(|common| common.redeliveries.max(0) as u64)
        .sum();
    report.dead_lettered = snapshot
        .common
        .values()
        .map(|common| common.dead_lettered.max(0) as u64)
        .sum();
    report.missing = tally.missing;
    report.doubled = tally.doubled;
    report.orphans = tally.orphans;
    report
}

/// [`Stage::Payment`]: one outcome per order, and the gateway's books agree with it — one
/// charge for a paid order, none for a declined one, at most one while undecided (charged,
/// the payment not committed yet). Returns the outcome: `Some(true)` paid, `Some(false)`
/// declined, `None` not decided yet.
fn check_payment(effects: &Effects<'_>, tally: &mut Tally) -> Option<bool> {
    tally.expect_one(Stage::Payment, effects.payments.len() as u64);
    let paid = effects
        .payments
        .first()
        .map(|payment| payment.outcome == PaymentOutcome::Succeeded.as_str());
    let charges_allowed = match paid {
        Some(true) => {
            if effects.charges == 0 {
                // Recorded as paid, yet the gateway never charged the card.
                tally.miss(Stage::Payment, 1);
            }
            1
        }
        Some(false) => 0,
        None => 1,
    };
    tally.double(
        Stage::Payment,
        effects.charges.saturating_sub(charges_allowed),
    );
    paid
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
/// other order has none. A second award, more points than the rule gives, or points for an
/// unpaid order count as doubled; fewer points than the rule gives as missing.
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
        [row] if row.points > expected => tally.double(Stage::Points, 1),
        [row] if row.points < expected => tally.miss(Stage::Points, 1),
        [_] => {}
        more => tally.double(Stage::Points, more.len() as u64 - 1),
    }
}

/// [`Stage::Sms`]: a paid order has exactly one SMS — one row in the SMS service's record
/// *and* one text dispatched at the gateway; any other order none. The gateway's count is
/// what the customer's phone saw, so a second text there is doubled even though the
/// service's record (UNIQUE per order) holds one row.
fn check_sms(paid: Option<bool>, effects: &Effects<'_>, tally: &mut Tally) {
    let most = effects.sms.max(effects.texts);
    if paid == Some(true) {
        if effects.sms == 0 || effects.texts == 0 {
            tally.miss(Stage::Sms, 1);
        }
        tally.double(Stage::Sms, most.saturating_sub(1));
    } else {
        tally.double(Stage::Sms, most);
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

/// Orphans: effects for order ids the order service does not have — events published
/// straight to the broker by someone else, or a store that outlived the order service's.
/// Per stage: payment decisions or charges (whichever is more), ledger rows, SMS records or
/// texts dispatched (whichever is more), events logged.
fn check_orphans(snapshot: &Snapshot, index: &Index<'_>, tally: &mut Tally) {
    let known: HashSet<&str> = snapshot
        .orders
        .iter()
        .map(|order| order.order_id.as_str())
        .collect();
    for order_id in index.order_ids() {
        if known.contains(order_id) {
            continue;
        }
        let effects = index.effects(order_id);
        tally.orphan(
            Stage::Payment,
            (effects.payments.len() as u64).max(effects.charges),
        );
        tally.orphan(Stage::Points, effects.ledger.len() as u64);
        tally.orphan(Stage::Sms, effects.sms.max(effects.texts));
        tally.orphan(Stage::Log, effects.logged);
    }
}

#[cfg(test)]
mod tests {
    use orderflow_logging::store::ReconcileRow as LoggedRow;
    use orderflow_payment::gateway::ChargesMade;
    use orderflow_sms::{gateway::TextsDispatched, store::ReconcileRow as SmsRow};

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
        }
    }
    fn charges(id: &str, charges: i64) -> ChargesMade {
        ChargesMade {
            order_id: id.into(),
            charges,
        }
    }
    fn texts(id: &str, texts: i64) -> TextsDispatched {
        TextsDispatched {
            order_id: id.into(),
            texts,
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
            charges: vec![charges("a", 1)],
            ledger: vec![LedgerRow {
                order_id: "a".into(),
                points: 123,
            }],
            messages: vec![SmsRow {
                order_id: "a".into(),
                instance: "sms-1".into(),
            }],
            texts: vec![texts("a", 1)],
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
        snapshot.charges[0].charges = 2;
        let report = reconcile(&snapshot);
        assert_eq!(report.doubled[&Stage::Payment], 1);
        assert_eq!(report.doubled_total(), 1);
        assert_eq!(report.charges_made, 2);
        assert!(!report.is_exact());
    }

    #[test]
    fn a_charge_for_a_declined_order_is_doubled_and_a_paid_order_never_charged_is_missing() {
        let mut snapshot = complete();
        snapshot.charges = vec![charges("b", 1)];
        let report = reconcile(&snapshot);
        assert_eq!(
            report.doubled[&Stage::Payment],
            1,
            "b was declined, yet charged"
        );
        assert_eq!(
            report.missing[&Stage::Payment],
            1,
            "a was paid, never charged"
        );
    }

    #[test]
    fn a_second_text_at_the_gateway_is_doubled_even_with_one_sms_row() {
        let mut snapshot = complete();
        snapshot.texts[0].texts = 2;
        let report = reconcile(&snapshot);
        assert_eq!(report.doubled[&Stage::Sms], 1, "{}", report.render());
        assert_eq!((report.sms_sent, report.texts_dispatched), (1, 2));
        assert!(!report.is_exact());
    }

    #[test]
    fn an_sms_row_without_a_text_at_the_gateway_is_missing() {
        let mut snapshot = complete();
        snapshot.texts.clear();
        let report = reconcile(&snapshot);
        assert_eq!(report.missing[&Stage::Sms], 1);
    }

    #[test]
    fn more_points_than_the_rule_gives_are_doubled_fewer_are_missing() {
        let mut snapshot = complete();
        snapshot.ledger[0].points = 124;
        let report = reconcile(&snapshot);
        assert_eq!(report.doubled[&Stage::Points], 1);
        snapshot.ledger[0].points = 122;
        let report = reconcile(&snapshot);
        assert_eq!(report.missing[&Stage::Points], 1);
        assert_eq!(report.doubled[&Stage::Points], 0);
    }

    #[test]
    fn effects_for_orders_nobody_placed_are_orphans_per_stage() {
        let mut snapshot = complete();
        // "z" was never placed: someone published its events straight to the broker.
        snapshot
            .payments
            .push(payment("z", PaymentOutcome::Succeeded));
        snapshot.charges.push(charges("z", 1));
        snapshot.ledger.push(LedgerRow {
            order_id: "z".into(),
            points: 10,
        });
        snapshot.messages.push(SmsRow {
            order_id: "z".into(),
            instance: "sms-1".into(),
        });
        snapshot.texts.push(texts("z", 2));
        snapshot.events.push(logged("z", EventKind::OrderPlaced));
        snapshot
            .events
            .push(logged("z", EventKind::PaymentSucceeded));
        // Only the gateway knows of "y": charged, no payment row, no order.
        snapshot.charges.push(charges("y", 1));
        let report = reconcile(&snapshot);
        assert_eq!(report.orphans[&Stage::Payment], 2);
        assert_eq!(report.orphans[&Stage::OrderStatus], 0);
        assert_eq!(report.orphans[&Stage::Points], 1);
        assert_eq!(report.orphans[&Stage::Sms], 2);
        assert_eq!(report.orphans[&Stage::Log], 2);
        assert_eq!(report.orphans_total(), 7);
        assert_eq!((report.missing_total(), report.doubled_total()), (0, 0));
        assert!(!report.is_exact(), "orphans make a report not exact");
        let table = report.render();
        assert!(table.contains("orphans"), "{table}");
        assert!(table.contains("NOT EXACT"), "{table}");
    }

    #[test]
    fn the_json_report_names_every_stage() {
        let json = serde_json::to_value(reconcile(&complete())).unwrap();
        for stage in Stage::ALL {
            assert_eq!(json["missing"][stage.name()], 0, "{json}");
            assert_eq!(json["doubled"][stage.name()], 0, "{json}");
            assert_eq!(json["orphans"][stage.name()], 0, "{json}");
        }
        assert_eq!(json["charges_made"], 1, "{json}");
        assert_eq!(json["texts_dispatched"], 1, "{json}");
    }
}
