//! The last stage, *logged*: the logging service publishes nothing when it has stored an
//! event, so the observer cannot see it. Instead, once the observer has seen every event
//! of an order, this checker asks the logging service for that order's journey
//! (`GET /events?order_id=`) until every expected event type is there.
//!
//! The time recorded is when the check found the journey complete, so it is an upper
//! bound, late by at most one check. A few checks run at once and an incomplete journey
//! is asked about again after [`RECHECK_AFTER`], so the checker adds little load of its own
//! to the service it measures.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::StreamExt;
use orderflow_events::EventKind;
use orderflow_kit::shutdown::CancellationToken;
use tokio::{sync::mpsc, time::Instant};
use uuid::Uuid;

use super::stages::{Journeys, Stage};

/// Journeys asked about at once.
const CONCURRENT_CHECKS: usize = 4;
/// How long before an incomplete journey is asked about again.
pub const RECHECK_AFTER: Duration = Duration::from_millis(250);

/// The one field of a logged event the checker reads.
#[derive(serde::Deserialize)]
struct LoggedEvent {
    event_type: String,
}

/// Checks the orders sent on `complete` against the logging service at `logging_url`
/// until `stop` is cancelled. `recheck` sends on the same channel as the observer does:
/// an incomplete journey goes back in line.
pub async fn run(
    logging_url: String,
    complete: mpsc::UnboundedReceiver<Uuid>,
    recheck: mpsc::UnboundedSender<Uuid>,
    start: Instant,
    journeys: Arc<Journeys>,
    stop: CancellationToken,
) {
    let client = reqwest::Client::new();
    let url = format!("{}/events", logging_url.trim_end_matches('/'));
    let checks = stream_of(complete).for_each_concurrent(CONCURRENT_CHECKS, |order_id| {
        let (client, url, journeys, recheck) = (
            client.clone(),
            url.clone(),
            journeys.clone(),
            recheck.clone(),
        );
        async move {
            let Some(journey) = journeys.get(&order_id) else {
                return;
            };
            if is_logged(&client, &url, order_id, journey.expected_log()).await {
                journeys.reach(order_id, Stage::Logged, start.elapsed());
            } else {
                // Not yet: ask again a little later, without holding a check slot.
                tokio::spawn(async move {
                    tokio::time::sleep(RECHECK_AFTER).await;
                    let _ = recheck.send(order_id);
                });
            }
        }
    });
    tokio::select! {
        () = checks => {}
        () = stop.cancelled() => {}
    }
}

fn stream_of(mut receiver: mpsc::UnboundedReceiver<Uuid>) -> impl futures::Stream<Item = Uuid> {
    futures::stream::poll_fn(move |context| receiver.poll_recv(context))
}

/// Whether the logging service holds every event type in `expected` for `order_id`.
async fn is_logged(
    client: &reqwest::Client,
    url: &str,
    order_id: Uuid,
    expected: &[EventKind],
) -> bool {
    let response = client
        .get(url)
        .query(&[("order_id", order_id.to_string())])
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let Ok(response) = response.and_then(|response| response.error_for_status()) else {
        return false;
    };
    let Ok(events) = response.json::<Vec<LoggedEvent>>().await else {
        return false;
    };
    let logged: HashSet<&str> = events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    expected.iter().all(|kind| logged.contains(kind.name()))
}
