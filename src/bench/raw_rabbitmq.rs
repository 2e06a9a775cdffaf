//! Raw-client pipeline for the RabbitMQ benchmark: what [`super::abstraction`] does, with
//! lapin alone.
//!
//! A fresh durable queue bound to the `orderflow` topic exchange with a fresh topic, as a
//! consumer group's queue is; N persistent messages published to that topic in batches of
//! [`super::BATCH`] on a confirm-mode channel (each batch written, then its confirms
//! awaited together); then a consumer with prefetch [`super::PREFETCH`] acking one
//! message at a time; the queue deleted at the end.
//!
//! The messages are the ones `docs/events.md` specifies, byte for byte the same shape as
//! the abstraction's (`message_id`, persistent, `content_type`, `timestamp`, the
//! `message-key` and `published-at` headers): a program using lapin directly would have
//! to send exactly that to interoperate. They are built before the clock starts, as the
//! abstraction's envelopes are, so the ratio printed is what the abstraction itself adds
//! (envelope conversion, the consumer task and channel, settle handles) and not the cost
//! of the wire format, which both pay.
//!
//! lapin is used the way its documentation shows: each `basic_publish` awaited before the
//! next, each delivery acked through its `Acker`. The backend does two things better on
//! the same library: `rabbitmq/publish.rs` queues a whole batch before waiting for any
//! write, and `rabbitmq/settle.rs` acks on the channel, skipping the `Acker`'s detour
//! through lapin's internal RPC. That is why its ratio can come out above 1.

use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use super::{per_second, Rates, BATCH, KEYS, PREFETCH};

/// Publishes then consumes `messages` messages of `payload_bytes` through the raw client.
pub async fn run(url: &str, messages: usize, payload_bytes: usize) -> anyhow::Result<Rates> {
    let connection = Connection::connect(
        url,
        ConnectionProperties::default()
            .with_connection_name(format!("orderflow-bench-raw-{}", uuid::Uuid::now_v7()).into()),
    )
    .await
    .with_context(|| format!("connecting to {url}"))?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let run = uuid::Uuid::now_v7().simple();
    let queue: ShortString = format!("bench-raw-{run}").into();
    let topic: ShortString = format!("bench-raw-{run}").into();
    channel
        .exchange_declare(
            "orderflow".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue.clone(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.clone(),
            "orderflow".into(),
            topic.clone(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let payload = vec![b'x'; payload_bytes];
    let keys: Vec<String> = (0..KEYS).map(|key| format!("key-{key}")).collect();
    let properties: Vec<BasicProperties> = (0..messages)
        .map(|index| {
            let now = chrono::Utc::now();
            let mut headers = FieldTable::default();
            headers.insert(
                "message-key".into(),
                AMQPValue::LongString(LongString::from(keys[index % KEYS].as_bytes())),
            );
            headers.insert(
                "published-at".into(),
                AMQPValue::LongString(LongString::from(
                    now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )),
            );
            BasicProperties::default()
                .with_message_id(uuid::Uuid::now_v7().to_string().into())
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_timestamp(u64::try_from(now.timestamp()).unwrap_or(0))
                .with_headers(headers)
        })
        .collect();

    let started = Instant::now();
    let mut properties = properties.into_iter();
    let mut sent = 0;
    while sent < messages {
        let batch = BATCH.min(messages - sent);
        let mut confirms = Vec::with_capacity(batch);
        for message in properties.by_ref().take(batch) {
            confirms.push(
                channel
                    .basic_publish(
                        "orderflow".into(),
                        topic.clone(),
                        BasicPublishOptions::default(),
                        &payload,
                        message,
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Ack(_) => {}
                other => anyhow::bail!("publish not confirmed: {other:?}"),
            }
        }
        sent += batch;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let consuming = connection.create_channel().await?;
    consuming
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consuming
        .basic_consume(
            queue.clone(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    for received in 0..messages {
        let delivery = consumer
            .next()
            .await
            .with_context(|| format!("consumer ended after {received} of {messages}"))??;
        anyhow::ensure!(
            delivery.acker.ack(BasicAckOptions::default()).await?,
            "ack of message {received} was not sent"
        );
    }
    let consume_seconds = started.elapsed().as_secs_f64();

    consuming.close(200, "OK".into()).await?;
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await?;
    channel.close(200, "OK".into()).await?;
    connection.close(200, "OK".into()).await?;
    Ok(Rates {
        publish_per_s: per_second(messages, publish_seconds),
        consume_per_s: per_second(messages, consume_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{abstraction, Rates};

    /// `orderflow bench broker` always runs the abstraction first and the raw client
    /// second, once; on a shared machine one such pair varies by ±20 %. This alternates
    /// the order over several rounds and prints the medians:
    /// `ORDERFLOW_AMQP_URL=amqp://… cargo test --release -p orderflow --lib raw_rabbitmq
    /// -- --ignored --nocapture` (`ROUNDS`, `MESSAGES` to change the defaults 8 × 30,000).
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "a measurement against a real RabbitMQ, not a check"]
    async fn alternating_rounds_abstraction_vs_raw() {
        let Ok(url) = std::env::var("ORDERFLOW_AMQP_URL") else {
            println!("ORDERFLOW_AMQP_URL not set; skipped");
            return;
        };
        let setting = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(default)
        };
        let (rounds, messages) = (setting("ROUNDS", 8), setting("MESSAGES", 30_000));
        let mut ours: Vec<Rates> = Vec::new();
        let mut raw: Vec<Rates> = Vec::new();
        for round in 0..rounds {
            if round % 2 == 0 {
                raw.push(super::run(&url, messages, 256).await.unwrap());
                ours.push(abstraction(&url, messages, 256).await.unwrap());
            } else {
                ours.push(abstraction(&url, messages, 256).await.unwrap());
                raw.push(super::run(&url, messages, 256).await.unwrap());
            }
            println!(
                "round {round}: abstraction {:?}, raw {:?}",
                ours[round], raw[round]
            );
        }
        let median = |rates: &[Rates], pick: fn(&Rates) -> f64| {
            let mut values: Vec<f64> = rates.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        for (phase, pick) in [
            (
                "publish",
                (|rates: &Rates| rates.publish_per_s) as fn(&Rates) -> f64,
            ),
            ("consume", |rates: &Rates| rates.consume_per_s),
        ] {
            let (mine, theirs) = (median(&ours, pick), median(&raw, pick));
            println!(
                "median {phase}: abstraction {mine:.0} msg/s, raw {theirs:.0} msg/s, {:.2}x",
                mine / theirs
            );
        }
    }
}
