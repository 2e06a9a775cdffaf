//! The raw pipeline the memory backend is measured against: a bounded tokio mpsc channel
//! as the queue and a second channel carrying acks back, with no envelope bookkeeping,
//! no groups, no per-key ownership and no redelivery. It is the floor: what moving a
//! message from a producer task to a consumer task and acking it costs at all.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{per_second, Rates, BATCH, KEYS};

/// Publishes `messages` payloads into a channel, then receives and acks each.
pub async fn run(_url: &str, messages: usize, payload_bytes: usize) -> anyhow::Result<Rates> {
    let payload = Bytes::from(vec![b'x'; payload_bytes]);
    let keys: Vec<String> = (0..KEYS).map(|key| format!("key-{key}")).collect();
    // The queue must hold everything: publishing happens before anyone consumes.
    let (queue, mut incoming) = mpsc::channel::<(u64, String, Bytes)>(messages.max(1));
    let (acks, mut acked) = mpsc::unbounded_channel::<u64>();

    let started = Instant::now();
    for start in (0..messages).step_by(BATCH) {
        for index in start..(start + BATCH).min(messages) {
            let message = (index as u64, keys[index % KEYS].clone(), payload.clone());
            queue.send(message).await?;
        }
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    // The "broker" side counts acks as they come back.
    let acknowledger = tokio::spawn(async move {
        let mut count = 0usize;
        while acked.recv().await.is_some() {
            count += 1;
        }
        count
    });
    let started = Instant::now();
    for _ in 0..messages {
        let (tag, _key, _payload) = incoming
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the raw queue closed early"))?;
        acks.send(tag)?;
    }
    drop(acks);
    let confirmed = acknowledger.await?;
    let consume_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(confirmed == messages, "acked {confirmed} of {messages}");
    Ok(Rates {
        publish_per_s: per_second(messages, publish_seconds),
        consume_per_s: per_second(messages, consume_seconds),
    })
}
