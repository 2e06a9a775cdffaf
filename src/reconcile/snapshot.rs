//! The five services' own reports (`GET /internal/reconcile`), read side by side.
//!
//! The rows are the services' own `store::ReconcileRow` types (and the two gateways' own
//! per-order counts, `ChargesMade` and `TextsDispatched`), deserialized from the JSON the
//! same types were serialized to, and the counters are the kit's `CommonReport`.
//!
//! The order service is asked *last*, after the other four answered. Every effect is
//! caused by an order committed before it, so every effect the other four reported belongs
//! to an order the order service's answer holds — unless nobody placed it. Asked at the
//! same time, an order placed in between could have its payment read before the order
//! itself, and look like an orphan for one round.

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
    /// From the payment gateway's own books: charges made per order.
    pub charges: Vec<orderflow_payment::gateway::ChargesMade>,
    /// From the points service.
    pub ledger: Vec<orderflow_points::store::ReconcileRow>,
    /// From the SMS service.
    pub messages: Vec<orderflow_sms::store::ReconcileRow>,
    /// From the SMS gateway's own books: texts dispatched per order.
    pub texts: Vec<orderflow_sms::gateway::TextsDispatched>,
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
    charges: Vec<orderflow_payment::gateway::ChargesMade>,
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
    texts: Vec<orderflow_sms::gateway::TextsDispatched>,
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

/// Reads all five reports: the four downstream services at once, then the order service.
pub async fn fetch(client: &reqwest::Client, endpoints: &Endpoints) -> anyhow::Result<Snapshot> {
    let (payment, points, sms, logging) = tokio::try_join!(
        get::<PaymentAnswer>(client, &endpoints.payment),
        get::<PointsAnswer>(client, &endpoints.points),
        get::<SmsAnswer>(client, &endpoints.sms),
        get::<LoggingAnswer>(client, &endpoints.logging),
    )?;
    // Last: see the module doc (no effect can then be seen before its order).
    let order = get::<OrderAnswer>(client, &endpoints.order).await?;
    Ok(Snapshot {
        orders: order.orders,
        payments: payment.payments,
        charges: payment.charges,
        ledger: points.ledger,
        messages: sms.messages,
        texts: sms.texts,
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
