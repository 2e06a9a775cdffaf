//! `orderflow scenario journey`: one order followed through every service by its
//! correlation id. Every message of an order's flow carries the order id as its
//! `correlation-id` and the id of the message that caused it as its `causation-id`
//! (`docs/events.md`), and the logging service stores every message with its headers. So
//! the journey can be read back from the log alone, in causal order, after the fact —
//! the way one follows a request across services in production.
//!
//! Each event gives two hops: its producer made it (the group named by the topology's
//! publishers table, [`orderflow_events::topology::PUBLISHERS`]), and the logging group
//! stored it. Times are from the order's `placed_at`; a hop's latency runs from its
//! cause (the message named by `causation-id`; the order row for `order.placed`; the
//! event itself for a logged hop) to the hop. The producers stamp `published_at` when
//! they make a message, and all five services run in this process on one clock.

use chrono::{DateTime, Utc};
use orderflow_events::{headers, topology, EventKind};
use serde::Serialize;
use uuid::Uuid;

use super::{
    flow::{self, Logged},
    table, Outcome,
};

/// One hop of the journey.
#[derive(Debug, Clone, Serialize)]
struct Hop {
    /// The message's topic.
    topic: String,
    /// The event it carries.
    event_type: String,
    /// The group whose work the hop is: the producer, or `logging`.
    group: String,
    /// `published` (the producer made the message) or `logged` (the log stored it).
    step: &'static str,
    message_id: Uuid,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    /// Since the order was placed.
    at_ms: f64,
    /// Since its cause.
    latency_ms: f64,
}

/// What `journey --json` prints beside the common fields.
#[derive(Debug, Serialize)]
struct Journey {
    order_id: Uuid,
    /// How long `POST /orders` took to answer.
    request_ms: f64,
    /// In the order they happened.
    hops: Vec<Hop>,
    /// Every message carries the order id as its correlation id.
    correlated: bool,
    /// Every message's cause is in the journey and came before it; every latency ≥ 0.
    causal: bool,
    /// Every event of a paid order is there.
    complete: bool,
    /// From `placed_at` to the last hop.
    end_to_end_ms: f64,
}

/// Runs the scenario on `broker_url`.
pub async fn run(broker_url: String) -> anyhow::Result<Outcome> {
    let stack = flow::start_stack(&broker_url).await?;
    let endpoints = stack.endpoints();
    let expected = flow::paid_journey();
    let measured = async {
        let placed = flow::place_one(&endpoints.order).await?;
        let events = flow::logged_journey(&endpoints.logging, placed.order_id, &expected).await?;
        anyhow::Ok((placed, events))
    }
    .await;
    stack.stop().await?;
    let (placed, events) = measured?;
    let report = follow(
        placed.order_id,
        placed.request.as_secs_f64() * 1e3,
        &events,
        &expected,
    )?;
    let holds = report.correlated && report.causal && report.complete;
    Ok(Outcome {
        holds,
        table: render(&report),
        json: serde_json::to_value(&report)?,
    })
}

/// The hops of `events` (one order's logged journey), checked.
fn follow(
    order_id: Uuid,
    request_ms: f64,
    events: &[Logged],
    expected: &[EventKind],
) -> anyhow::Result<Journey> {
    let placed = events
        .iter()
        .find(|event| event.event_type == EventKind::OrderPlaced.name())
        .ok_or_else(|| anyhow::anyhow!("no OrderPlaced in the journey"))?;
    let placed_at: DateTime<Utc> = placed.payload["data"]["placed_at"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("OrderPlaced without placed_at"))?
        .parse()?;
    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3
    };
    let mut causal = true;
    let mut hops = Vec::new();
    for event in events {
        let causation_id = event.header(headers::CAUSATION_ID).map(str::to_owned);
        let cause_at = match &causation_id {
            None => placed_at,
            Some(cause) => match events
                .iter()
                .find(|other| other.message_id.to_string() == *cause)
            {
                Some(cause) => cause.published_at,
                None => {
                    // Caused by a message that is not part of this order's journey.
                    causal = false;
                    event.published_at
                }
            },
        };
        let hop = |group: &str, step, at: DateTime<Utc>, since: DateTime<Utc>| Hop {
            topic: event.topic.clone(),
            event_type: event.event_type.clone(),
            group: group.to_owned(),
            step,
            message_id: event.message_id,
            correlation_id: event.header(headers::CORRELATION_ID).map(str::to_owned),
            causation_id: causation_id.clone(),
            at_ms: ms(placed_at, at),
            latency_ms: ms(since, at),
        };
        let producer = topology::publisher_of(&event.topic).unwrap_or("unknown");
        hops.push(hop(producer, "published", event.published_at, cause_at));
        hops.push(hop(
            topology::LOGGING.group,
            "logged",
            event.logged_at,
            event.published_at,
        ));
    }
    hops.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    causal &= hops
        .iter()
        .all(|hop| hop.latency_ms >= 0.0 && hop.at_ms >= 0.0);
    let correlated = hops
        .iter()
        .all(|hop| hop.correlation_id.as_deref() == Some(order_id.to_string().as_str()));
    let complete = expected.iter().all(|kind| {
        events
            .iter()
            .filter(|event| event.event_type == kind.name())
            .count()
            == 1
    });
    Ok(Journey {
        order_id,
        request_ms: round(request_ms),
        end_to_end_ms: hops.last().map_or(0.0, |hop| round(hop.at_ms)),
        hops: hops
            .into_iter()
            .map(|hop| Hop {
                at_ms: round(hop.at_ms),
                latency_ms: round(hop.latency_ms),
                ..hop
            })
            .collect(),
        correlated,
        causal,
        complete,
    })
}

/// To a hundredth of a millisecond: finer than that is the clock's noise.
fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

fn render(report: &Journey) -> String {
    let mut rows = vec![vec![
        "hop".to_owned(),
        "topic".to_owned(),
        "group".to_owned(),
        "step".to_owned(),
        "at".to_owned(),
        "latency".to_owned(),
    ]];
    rows.extend(report.hops.iter().enumerate().map(|(index, hop)| {
        vec![
            (index + 1).to_string(),
            hop.topic.clone(),
            hop.group.clone(),
            hop.step.to_owned(),
            format!("+{:.2} ms", hop.at_ms),
            format!("{:.2} ms", hop.latency_ms),
        ]
    }));
    let yes = |ok: bool| if ok { "yes" } else { "NO" };
    format!(
        "journey of order {} (its correlation id), read back from the log; \
         POST /orders answered in {:.2} ms\n{}  \
         every message correlated: {}; causes before effects: {}; every event once: {}; \
         placed to last hop: {:.2} ms\n",
        report.order_id,
        report.request_ms,
        table::render(&rows),
        yes(report.correlated),
        yes(report.causal),
        yes(report.complete),
        report.end_to_end_ms,
    )
}
