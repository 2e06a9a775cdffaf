//! How every librdkafka client of this backend is configured, and the `kafka://` URL the
//! configurations start from. One builder per kind of client: [`producer_config`] (the
//! idempotent producer), [`consumer_config`] (a member of a consumer group),
//! [`admin_config`] (topic creation); and the watermark probe's, which only this backend
//! uses. They are public so that the raw-rdkafka benchmark (`src/bench/raw_kafka.rs`)
//! runs with exactly the settings the abstraction runs with.

use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::{BrokerError, Result};

/// How long a consumer may leave a full channel untouched before it is taken for stuck
/// and leaves its group (librdkafka's `max.poll.interval.ms`, default five minutes; it
/// may not be shorter than the session timeout).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// How long a group member may go without a heartbeat answered before the coordinator
/// (and librdkafka itself) counts it gone: Kafka's own default since 3.0.
///
/// Shorter would replace a consumer killed with `kill -9` sooner, but a session must
/// outlive a broker that stalls or restarts. tansu 0.6 wedges a group when one expires:
/// the expired leader's own late heartbeat drops it from the formed group without clearing
/// the group's leader (`Inner<Formed>::heartbeat` in tansu's `administrator.rs`), the next
/// join then carries the departed leader into the forming state, and nobody is ever
/// assigned anything again. With 10 s that happened here under load (heartbeats answered
/// after more than 10 s) and after a broker restart (`tests/chaos.rs`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// Timeout of one blocking metadata, offset or commit request.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings every client of this backend shares.
pub(super) fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // Names our connections in the broker's logs.
        .set("client.id", "orderflow")
        // A restarted broker should be found again within a second, not after
        // librdkafka's default backoff of up to 10 s.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        // librdkafka's own log: errors only (syslog level 3).
        .set("log_level", "3");
    config
}

/// The idempotent producer: `acks=all`, so a delivery report means every in-sync
/// replica has the record, and no duplicates or reordering when librdkafka resends.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The Java client's partitioner, so that producers in other languages put one
        // key on the same partition as we do.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // A publish during an outage fails after this instead of librdkafka's 5 minutes;
        // the caller publishes again (ids are stable, consumers deduplicate).
        .set("message.timeout.ms", "30000");
    config
}

/// A member of consumer group `group` that commits by hand: auto-commit and the automatic
/// offset store are off, because only the application knows which records are settled.
pub fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("group.id", group)
        // Commits come from the offset tracker only (`offsets.rs`): a record is done
        // when it is settled, not when it has been read.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A group with nothing committed starts at the beginning: redelivering beats
        // losing. `declare` commits the current ends for a new group (`groups.rs`).
        .set("auto.offset.reset", "earliest")
        // No end-of-partition events in the poll loop; it has no use for them.
        .set("enable.partition.eof", "false")
        // See SESSION_TIMEOUT; heartbeats often enough that rebalances start promptly.
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set("heartbeat.interval.ms", "1000")
        .set(
            "max.poll.interval.ms",
            MAX_POLL_INTERVAL.as_millis().to_string(),
        )
        // A fetch answers within 100 ms even when little has arrived: low latency
        // rather than full fetches.
        .set("fetch.wait.max.ms", "100")
        // A group can be assigned before the client has the topics' partitions in its
        // metadata (just after a broker restart, seen on tansu): the assignment is then
        // empty, and librdkafka rebalances again only once a metadata refresh shows the
        // partitions. The default refresh is every 5 minutes; every 2 s bounds the wait.
        .set("topic.metadata.refresh.interval.ms", "2000");
    config
}

/// The bootstrap servers of a Kafka URL, what the builders take:
/// `kafka://a:9092,b:9092/` → `a:9092,b:9092`.
pub fn parse_url(url: &str) -> Result<String> {
    let invalid = |reason: &str| BrokerError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| invalid("a Kafka URL starts with kafka://"))?;
    let hosts = rest.split(['/', '?']).next().unwrap_or("");
    if hosts.is_empty() {
        return Err(invalid("no host:port after kafka://"));
    }
    for host in hosts.split(',') {
        let port = host.rsplit_once(':').map(|(_, port)| port);
        if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
            return Err(invalid(&format!("`{host}` is not host:port")));
        }
    }
    Ok(hosts.to_owned())
}

/// The admin client, which creates topics: the shared settings alone.
pub fn admin_config(bootstrap: &str) -> ClientConfig {
    base_config(bootstrap)
}

/// The watermark probe (`watermarks.rs`): a consumer that is assigned partitions by hand
/// to read where they end.
pub(super) fn probe_config(bootstrap: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        // librdkafka refuses `assign` without a group id; this group never
        // joins, subscribes or commits.
        .set("group.id", "orderflow-watermark-probe")
        .set("enable.auto.commit", "false")
        // The end-of-partition event is what the probe reads to the end for.
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "latest")
        // Its caller is blocked waiting: short fetches.
        .set("fetch.wait.max.ms", "10");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_bootstrap_servers() {
        assert_eq!(parse_url("kafka://a:9092").unwrap(), "a:9092");
        assert_eq!(parse_url("kafka://a:1,b:2/").unwrap(), "a:1,b:2");
        assert!(parse_url("kafka://").is_err());
        assert!(parse_url("kafka://host").is_err());
        assert!(parse_url("amqp://a:1").is_err());
    }
}
