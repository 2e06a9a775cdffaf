//! Removing the observer's group once the run is over.
//!
//! On RabbitMQ a consumer group is a durable queue bound to every topic: left behind, the
//! observer's queue would collect a copy of every message every later run publishes, and
//! its backlog would grow without a reader. The broker abstraction has no "delete a
//! group" (services never need one), so the queue and its `.dlq` are deleted here through
//! lapin. The embedded broker's groups end with the process; a Kafka consumer group holds
//! only committed offsets, never messages, so there is nothing to take back there.

use anyhow::Context;
use lapin::{options::QueueDeleteOptions, Connection, ConnectionProperties};
use orderflow_events::topics;

/// Deletes `group`'s queue and dead-letter queue when `broker_url` is RabbitMQ.
pub async fn remove_group(broker_url: &str, group: &str) -> anyhow::Result<()> {
    if !(broker_url.starts_with("amqp://") || broker_url.starts_with("amqps://")) {
        return Ok(());
    }
    let connection = Connection::connect(broker_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", orderflow_kit::db::redact(broker_url)))?;
    let channel = connection.create_channel().await?;
    for queue in [group.to_owned(), topics::dead_letter_of(group)] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("deleting the queue {queue}"))?;
    }
    let _ = channel.close(200, "OK".into()).await;
    let _ = connection.close(200, "OK".into()).await;
    Ok(())
}
