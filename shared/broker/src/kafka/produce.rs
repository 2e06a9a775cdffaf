//! Publishing through the one idempotent producer (`acks=all`): a batch is enqueued
//! whole, then its delivery reports are awaited together. A producer that fails fatally
//! is replaced.

use std::time::Duration;

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};

use super::{broker::Inner, config::producer_config, wire::record_headers};
use crate::{BrokerError, Envelope, Result};

/// How long publishing waits for room when librdkafka's local queue is full.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn publish_error(topic: &str, detail: impl ToString) -> BrokerError {
    BrokerError::Publish {
        topic: topic.to_owned(),
        detail: detail.to_string(),
    }
}

impl Inner {
    /// After a failed publish: if the producer is dead for good (a fatal idempotence
    /// error, e.g. a restarted broker that forgot our producer id), put a new one in its
    /// place so that the next publish can succeed.
    fn replace_producer_if_fatal(&self, failed: &FutureProducer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another publish may have replaced it already.
        if current.client().native_ptr() != failed.client().native_ptr() {
            return;
        }
        tracing::warn!(?code, %reason, "kafka producer failed fatally; creating a new one");
        match producer_config(&self.bootstrap).create::<FutureProducer>() {
            Ok(fresh) => *current = fresh,
            Err(error) => tracing::error!(%error, "cannot create a new kafka producer"),
        }
    }

    /// Enqueues one record; waits (briefly) only when librdkafka's local queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        topic: &str,
        envelope: &Envelope,
    ) -> Result<DeliveryFuture> {
        let mut record = FutureRecord::to(topic)
            .key(envelope.key.as_str())
            .payload(envelope.payload.as_ref())
            .headers(record_headers(envelope))
            .timestamp(envelope.published_at.timestamp_millis());
        let deadline = tokio::time::Instant::now() + QUEUE_FULL_TIMEOUT;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                // librdkafka's local queue is full: give it a moment to hand records to
                // the broker, then offer the same record (handed back with the error) again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(publish_error(topic, error)),
            }
        }
    }

    /// Produces envelopes to `topic` (or each to its own topic when `None`), pipelined:
    /// everything is enqueued, then the delivery reports are awaited.
    pub(super) async fn produce(&self, topic: Option<&str>, envelopes: &[Envelope]) -> Result<()> {
        if self.is_closing() {
            return Err(BrokerError::Closed);
        }
        match topic {
            Some(topic) => self.ensure_topics(&[topic]).await,
            None => {
                // A batch usually goes to one topic or a few: collect them without
                // hashing every envelope's topic.
                let mut topics: Vec<&str> = Vec::new();
                for envelope in envelopes {
                    if !topics.contains(&envelope.topic.as_str()) {
                        topics.push(&envelope.topic);
                    }
                }
                self.ensure_topics(&topics).await
            }
        }
        .map_err(|detail| {
            let topic = topic.or_else(|| envelopes.first().map(|envelope| envelope.topic.as_str()));
            publish_error(topic.unwrap_or(""), detail)
        })?;

        // One producer handle for the whole batch: on failure, the one whose fatal
        // error `replace_producer_if_fatal` looks for.
        let producer = self.producer();
        // First enqueue everything: librdkafka batches the records on the wire (linger.ms)
        // while we go on. Ordering per key holds because one key maps to one partition.
        let mut reports = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let topic = topic.unwrap_or(envelope.topic.as_str());
            match self.enqueue(&producer, topic, envelope).await {
                Ok(report) => reports.push((topic, report)),
                Err(error) => {
                    self.replace_producer_if_fatal(&producer);
                    return Err(error);
                }
            }
        }
        // Then await every delivery report, also after a failure, so that no record of
        // the batch is still on its way when the caller hears of the error.
        let mut first_error = None;
        for (topic, report) in reports {
            let outcome = match report.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => publish_error(topic, error),
                Err(_) => {
                    publish_error(topic, "the producer went away before the broker confirmed")
                }
            };
            first_error.get_or_insert(outcome);
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                self.replace_producer_if_fatal(&producer);
                Err(error)
            }
        }
    }
}
