//! Raw-client pipeline for the Kafka benchmark: what [`super::abstraction`] does, with
//! rdkafka alone.
//!
//! A fresh topic of 3 partitions created through the admin API; N records produced in
//! batches of [`super::BATCH`] by an idempotent producer with `acks=all` (each batch
//! enqueued, then its delivery reports awaited together), keyed over [`super::KEYS`]
//! keys; then a consumer in a fresh group, auto-commit off, that handles the records one
//! at a time and commits the offsets it has handled asynchronously, at most every 50 ms
//! (what the abstraction's committer does). The topic is deleted at the end.
//!
//! Each record carries what an application needs to do the same job without the
//! abstraction: a `message-id` header to deduplicate on and the `published-at` header
//! (`docs/events.md`). Headers and ids are built before the clock starts, like the
//! abstraction's envelopes, so the ratio printed is the abstraction's own cost. The
//! client settings come from the abstraction's own builders
//! ([`orderflow_broker::kafka::config`]), so both pipelines run with the same ones; only
//! the client id differs. Everything else here is rdkafka alone.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use orderflow_broker::kafka::{
    config::{admin_config, consumer_config, parse_url, producer_config},
    COMMIT_INTERVAL, PARTITIONS,
};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    message::{Header, Headers, Message, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    ClientConfig, ClientContext, Offset, TopicPartitionList,
};
use tokio::sync::Notify;

use super::{per_second, Rates, BATCH, KEYS};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes then consumes `messages` messages of `payload_bytes` through the raw client.
pub async fn run(url: &str, messages: usize, payload_bytes: usize) -> anyhow::Result<Rates> {
    let bootstrap = parse_url(url)?;
    let bootstrap = bootstrap.as_str();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("bench-raw-{run}");

    let admin: AdminClient<DefaultClientContext> = raw_client(admin_config(bootstrap)).create()?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(-1),
            )],
            &options,
        )
        .await?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }

    let producer: FutureProducer = raw_client(producer_config(bootstrap)).create()?;

    // The abstraction's producer is connected (and the topic known to it) before its
    // clock starts; give this one the same head start.
    let warm = producer.clone();
    let warm_topic = topic.clone();
    tokio::task::spawn_blocking(move || warm.client().fetch_metadata(Some(&warm_topic), TIMEOUT))
        .await??;

    let payload = vec![b'x'; payload_bytes];
    let keys: Vec<String> = (0..KEYS).map(|key| format!("key-{key}")).collect();
    let published_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let headers: Vec<OwnedHeaders> = (0..messages)
        .map(|_| {
            let id = uuid::Uuid::now_v7().to_string();
            OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "message-id",
                    value: Some(id.as_str()),
                })
                .insert(Header {
                    key: "published-at",
                    value: Some(published_at.as_str()),
                })
        })
        .collect();

    let started = Instant::now();
    let mut headers = headers.into_iter();
    let mut sent = 0;
    while sent < messages {
        let batch = BATCH.min(messages - sent);
        let mut reports = Vec::with_capacity(batch);
        for (index, record_headers) in (sent..sent + batch).zip(headers.by_ref()) {
            let mut record = FutureRecord::to(&topic)
                .key(keys[index % KEYS].as_str())
                .payload(payload.as_slice())
                .headers(record_headers);
            // Enqueue without waiting; only a full local queue makes us pause.
            loop {
                match producer.send_result(record) {
                    Ok(report) => break reports.push(report),
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        returned,
                    )) => {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
        }
        for report in reports {
            report
                .await
                .context("producer closed before the report")?
                .map_err(|(error, _)| error)?;
        }
        sent += batch;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let assigned = Arc::new(Notify::new());
    let consumer: StreamConsumer<Assignments> =
        raw_client(consumer_config(bootstrap, &format!("bench-raw-{run}")))
            .create_with_context(Assignments(assigned.clone()))?;
    consumer.subscribe(&[&topic])?;
    // Like the abstraction's `subscribe`, start the clock once the group is joined.
    let mut first = None;
    tokio::select! {
        _ = assigned.notified() => {}
        message = consumer.recv() => first = Some(message?.detach()),
        _ = tokio::time::sleep(TIMEOUT) => anyhow::bail!("no partition assignment in {TIMEOUT:?}"),
    }

    let started = Instant::now();
    let mut handled = usize::from(first.is_some());
    let mut positions: HashMap<i32, i64> = HashMap::new();
    if let Some(message) = &first {
        positions.insert(message.partition(), message.offset() + 1);
    }
    let mut last_commit = Instant::now();
    while handled < messages {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .with_context(|| format!("received {handled} of {messages}"))??;
        // "Handling": the abstraction turns the record into an envelope; a raw
        // application at least reads its id.
        let _id = message
            .headers()
            .and_then(|headers| headers.iter().find(|header| header.key == "message-id"))
            .and_then(|header| header.value);
        positions.insert(message.partition(), message.offset() + 1);
        handled += 1;
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            consumer.commit(&offsets(&topic, &positions)?, CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    let consume_seconds = started.elapsed().as_secs_f64();
    consumer.commit(&offsets(&topic, &positions)?, CommitMode::Async)?;

    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    let _ = admin.delete_topics(&[&topic], &options).await;
    Ok(Rates {
        publish_per_s: per_second(messages, publish_seconds),
        consume_per_s: per_second(messages, consume_seconds),
    })
}

/// The abstraction's settings for a client, under a client id of this pipeline's own so
/// that the broker's logs tell the two pipelines apart.
fn raw_client(mut config: ClientConfig) -> ClientConfig {
    config.set("client.id", "orderflow-bench-raw");
    config
}

fn offsets(topic: &str, positions: &HashMap<i32, i64>) -> anyhow::Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in positions {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(list)
}

/// Wakes the benchmark once the consumer has its partitions.
struct Assignments(Arc<Notify>);

impl ClientContext for Assignments {}

impl ConsumerContext for Assignments {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.notify_one();
        }
    }
}
