//! `orderflow bench broker`: the abstraction against the raw client, same run, same settings.
//!
//! [`abstraction`] publishes N persistent messages through `orderflow-broker` in batches of
//! [`BATCH`] (confirms pipelined inside each batch) and then consumes and acks them one by
//! one with a prefetch of [`PREFETCH`]. Each raw module (`raw_memory.rs`,
//! `raw_rabbitmq.rs`, `raw_kafka.rs`) does the same work with the client library alone (the
//! Kafka one with the backend's own client settings, `kafka/config.rs`, so that only the
//! pipeline differs), so the ratio printed is what the abstraction costs.

pub mod raw_kafka;
pub mod raw_memory;
pub mod raw_rabbitmq;

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use orderflow_broker::{Envelope, Subscription};

/// Messages per `publish_all` call (and per confirm wave in the raw pipelines).
pub const BATCH: usize = 1_000;
/// Unacked deliveries a consumer may hold (and the raw consumers' prefetch).
pub const PREFETCH: u16 = 256;
/// Distinct ordering keys the messages are spread over.
pub const KEYS: usize = 1_000;

/// Throughput of one pipeline, measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Messages per second from the first publish until the last confirm.
    pub publish_per_s: f64,
    /// Messages per second from the start of consuming until the last ack.
    pub consume_per_s: f64,
}

/// Messages per second for `count` messages in `seconds`.
pub fn per_second(count: usize, seconds: f64) -> f64 {
    count as f64 / seconds.max(1e-9)
}

/// Runs the abstraction's pipeline against the broker at `url`.
pub async fn abstraction(
    url: &str,
    messages: usize,
    payload_bytes: usize,
) -> anyhow::Result<Rates> {
    // Everything is published before anything is consumed, so the embedded broker's
    // queue must hold all of it (its default bound would make the publisher wait forever).
    let url = if url.starts_with("memory://") && !url.contains("capacity=") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}capacity={}", messages.max(1))
    } else {
        url.to_owned()
    };
    let url = url.as_str();
    let broker = orderflow_broker::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("bench-{run}");
    let subscription = Subscription::new(format!("bench-{run}"), [&topic]).with_prefetch(PREFETCH);
    broker.declare(&subscription).await?;

    // Built before the clock starts, like the raw pipelines build their payloads.
    let payload = Bytes::from(vec![b'x'; payload_bytes]);
    let keys: Vec<String> = (0..KEYS).map(|key| format!("key-{key}")).collect();
    let mut batches: Vec<Vec<Envelope>> = Vec::new();
    for start in (0..messages).step_by(BATCH) {
        let end = (start + BATCH).min(messages);
        batches.push(
            (start..end)
                .map(|index| {
                    Envelope::new(topic.as_str(), keys[index % KEYS].as_str(), payload.clone())
                })
                .collect(),
        );
    }

    let started = Instant::now();
    for batch in batches {
        broker.publish_all(batch).await?;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let mut deliveries = broker.subscribe(subscription).await?;
    let started = Instant::now();
    for received in 0..messages {
        let delivery = deliveries
            .next()
            .await
            .with_context(|| format!("subscription ended after {received} of {messages}"))?;
        delivery.ack().await?;
    }
    let consume_seconds = started.elapsed().as_secs_f64();
    drop(deliveries);
    broker.close().await?;
    Ok(Rates {
        publish_per_s: per_second(messages, publish_seconds),
        consume_per_s: per_second(messages, consume_seconds),
    })
}

/// Runs the raw client's pipeline for the backend the URL names.
pub async fn raw(url: &str, messages: usize, payload_bytes: usize) -> anyhow::Result<Rates> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") => raw_memory::run(url, messages, payload_bytes).await,
        Some("amqp" | "amqps") => raw_rabbitmq::run(url, messages, payload_bytes).await,
        Some("kafka") => raw_kafka::run(url, messages, payload_bytes).await,
        _ => anyhow::bail!("unknown broker URL {url}: expected memory://, amqp:// or kafka://"),
    }
}
