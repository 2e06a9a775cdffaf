//! A record that cannot be turned into an envelope (no `message-id`, headers that are not
//! UTF-8) goes to the group's dead-letter topic `<group>.dlq` with the reason, so that one
//! foreign record never blocks its partition.

use std::sync::Arc;

use rdkafka::{
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::FutureRecord,
};
use uuid::Uuid;

use super::{broker::lock, consume::Consumption, offsets::Slot};
use crate::headers;

/// The key and headers under which a record that is not an envelope goes to the
/// dead-letter topic. The copy is made readable as an envelope, so that
/// [`Subscriber::subscribe_dead_letters`] can hand it out like any dead letter: key and
/// header values become UTF-8 (invalid bytes replaced), and a record without a usable
/// `message-id` gets a fresh one. The payload is kept byte for byte.
///
/// [`Subscriber::subscribe_dead_letters`]: crate::Subscriber::subscribe_dead_letters
fn dead_letter_form(record: &OwnedMessage, reason: &str, group: &str) -> (String, OwnedHeaders) {
    let ours = [
        headers::DEAD_LETTER_REASON,
        headers::DEAD_LETTERED_BY,
        headers::MESSAGE_TOPIC,
    ];
    let mut has_id = false;
    let mut dead_headers = OwnedHeaders::new();
    for header in record
        .headers()
        .into_iter()
        .flat_map(|original| original.iter())
    {
        let value = String::from_utf8_lossy(header.value.unwrap_or_default());
        if header.key == headers::MESSAGE_ID {
            if Uuid::parse_str(&value).is_err() {
                continue;
            }
            has_id = true;
        }
        if ours.contains(&header.key) {
            continue;
        }
        dead_headers = dead_headers.insert(Header {
            key: header.key,
            value: Some(value.as_ref()),
        });
    }
    if !has_id {
        let id = Uuid::now_v7().to_string();
        dead_headers = dead_headers.insert(Header {
            key: headers::MESSAGE_ID,
            value: Some(id.as_str()),
        });
    }
    let dead_headers = dead_headers
        .insert(Header {
            key: headers::DEAD_LETTER_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::DEAD_LETTERED_BY,
            value: Some(group),
        })
        .insert(Header {
            key: headers::MESSAGE_TOPIC,
            value: Some(record.topic()),
        });
    let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
    (key, dead_headers)
}

/// Moves a record that is not an envelope to the group's dead-letter topic, then marks
/// it settled. Retries until the broker takes it: settling it earlier would lose it.
pub(super) async fn dead_letter_record(
    consumption: Arc<Consumption>,
    record: OwnedMessage,
    reason: String,
    slot: Slot,
) {
    tracing::warn!(
        group = %consumption.group,
        topic = record.topic(),
        partition = record.partition(),
        offset = record.offset(),
        %reason,
        "record is not an orderflow envelope; dead-lettering it"
    );
    let topic = consumption.dead_letter_topic.as_str();
    let (key, record_headers) = dead_letter_form(&record, &reason, &consumption.group);
    let mut attempt = 0;
    loop {
        // The partition went to another consumer meanwhile: that one gets the record
        // again from the last commit and dead-letters it itself.
        if !lock(&consumption.tracker).is_current(&slot) {
            return;
        }
        attempt += 1;
        let outcome = async {
            consumption.inner.ensure_topics(&[topic]).await?;
            let mut dead = FutureRecord::<str, [u8]>::to(topic)
                .key(key.as_str())
                .headers(record_headers.clone());
            if let Some(payload) = record.payload() {
                dead = dead.payload(payload);
            }
            let producer = consumption.inner.producer();
            let report = producer
                .send_result(dead)
                .map_err(|(error, _)| error.to_string())?;
            match report.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error.to_string()),
                Err(_) => Err("the producer went away".to_owned()),
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                consumption.settle(&slot);
                return;
            }
            Err(error) => {
                tracing::warn!(group = %consumption.group, %error, "dead-lettering a record failed; retrying");
                tokio::time::sleep(crate::retry_backoff(attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::{producer::FutureProducer, Timestamp};

    use super::super::{config::producer_config, wire::envelope_from, KafkaBroker};
    use super::*;
    use crate::{Broker, Envelope, Publisher, Subscriber, Subscription};

    #[test]
    fn a_foreign_record_is_dead_lettered_as_a_readable_envelope() {
        let record = OwnedMessage::new(
            Some(vec![0xff, 0x00]),
            Some(vec![b'k', 0xff]),
            "orders".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(OwnedHeaders::new().insert(Header {
                key: "note",
                value: Some(&[0xffu8][..]),
            })),
        );
        let reason = envelope_from(&record).unwrap_err();
        let (key, dead_headers) = dead_letter_form(&record, &reason, "billing");
        let copy = OwnedMessage::new(
            record.payload().map(<[u8]>::to_vec),
            Some(key.into_bytes()),
            "billing.dlq".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(dead_headers),
        );
        let envelope = envelope_from(&copy).expect("the copy is an envelope");
        assert_eq!(envelope.key, "k\u{fffd}");
        assert_eq!(&envelope.payload[..], &[0xff, 0x00]);
        assert_eq!(
            envelope.header(headers::DEAD_LETTER_REASON),
            Some(reason.as_str())
        );
        assert_eq!(envelope.header(headers::DEAD_LETTERED_BY), Some("billing"));
        assert_eq!(envelope.header(headers::MESSAGE_TOPIC), Some("orders"));
        assert_eq!(envelope.header("note"), Some("\u{fffd}"));
    }

    /// Against a live broker (`ORDERFLOW_KAFKA_URL`, set by `scripts/test.sh`): a record
    /// some other producer wrote without our headers neither blocks its partition nor
    /// vanishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_record_goes_to_the_dead_letter_topic_and_the_next_is_delivered() {
        let Some(url) =
            orderflow_kit::testenv::require("ORDERFLOW_KAFKA_URL", "a Kafka-protocol broker")
        else {
            return;
        };
        let broker = KafkaBroker::connect(&url).await.unwrap();
        let run = Uuid::now_v7().simple();
        let topic = format!("foreign-{run}");
        let group = format!("tolerant-{run}");
        let subscription = Subscription::new(&group, [&topic]);
        let mut deliveries = broker.subscribe(subscription.clone()).await.unwrap();

        // The foreign record first, then a good one with the same key: same partition, so
        // the good one can only arrive once the foreign one is out of the way.
        let raw: FutureProducer = producer_config(&broker.inner.bootstrap).create().unwrap();
        raw.send(
            FutureRecord::to(&topic)
                .key("k")
                .payload("no headers at all"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let good = Envelope::new(&topic, "k", "good");
        broker.publish(good.clone()).await.unwrap();

        let delivery = deliveries
            .next_within(Duration::from_secs(30))
            .await
            .expect("the good message");
        assert_eq!(delivery.envelope().id, good.id);
        delivery.ack().await.unwrap();

        let mut dead = broker.subscribe_dead_letters(&group).await.unwrap();
        let dead_letter = dead
            .next_within(Duration::from_secs(30))
            .await
            .expect("the foreign record on the dead-letter topic");
        let envelope = dead_letter.envelope().clone();
        dead_letter.ack().await.unwrap();
        assert_eq!(&envelope.payload[..], b"no headers at all");
        assert_eq!(
            envelope.header(headers::MESSAGE_TOPIC),
            Some(topic.as_str())
        );
        let reason = envelope.header(headers::DEAD_LETTER_REASON).unwrap();
        assert!(reason.contains(headers::MESSAGE_ID), "{reason}");

        // Both records of the topic count as settled: the group's backlog drains.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let backlog = broker.backlog(&subscription).await.unwrap();
            if backlog == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "backlog stuck at {backlog}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop((deliveries, dead));
        broker.close().await.unwrap();
    }
}
