//! The envelope: the one frame every backend carries.
//!
//! The envelope knows nothing about orders. It is what a broker needs to route a message
//! (`topic`), keep related messages in order (`key`), let consumers drop duplicates (`id`)
//! and follow a flow across services (`headers`). The event itself is opaque `payload`
//! bytes; `Event` in `event.rs` turns them into types.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::headers;

/// A message as the broker abstraction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// UUID v7, set once by the producer and never changed, not even on redelivery or
    /// retry: it is the key consumers deduplicate on. v7 ids sort by creation time, which
    /// keeps the "processed messages" index of an idempotent consumer append-mostly.
    pub id: Uuid,
    /// Where the message goes, e.g. [`crate::topics::ORDER_PLACED`].
    pub topic: String,
    /// The ordering key (the order id in the order flow): messages with one key reach a
    /// consumer group in the order they were published.
    pub key: String,
    /// String headers, see [`crate::headers`]. A `BTreeMap` so that encodings and
    /// debug output are stable.
    pub headers: BTreeMap<String, String>,
    /// The encoded event (JSON, see `docs/events.md`). `Bytes` so that fan-out to many
    /// groups and duplicates shares one buffer instead of copying it.
    pub payload: Bytes,
    /// When the producer created the message.
    pub published_at: DateTime<Utc>,
}

impl Envelope {
    /// A new envelope with a fresh UUID v7 id, published now, with no headers.
    pub fn new(
        topic: impl Into<String>,
        key: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Envelope {
            id: Uuid::now_v7(),
            topic: topic.into(),
            key: key.into(),
            headers: BTreeMap::new(),
            payload: payload.into(),
            published_at: Utc::now(),
        }
    }

    /// Adds or replaces a header (builder style).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_owned(), value.into());
        self
    }

    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// How many times this message has been delivered to its group (1 when the header is
    /// absent or unreadable: a message nobody retried yet).
    pub fn attempt(&self) -> u32 {
        self.header(headers::ATTEMPT)
            .and_then(|value| value.parse().ok())
            .unwrap_or(1)
    }

    /// The correlation id (the order id in the order flow), if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.header(headers::CORRELATION_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_envelopes_get_distinct_time_ordered_v7_ids() {
        let first = Envelope::new("t", "k", "a");
        let second = Envelope::new("t", "k", "b");
        assert_eq!(first.id.get_version_num(), 7);
        assert!(first.id < second.id, "v7 ids sort by creation time");
    }

    #[test]
    fn attempt_defaults_to_one_and_reads_the_header() {
        let envelope = Envelope::new("t", "k", "");
        assert_eq!(envelope.attempt(), 1);
        assert_eq!(envelope.with_header(headers::ATTEMPT, "3").attempt(), 3);
    }
}
