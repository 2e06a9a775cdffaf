//! The five services' own reports (`GET /internal/reconcile`), read side by side.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

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
