//! What the scenarios share: the five services up on the scenario's broker, one order
//! placed through the real HTTP API (timed), and that order's journey read back from the
//! logging service once every event of it is stored.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use orderflow_events::EventKind;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    place::{place_orders, Plan},
    stack::{InProcessStack, StackOptions},
};

/// How long a scenario waits for one order's flow to finish. Generous: on Kafka a group
/// that has just joined may take seconds to be handed its partitions.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(45);

/// The five services in this process on `broker_url`, each with a SQLite file of its own.
pub async fn start_stack(broker_url: &str) -> anyhow::Result<InProcessStack> {
    InProcessStack::start(StackOptions {
        broker_url: broker_url.to_owned(),
        postgres: None,
    })
    .await
}

/// One order as placed.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    /// Its id: the key and correlation id of every message of its journey.
    pub order_id: Uuid,
    /// How long `POST /orders` took to answer: what the customer waited for.
    pub request: Duration,
}

/// Places the demo's first order (within the card limit, so it is paid) and times it.
pub async fn place_one(order_url: &str) -> anyhow::Result<Placed> {
    let started = Instant::now();
    let ids = place_orders(&reqwest::Client::new(), order_url, Plan::burst(1)).await?;
    let request = started.elapsed();
    let order_id = ids
        .first()
        .context("the order service answered no order id")?
        .parse()
        .context("the order id is not a UUID")?;
    Ok(Placed { order_id, request })
}

/// One event of an order's journey as the logging service stored it (`GET /events`).
#[derive(Debug, Clone, Deserialize)]
pub struct Logged {
    /// The envelope id.
    pub message_id: Uuid,
    /// `OrderPlaced`, `PaymentSucceeded`, …
    pub event_type: String,
    /// Where it was published.
    pub topic: String,
    /// When its producer made it.
    pub published_at: DateTime<Utc>,
    /// When the logging service stored it.
    pub logged_at: DateTime<Utc>,
    /// The envelope's headers (correlation and causation ids among them).
    pub headers: BTreeMap<String, String>,
    /// The event (`{"type", "version", "data"}`).
    pub payload: serde_json::Value,
}

impl Logged {
    /// The header `name`, if the message carried it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The events a paid order publishes: every kind but the declined payment.
pub fn paid_journey() -> Vec<EventKind> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| *kind != EventKind::PaymentFailed)
        .collect()
}

/// Waits until the logging service at `logging_url` holds every event kind of `expected`
/// for `order_id`, then returns the journey in publish order.
pub async fn logged_journey(
    logging_url: &str,
    order_id: Uuid,
    expected: &[EventKind],
) -> anyhow::Result<Vec<Logged>> {
    let client = reqwest::Client::new();
    let url = format!("{}/events", logging_url.trim_end_matches('/'));
    orderflow_kit::wait::until(
        &format!("the logging service to hold every event of order {order_id}"),
        SETTLE_DEADLINE,
        Duration::from_millis(50),
        || {
            let request = client
                .get(&url)
                .query(&[("order_id", order_id.to_string())])
                .timeout(Duration::from_secs(5))
                .send();
            async move {
                let events: Vec<Logged> = request
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                expected
                    .iter()
                    .all(|kind| events.iter().any(|event| event.event_type == kind.name()))
                    .then_some(events)
            }
        },
    )
    .await
}
