//! Where each partition ends (its high watermark), read by fetching with a consumer that
//! never joins a group, the watermark probe: the backlog needs it, and tansu 0.6 answers
//! ListOffsets wrongly (see [`partition_ends`]).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    message::Message,
    ClientContext, Offset, TopicPartitionList,
};

use super::{
    broker::{lock, Inner},
    config::{probe_config, REQUEST_TIMEOUT},
    groups::Committed,
};

/// The watermark probe's context: end-of-partition is what it is looking for, not an
/// error worth a log line.
pub(super) struct ProbeCallbacks;

impl ClientContext for ProbeCallbacks {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::debug!(%error, reason, "kafka watermark probe");
        }
    }
}

impl ConsumerContext for ProbeCallbacks {}

impl Inner {
    /// Runs `read` with the watermark probe, creating it on first use. Blocking.
    pub(super) fn with_probe<T>(
        &self,
        read: impl FnOnce(&BaseConsumer<ProbeCallbacks>) -> KafkaResult<T>,
    ) -> KafkaResult<T> {
        let mut probe = lock(&self.probe);
        let probe = match &mut *probe {
            Some(probe) => probe,
            empty => {
                empty.insert(probe_config(&self.bootstrap).create_with_context(ProbeCallbacks)?)
            }
        };
        read(probe)
    }
}

/// The low watermark and the end (high watermark) of each of `partitions` of `topic`,
/// as `partition → (low, end)`. Blocking; `probe` is the handle's watermark consumer.
///
/// The end is read the way a consumer sees it, by fetching up to the end of each
/// partition, because ListOffsets cannot be trusted for it: tansu 0.6's `memory://`
/// engine answers ListOffsets(latest) with the base offset of the most recently written
/// *record batch* plus one, which is far below the end as soon as a producer batches.
/// ListOffsets still gives a lower bound, so the fetch starts there (or at `floor`, the
/// group's committed offset, when that is further) and reads at most the last batch: cheap
/// however long the backlog. On Kafka itself the lower bound is already the end, and the
/// fetch returns the last record and end-of-partition at once.
pub(super) fn partition_ends(
    probe: &BaseConsumer<ProbeCallbacks>,
    topic: &str,
    partitions: &[Committed],
) -> KafkaResult<BTreeMap<i32, (i64, i64)>> {
    let mut ends = BTreeMap::new();
    let mut starts = TopicPartitionList::new();
    for &(partition, floor) in partitions {
        let (low, listed) = probe.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        // `listed - 1`: on Kafka the last record; on tansu the first record of the last
        // batch, so that the fetch starts at a batch boundary.
        let from = (listed - 1).max(low).max(floor.unwrap_or(0)).max(0);
        ends.insert(partition, (low, from));
        starts.add_partition_offset(topic, partition, Offset::Offset(from))?;
    }
    if ends.is_empty() {
        return Ok(ends);
    }
    probe.assign(&starts)?;
    let mut pending: HashSet<i32> = ends.keys().copied().collect();
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let outcome = loop {
        if pending.is_empty() {
            break Ok(());
        }
        if std::time::Instant::now() > deadline {
            break Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::RequestTimedOut,
            ));
        }
        match probe.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                if let Some((_, end)) = ends.get_mut(&message.partition()) {
                    *end = (*end).max(message.offset() + 1);
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            // Errors while fetching (a broker reconnecting, a leader moving) are retried by
            // librdkafka; the deadline bounds how long that may take.
            Some(Err(error)) => {
                tracing::debug!(%error, topic, "reading partition ends");
            }
        }
    };
    probe.unassign()?;
    outcome.map(|()| ends)
}
