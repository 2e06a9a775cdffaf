//! Creating topics. tansu, like many production clusters, does not create them on first
//! use, so every topic this backend touches is created through the admin API first; the
//! handle remembers the ones it knows exist.

use rdkafka::{
    admin::{AdminOptions, NewTopic, TopicReplication},
    error::RDKafkaErrorCode,
};

use super::{
    broker::{lock, Inner},
    config::REQUEST_TIMEOUT,
};

/// Partitions of every topic this backend creates: enough for a few competing consumers
/// per group, few enough that a test broker stays light.
pub const PARTITIONS: i32 = 3;

impl Inner {
    /// Creates the topics not known to exist yet, with [`PARTITIONS`] partitions.
    pub(super) async fn ensure_topics<S: AsRef<str>>(
        &self,
        wanted: &[S],
    ) -> std::result::Result<(), String> {
        let missing: Vec<&str> = {
            let known = lock(&self.topics);
            let mut missing: Vec<&str> = wanted
                .iter()
                .map(AsRef::as_ref)
                .filter(|topic| !known.contains(*topic))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            // Replication -1: the broker's default replication factor.
            .map(|topic| NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|error| format!("creating topics {missing:?}: {error}"))?;
        let mut known = lock(&self.topics);
        for result in results {
            match result {
                // Created by someone else first (another handle, another process): as good.
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(topic);
                }
                Err((topic, code)) => return Err(format!("creating topic `{topic}`: {code}")),
            }
        }
        Ok(())
    }
}
