//! `poison`: malformed messages published straight to the order flow's topics, mixed into
//! the stream of real ones — payloads that are not JSON, and JSON events with a field of
//! the wrong shape. Every consumer group that receives the topic must dead-letter each
//! one at once, with the reason, and go on: the ledger's dead letters must equal exactly
//! the poison deliveries (one per receiving group), with nothing lost.

use std::time::Duration;

use anyhow::Context;
use orderflow_events::{headers, topology, Envelope, EventKind};

use super::{run::Fault, Setup};

/// The poison scenario runs on a clean stream in process: poison is not a broker fault.
pub(crate) const MEMORY_FAULTS: &str = "";

/// How many poison messages the scenario mixes in: one per hundred orders, at least ten.
pub(crate) fn setup(orders: usize) -> Setup {
    Setup {
        poison: (orders / 100).max(10),
        ..Setup::default()
    }
}

/// Publishes the poison in five bursts, between which the real orders keep flowing.
pub(crate) async fn inject(fault: &mut Fault<'_>) -> anyhow::Result<()> {
    let total = fault.poison;
    let mut published = 0;
    for burst in 1..=5 {
        let count = total * burst / 5 - published;
        fault.publish_poison(count).await?;
        published += count;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Publishes poison messages `first..first + count` through a connection of their own to
/// `broker_url`, round robin over every topic (message `n` goes to topic `n mod 5`, so
/// bursts that continue the numbering cover every topic), and returns how many dead
/// letters they must produce.
/// How long publishing the poison may keep failing before the run gives up.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(180);

pub(crate) async fn publish(broker_url: &str, first: usize, count: usize) -> anyhow::Result<u64> {
    if count == 0 {
        return Ok(0);
    }
    let broker = orderflow_broker::connect(broker_url).await?;
    let topics = orderflow_events::topics::ALL;
    let mut expected = 0;
    let poison: Vec<Envelope> = (first..first + count)
        .map(|n| {
            let topic = topics[n % topics.len()];
            expected += receivers(topic);
            malformed(topic, n)
        })
        .collect();
    // A broker still recovering from the faults can time a publish out (tansu under this
    // load: "Message timed out" after 30 s); the suite then publishes the same messages
    // again, as the services' relays do. A copy that did land the first time is dead-
    // lettered twice, which the ledger allows (at least the expected dead letters).
    let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
    let published = loop {
        match broker.publish_all(poison.clone()).await {
            Ok(()) => break Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "publishing the poison failed; publishing it again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => break Err(error),
        }
    };
    let _ = broker.close().await;
    published.with_context(|| format!("publishing the poison for {PUBLISH_PATIENCE:?}"))?;
    Ok(expected)
}

/// How many consumer groups receive `topic`.
fn receivers(topic: &str) -> u64 {
    topology::GROUPS
        .iter()
        .filter(|group| group.topics.contains(&topic))
        .count() as u64
}

/// The `n`th poison message for `topic`: alternately not JSON at all, and an event of the
/// topic's type whose order id is not an id. Its key is its own, so no real order's
/// per-key queue waits behind it.
fn malformed(topic: &str, n: usize) -> Envelope {
    let type_name = EventKind::ALL
        .into_iter()
        .find(|kind| kind.topic() == topic)
        .map_or_else(|| topic.to_owned(), |kind| kind.name().to_owned());
    let payload = if n.is_multiple_of(2) {
        b"{\"this is\": not json".to_vec()
    } else {
        serde_json::to_vec(&serde_json::json!({
            "type": &type_name,
            "version": orderflow_events::SCHEMA_VERSION,
            "data": { "order_id": "not-an-order-id", "amount_cents": "lots" },
        }))
        .expect("a literal serializes")
    };
    Envelope::new(topic, format!("poison-{}", uuid::Uuid::now_v7()), payload)
        .with_header(headers::EVENT_TYPE, type_name.as_str())
        .with_header(headers::CORRELATION_ID, "poison")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_does_not_decode_and_reaches_every_group_of_its_topic() {
        for n in 0..2 {
            let envelope = malformed(orderflow_events::topics::ORDER_PLACED, n);
            assert!(orderflow_events::Event::decode(&envelope.payload).is_err());
        }
        // order.placed: payment and logging; payment.succeeded: order, points, sms, logging.
        assert_eq!(receivers(orderflow_events::topics::ORDER_PLACED), 2);
        assert_eq!(receivers(orderflow_events::topics::PAYMENT_SUCCEEDED), 4);
    }
}
