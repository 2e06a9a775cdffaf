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

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Where the five services answer.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Order service base URL.
    pub order: String,
    /// Payment service base URL.
    pub payment: String,
    /// Points service base URL.
    pub points: String,
    /// SMS service base URL.
    pub sms: String,
    /// Logging service base URL.
    pub logging: String,
}

impl Endpoints {
    /// From `ORDERFLOW_{ORDER,PAYMENT,POINTS,SMS,LOGGING}_URL`, defaulting to the ports
    /// the services listen on locally (8080–8084).
    pub fn from_env() -> Self {
        let url = |variable: &str, port: u16| {
            std::env::var(variable).unwrap_or_else(|_| format!("http://127.0.0.1:{port}"))
        };
        Endpoints {
            order: url("ORDERFLOW_ORDER_URL", 8080),
            payment: url("ORDERFLOW_PAYMENT_URL", 8081),
            points: url("ORDERFLOW_POINTS_URL", 8082),
            sms: url("ORDERFLOW_SMS_URL", 8083),
            logging: url("ORDERFLOW_LOGGING_URL", 8084),
        }
    }
}

/// Counters every service reports (kit's `CommonReport`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    /// Redeliveries recognised and ignored.
    pub duplicates_ignored: i64,
    /// Messages dead-lettered.
    pub dead_lettered: i64,
    /// Outbox rows not yet published.
    #[serde(default)]
    pub outbox_pending: i64,
}

/// One order as the order service stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderRow {
    /// The order id.
    pub order_id: String,
    /// Total in cents.
    pub total_cents: i64,
    /// `placed`, `paid` or `payment_failed`.
    pub status: String,
}

/// One payment as the payment service stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentRow {
    /// The order paid for.
    pub order_id: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// How many times the gateway charged this order.
    #[serde(default = "one")]
    pub charges: i64,
}

fn one() -> i64 {
    1
}

/// One ledger row of the points service.
#[derive(Debug, Clone, Deserialize)]
pub struct LedgerRow {
    /// The order the points are for.
    pub order_id: String,
    /// How many.
    pub points: i64,
}

/// One SMS of the SMS service.
#[derive(Debug, Clone, Deserialize)]
pub struct SmsRow {
    /// The order it was about.
    pub order_id: String,
    /// Which SMS service instance sent it.
    pub instance: String,
}

/// How often the logging service stored one kind of event for one order.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedRow {
    /// The order.
    pub order_id: String,
    /// `OrderPlaced`, `PaymentSucceeded`, …
    pub event_type: String,
    /// How many stored.
    pub count: i64,
}

/// The five reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// From the order service.
    pub orders: Vec<OrderRow>,
    /// From the payment service.
    pub payments: Vec<PaymentRow>,
    /// From the points service.
    pub ledger: Vec<LedgerRow>,
    /// From the SMS service.
    pub messages: Vec<SmsRow>,
    /// From the logging service.
    pub events: Vec<LoggedRow>,
    /// Each service's counters, by service name.
    pub common: BTreeMap<String, Common>,
}

#[derive(Deserialize)]
struct OrderReport {
    orders: Vec<OrderRow>,
    common: Common,
}
#[derive(Deserialize)]
struct PaymentReport {
    payments: Vec<PaymentRow>,
    common: Common,
}
#[derive(Deserialize)]
struct PointsReport {
    ledger: Vec<LedgerRow>,
    common: Common,
}
#[derive(Deserialize)]
struct SmsReport {
    messages: Vec<SmsRow>,
    common: Common,
}
#[derive(Deserialize)]
struct LoggingReport {
    events: Vec<LoggedRow>,
    common: Common,
}

async fn get<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<T> {
    let url = format!("{}/internal/reconcile", base.trim_end_matches('/'));
    client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))
}

/// Reads all five reports.
pub async fn fetch(client: &reqwest::Client, endpoints: &Endpoints) -> anyhow::Result<Snapshot> {
    let (order, payment, points, sms, logging) = tokio::try_join!(
        get::<OrderReport>(client, &endpoints.order),
        get::<PaymentReport>(client, &endpoints.payment),
        get::<PointsReport>(client, &endpoints.points),
        get::<SmsReport>(client, &endpoints.sms),
        get::<LoggingReport>(client, &endpoints.logging),
    )?;
    Ok(Snapshot {
        orders: order.orders,
        payments: payment.payments,
        ledger: points.ledger,
        messages: sms.messages,
        events: logging.events,
        common: BTreeMap::from([
            ("order".to_owned(), order.common),
            ("payment".to_owned(), payment.common),
            ("points".to_owned(), points.common),
            ("sms".to_owned(), sms.common),
            ("logging".to_owned(), logging.common),
        ]),
    })
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Orders the order service stores.
    pub placed: u64,
    /// Of which paid.
    pub paid: u64,
    /// Of which declined.
    pub payment_failed: u64,
    /// Ledger rows.
    pub points_awarded: u64,
    /// Sum of points in the ledger.
    pub points_total: i64,
    /// ⌊total / 100⌋ summed over paid orders.
    pub points_expected: i64,
    /// SMS rows.
    pub sms_sent: u64,
    /// SMS rows per sending instance.
    pub sms_by_instance: BTreeMap<String, u64>,
    /// Events stored by the logging service.
    pub events_logged: u64,
    /// Redeliveries recognised and ignored, all services.
    pub duplicates_ignored: u64,
    /// Messages dead-lettered, all services.
    pub dead_lettered: u64,
    /// Expected effects that are absent, per stage.
    pub missing: BTreeMap<String, u64>,
    /// Effects beyond the one expected, per stage.
    pub doubled: BTreeMap<String, u64>,
    /// Wall time of the run that produced this (demo), if measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

/// The stages, in flow order.
pub const STAGES: [&str; 5] = ["payment", "order_status", "points", "sms", "log"];

impl Report {
    /// Nothing missing and nothing doubled.
    pub fn is_exact(&self) -> bool {
        self.missing.values().all(|count| *count == 0)
            && self.doubled.values().all(|count| *count == 0)
    }

    /// How many expected effects are still absent.
    pub fn missing_total(&self) -> u64 {
        self.missing.values().sum()
    }

    /// A table for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line =
            |label: &str, value: String| out.push_str(&format!("  {label:<28} {value}\n"));
        line("orders placed", self.placed.to_string());
        line("  paid", self.paid.to_string());
        line("  payment failed", self.payment_failed.to_string());
        line(
            "points awarded (orders)",
            format!("{}", self.points_awarded),
        );
        line(
            "points total / expected",
            format!("{} / {}", self.points_total, self.points_expected),
        );
        line("SMS sent", self.sms_sent.to_string());
        if self.sms_by_instance.len() > 1 {
            for (instance, count) in &self.sms_by_instance {
                line(&format!("  by {instance}"), count.to_string());
            }
        }
        line("events logged", self.events_logged.to_string());
        line(
            "duplicate deliveries ignored",
            self.duplicates_ignored.to_string(),
        );
        line("dead-lettered", self.dead_lettered.to_string());
        out.push_str(&format!(
            "  {:<28} {:>8} {:>8}\n",
            "stage", "missing", "doubled"
        ));
        for stage in STAGES {
            out.push_str(&format!(
                "  {:<28} {:>8} {:>8}\n",
                stage,
                self.missing.get(stage).copied().unwrap_or(0),
                self.doubled.get(stage).copied().unwrap_or(0)
            ));
        }
        if let Some(elapsed) = self.elapsed_ms {
            out.push_str(&format!("  {:<28} {elapsed} ms\n", "elapsed"));
        }
        out.push_str(if self.is_exact() {
            "  EXACT: every effect happened once\n"
        } else {
            "  NOT EXACT: see missing / doubled above\n"
        });
        out
    }
}

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
