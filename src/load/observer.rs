//! Watching the journey as it happens: a consumer group of the load run's own on every
//! topic of the order flow.
//!
//! Every group subscribed to a topic gets every message (the broker contract), so a group
//! with a unique name (`load-observer-<uuid>`) sees each event the moment it is published
//! without taking anything from the services' own groups. It is declared before the first
//! order is sent — a broker keeps messages only for the groups that exist when they are
//! published — and it acks at once: it only notes when each order reached each stage.
//!
//! A stage is timed when the observer sees its event, except the text: an `SmsSent` is
//! timed by its own `sent_at`, when the gateway accepted it. The relay publishes in
//! batches, so the sighting of a text can fall in the second after it was sent, and "SMS
//! sent per second", compared with the gateway's limit, must count the gateway's seconds.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use orderflow_broker::{Broker, Deliveries, Envelope, Subscription};
use orderflow_events::{headers, topics, Event, EventKind};
use orderflow_kit::shutdown::CancellationToken;
use tokio::{sync::mpsc, time::Instant};
use uuid::Uuid;

use super::stages::{Journeys, Stage};

/// How many deliveries the observer may hold unacked: it acks at once, so this only
/// bounds what the broker pushes ahead.
const PREFETCH: u16 = 1024;

/// The observer's subscription: a group of its own on every topic.
pub fn subscription() -> Subscription {
    Subscription::new(
        format!("load-observer-{}", Uuid::now_v7().simple()),
        topics::ALL,
    )
    .with_prefetch(PREFETCH)
}

/// Subscribes before the run, so that nothing published from now on is missed.
pub async fn start(broker: &Arc<dyn Broker>) -> anyhow::Result<(Subscription, Deliveries)> {
    let subscription = subscription();
    let deliveries = broker.subscribe(subscription.clone()).await?;
    Ok((subscription, deliveries))
}

/// Which order and stage a message is about: the event type header and the message key
/// (the order id), or, should either be missing, the decoded payload.
fn stage_of(envelope: &Envelope) -> Option<(Uuid, Stage)> {
    let from_headers = envelope
        .header(headers::EVENT_TYPE)
        .and_then(EventKind::from_name)
        .zip(envelope.key.parse::<Uuid>().ok());
    let (kind, order_id) = match from_headers {
        Some(found) => found,
        None => {
            let event = Event::decode(&envelope.payload).ok()?;
            (event.kind(), event.order_id())
        }
    };
    Some((order_id, Stage::of_event(kind)))
}

/// When the gateway accepted the text an `SmsSent` envelope reports, as a time since the
/// run's start (`started` on the wall clock); `None` for any other event or a payload that
/// does not decode (the sighting then stands).
fn text_sent_at(envelope: &Envelope, started: DateTime<Utc>) -> Option<Duration> {
    if envelope
        .header(headers::EVENT_TYPE)
        .and_then(EventKind::from_name)
        != Some(EventKind::SmsSent)
    {
        return None;
    }
    match Event::decode(&envelope.payload).ok()? {
        // Before the start only by clock skew between processes: the start, then.
        Event::SmsSent(sent) => Some((sent.sent_at - started).to_std().unwrap_or_default()),
        _ => None,
    }
}

/// Consumes until `deliveries` ends or is dropped (the run drops it when done): records
/// each first sighting in `journeys` and hands each order whose events are complete to
/// `complete` (the log checker). Returns how many messages could not be read.
pub async fn run(
    mut deliveries: Deliveries,
    start: Instant,
    journeys: Arc<Journeys>,
    complete: Option<mpsc::UnboundedSender<Uuid>>,
    stop: CancellationToken,
) -> u64 {
    let mut unreadable = 0;
    let started = Utc::now()
        - chrono::Duration::from_std(start.elapsed()).unwrap_or_else(|_| chrono::Duration::zero());
    loop {
        let delivery = tokio::select! {
            delivery = deliveries.next() => delivery,
            () = stop.cancelled() => None,
        };
        let Some(delivery) = delivery else {
            return unreadable;
        };
        let envelope = delivery.envelope();
        let at = text_sent_at(envelope, started).unwrap_or_else(|| start.elapsed());
        match stage_of(envelope) {
            Some((order_id, stage)) => {
                let reached = journeys.reach(order_id, stage, at);
                if let (true, Some(complete)) = (reached.events_complete, &complete) {
                    let _ = complete.send(order_id);
                }
            }
            None => unreadable += 1,
        }
        // A failed ack only means the message comes again: a repeat, counted as such.
        let _ = delivery.ack().await;
    }
}
