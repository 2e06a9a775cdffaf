//! A consumer group's committed offsets, read and written from outside the group by one
//! non-subscribing client per group: [`position_new_group`] makes a declared group exist
//! (so the broker keeps what is published for it), [`lag_of`] counts what it has not
//! committed past (the backlog).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    Offset, TopicPartitionList,
};

use super::{
    broker::{lock, Inner},
    config::{consumer_config, REQUEST_TIMEOUT},
    watermarks::partition_ends,
};

impl Inner {
    /// The non-subscribing consumer used to read and commit `group`'s offsets.
    pub(super) fn group_client(&self, group: &str) -> KafkaResult<Arc<BaseConsumer>> {
        let mut clients = lock(&self.group_clients);
        if let Some(client) = clients.get(group) {
            return Ok(client.clone());
        }
        let client: Arc<BaseConsumer> = Arc::new(consumer_config(&self.bootstrap, group).create()?);
        clients.insert(group.to_owned(), client.clone());
        Ok(client)
    }
}

/// Every partition of `topics` (a topic unknown to the broker has none). Blocking.
fn partitions_of<S: AsRef<str>>(
    client: &BaseConsumer,
    topics: &[S],
) -> KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let topic = topic.as_ref();
        let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for found in metadata.topics() {
            if found.error().is_some() {
                continue;
            }
            for partition in found.partitions() {
                list.add_partition(topic, partition.id());
            }
        }
    }
    Ok(list)
}

/// A partition and the offset its group committed there, if any.
pub(super) type Committed = (i32, Option<i64>);

/// The committed offset of every partition of `topics` for the group of `client`
/// (`None`: nothing committed), grouped by topic. Blocking.
fn committed_by_topic(
    client: &BaseConsumer,
    partitions: TopicPartitionList,
) -> KafkaResult<BTreeMap<String, Vec<Committed>>> {
    let committed = client.committed_offsets(partitions, REQUEST_TIMEOUT)?;
    let mut by_topic: BTreeMap<String, Vec<Committed>> = BTreeMap::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        by_topic
            .entry(element.topic().to_owned())
            .or_default()
            .push((element.partition(), offset));
    }
    Ok(by_topic)
}

/// Commits the end offset of every partition `group` has no committed offset for, so
/// that the group exists and keeps what is published from now on. Blocking.
pub(super) fn position_new_group(inner: &Inner, group: &str, topics: &[String]) -> KafkaResult<()> {
    let client = inner.group_client(group)?;
    // A topic created a moment ago may not be in the metadata yet: wait for all of it.
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let partitions = loop {
        let partitions = partitions_of(&client, topics)?;
        if partitions.count() >= topics.len() || std::time::Instant::now() > deadline {
            break partitions;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut starts = TopicPartitionList::new();
    for (topic, partitions) in committed_by_topic(&client, partitions)? {
        let uncommitted: Vec<Committed> = partitions
            .into_iter()
            .filter(|(_, committed)| committed.is_none())
            .collect();
        if uncommitted.is_empty() {
            continue;
        }
        let ends = inner.with_probe(|probe| partition_ends(probe, &topic, &uncommitted))?;
        for (partition, (_, end)) in ends {
            starts.add_partition_offset(&topic, partition, Offset::Offset(end))?;
        }
    }
    if starts.count() > 0 {
        // Refused when another consumer of the group joined in the meantime (a commit
        // from outside an active group): then that consumer has positioned the group, or
        // it starts at the earliest offset, which redelivers rather than loses.
        if let Err(error) = commit_within(client, starts, REQUEST_TIMEOUT) {
            tracing::warn!(%group, %error, "could not commit the starting offsets of a new group");
        }
    }
    Ok(())
}

/// A synchronous commit that gives up after `timeout`. librdkafka's own has no timeout:
/// it waits for the group coordinator for as long as the broker is away, so it runs on a
/// thread of its own that is left to finish alone if it takes too long. Blocking.
fn commit_within(
    client: Arc<BaseConsumer>,
    offsets: TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<()> {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kafka-commit".into())
        .spawn(move || {
            let _ = done.send(client.commit(&offsets, CommitMode::Sync));
        })
        .map_err(|_| KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail))?;
    outcome
        .recv_timeout(timeout)
        .unwrap_or(Err(KafkaError::ConsumerCommit(
            RDKafkaErrorCode::RequestTimedOut,
        )))
}

/// Messages of `topics` that `group` has not committed past. Blocking.
pub(super) fn lag_of(inner: &Inner, group: &str, topics: &[String]) -> KafkaResult<u64> {
    let client = inner.group_client(group)?;
    let partitions = partitions_of(&client, topics)?;
    let mut lag = 0u64;
    for (topic, partitions) in committed_by_topic(&client, partitions)? {
        let ends = inner.with_probe(|probe| partition_ends(probe, &topic, &partitions))?;
        for (partition, committed) in partitions {
            let Some(&(low, end)) = ends.get(&partition) else {
                continue;
            };
            // Nothing committed: the group would start at the low watermark. Records below
            // it are gone (retention), so they are no backlog either.
            let from = committed.map_or(low, |committed| committed.max(low));
            lag += u64::try_from(end - from).unwrap_or(0);
        }
    }
    Ok(lag)
}
