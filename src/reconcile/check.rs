//! The comparison: the five stores, order by order.

use std::collections::{BTreeMap, HashMap};

use super::{LedgerRow, PaymentRow, Report, Snapshot, STAGES};

/// Compares the five stores order by order.
pub fn reconcile(snapshot: &Snapshot) -> Report {
    let mut report = Report::default();
    let mut missing: BTreeMap<String, u64> =
        STAGES.iter().map(|stage| (stage.to_string(), 0)).collect();
    let mut doubled = missing.clone();
    let mut miss = |stage: &str, count: u64| *missing.get_mut(stage).unwrap() += count;
    let mut double = |stage: &str, count: u64| *doubled.get_mut(stage).unwrap() += count;

    let mut payments: HashMap<&str, Vec<&PaymentRow>> = HashMap::new();
    for payment in &snapshot.payments {
        payments.entry(&payment.order_id).or_default().push(payment);
    }
    let mut ledger: HashMap<&str, Vec<&LedgerRow>> = HashMap::new();
    for row in &snapshot.ledger {
        ledger.entry(&row.order_id).or_default().push(row);
    }
    let mut sms: HashMap<&str, u64> = HashMap::new();
    for message in &snapshot.messages {
        *sms.entry(&message.order_id).or_default() += 1;
        *report
            .sms_by_instance
            .entry(message.instance.clone())
            .or_default() += 1;
    }
    let mut logged: HashMap<(&str, &str), i64> = HashMap::new();
    for row in &snapshot.events {
        *logged.entry((&row.order_id, &row.event_type)).or_default() += row.count;
    }

    report.placed = snapshot.orders.len() as u64;
    for order in &snapshot.orders {
        let id = order.order_id.as_str();
        let outcomes = payments.get(id).map(Vec::as_slice).unwrap_or_default();
        let paid = outcomes
            .first()
            .map(|payment| payment.outcome == "succeeded");
        match outcomes.len() {
            0 => miss("payment", 1),
            1 => {}
            more => double("payment", more as u64 - 1),
        }
        let extra_charges: i64 = outcomes
            .iter()
            .map(|payment| (payment.charges - 1).max(0))
            .sum();
        double("payment", extra_charges as u64);

        let expected_status = match paid {
            Some(true) => "paid",
            Some(false) => "payment_failed",
            None => "placed",
        };
        match order.status.as_str() {
            "paid" => report.paid += 1,
            "payment_failed" => report.payment_failed += 1,
            _ => {}
        }
        if order.status != expected_status {
            miss("order_status", 1);
        }

        let rows = ledger.get(id).map(Vec::as_slice).unwrap_or_default();
        let sms_count = sms.get(id).copied().unwrap_or(0);
        let mut journey = vec!["OrderPlaced"];
        match paid {
            Some(true) => {
                report.points_expected += order.total_cents / 100;
                match rows.len() {
                    0 => miss("points", 1),
                    1 if rows[0].points != order.total_cents / 100 => double("points", 1),
                    1 => {}
                    more => double("points", more as u64 - 1),
                }
                match sms_count {
                    0 => miss("sms", 1),
                    1 => {}
                    more => double("sms", more - 1),
                }
                journey.extend(["PaymentSucceeded", "PointsAwarded", "SmsSent"]);
            }
            Some(false) => {
                double("points", rows.len() as u64);
                double("sms", sms_count);
                journey.push("PaymentFailed");
            }
            None => {
                // Not paid yet: later effects are not expected yet, but none may exist.
                double("points", rows.len() as u64);
                double("sms", sms_count);
            }
        }
        for event_type in journey {
            match logged.get(&(id, event_type)).copied().unwrap_or(0) {
                0 => miss("log", 1),
                1 => {}
                more => double("log", more as u64 - 1),
            }
        }
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
    report.missing = missing;
    report.doubled = doubled;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{LoggedRow, OrderRow, SmsRow};

    fn order(id: &str, total: i64, status: &str) -> OrderRow {
        OrderRow {
            order_id: id.into(),
            total_cents: total,
            status: status.into(),
        }
    }
    fn payment(id: &str, outcome: &str) -> PaymentRow {
        PaymentRow {
            order_id: id.into(),
            outcome: outcome.into(),
            charges: 1,
        }
    }
    fn logged(id: &str, event_type: &str) -> LoggedRow {
        LoggedRow {
            order_id: id.into(),
            event_type: event_type.into(),
            count: 1,
        }
    }

    fn complete() -> Snapshot {
        Snapshot {
            orders: vec![
                order("a", 12_345, "paid"),
                order("b", 500, "payment_failed"),
            ],
            payments: vec![payment("a", "succeeded"), payment("b", "failed")],
            ledger: vec![LedgerRow {
                order_id: "a".into(),
                points: 123,
            }],
            messages: vec![SmsRow {
                order_id: "a".into(),
                instance: "sms-1".into(),
            }],
            events: vec![
                logged("a", "OrderPlaced"),
                logged("a", "PaymentSucceeded"),
                logged("a", "PointsAwarded"),
                logged("a", "SmsSent"),
                logged("b", "OrderPlaced"),
                logged("b", "PaymentFailed"),
            ],
            common: BTreeMap::new(),
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
            .retain(|row| row.event_type != "PaymentFailed");
        snapshot.orders.push(order("c", 100, "placed"));
        let report = reconcile(&snapshot);
        assert!(!report.is_exact());
        assert_eq!(report.doubled["sms"], 1);
        assert_eq!(report.missing["points"], 1);
        // b's PaymentFailed, and c's OrderPlaced, are not logged.
        assert_eq!(report.missing["log"], 2);
        assert_eq!(report.missing["payment"], 1);
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
        assert_eq!(report.doubled["points"], 1);
    }
}
