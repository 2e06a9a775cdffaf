//! The five services' own reports (`GET /internal/reconcile`), read side by side.
//!
//! The rows are the services' own `store::ReconcileRow` types, deserialized from the JSON
//! the same types were serialized to, and the counters are the kit's `CommonReport`.

use std::collections::BTreeMap;

use anyhow::Context;
use orderflow_kit::service::CommonReport;
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

/// The five reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// From the order service.
    pub orders: Vec<orderflow_order::store::ReconcileRow>,
    /// From the payment service.
    pub payments: Vec<orderflow_payment::store::ReconcileRow>,
    /// From the points service.
    pub ledger: Vec<orderflow_points::store::ReconcileRow>,
    /// From the SMS service.
    pub messages: Vec<orderflow_sms::store::ReconcileRow>,
    /// From the logging service.
    pub events: Vec<orderflow_logging::store::ReconcileRow>,
    /// Each service's counters, by service name.
    pub common: BTreeMap<String, CommonReport>,
}

impl Snapshot {
    /// Outbox rows committed but not yet published, all services.
    pub fn outbox_pending(&self) -> i64 {
        self.common
            .values()
            .map(|common| common.outbox_pending)
            .sum()
    }
}

// What each service's `GET /internal/reconcile` answers: its rows under a key of its own.
#[derive(Deserialize)]
struct OrderAnswer {
    orders: Vec<orderflow_order::store::ReconcileRow>,
    common: CommonReport,
}
#[derive(Deserialize)]
struct PaymentAnswer {
    payments: Vec<orderflow_payment::store::ReconcileRow>,
    common: CommonReport,
}
#[derive(Deserialize)]
struct PointsAnswer {
    ledger: Vec<orderflow_points::store::ReconcileRow>,
    common: CommonReport,
}
#[derive(Deserialize)]
struct SmsAnswer {
    messages: Vec<orderflow_sms::store::ReconcileRow>,
    common: CommonReport,
}
#[derive(Deserialize)]
struct LoggingAnswer {
    events: Vec<orderflow_logging::store::ReconcileRow>,
    common: CommonReport,
}

async fn get<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<T> {
    let url = format!("{}/internal/reconcile", base.trim_end_matches('/'));
    client
        .get(&url)
        .timeout(std::time::Duration::from_secs(30))
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
        get::<OrderAnswer>(client, &endpoints.order),
        get::<PaymentAnswer>(client, &endpoints.payment),
        get::<PointsAnswer>(client, &endpoints.points),
        get::<SmsAnswer>(client, &endpoints.sms),
        get::<LoggingAnswer>(client, &endpoints.logging),
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
