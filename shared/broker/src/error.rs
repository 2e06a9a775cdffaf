//! [`BrokerError`]: what can go wrong talking to a broker, with the input that failed.

/// Errors of the broker abstraction. Every variant names the thing it failed on (URL,
/// topic, group) so a log line is enough to start looking.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL could not be understood.
    #[error("invalid broker URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting (or reconnecting) failed.
    #[error("cannot connect to {backend} at {address}: {detail}")]
    Connect {
        /// `memory`, `rabbitmq` or `kafka`.
        backend: &'static str,
        /// Where (credentials removed).
        address: String,
        /// The client library's account.
        detail: String,
    },
    /// The broker did not take a message (nack, timeout, or connection lost before the
    /// confirm). The message may or may not have been stored: publish it again.
    #[error("publishing to `{topic}` failed: {detail}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        detail: String,
    },
    /// The broker took the message but no queue or group will ever see it: nothing is
    /// bound to the topic (or the queue a copy was sent to is gone). Not stored for
    /// anyone, so not a success; publishing again once the group is declared delivers it.
    #[error("publishing to `{topic}` failed, no group receives it: {reason}")]
    Unroutable {
        /// The topic (for a copy sent straight to a queue: the envelope's topic).
        topic: String,
        /// What the broker said (RabbitMQ: its `basic.return` reply code and text).
        reason: String,
    },
    /// Declaring or consuming for a group failed.
    #[error("subscribing group `{group}` failed: {detail}")]
    Subscribe {
        /// The consumer group.
        group: String,
        /// Why.
        detail: String,
    },
    /// Ack, retry or dead-letter failed; the delivery will be redelivered.
    #[error("settling message {id} failed: {detail}")]
    Settle {
        /// The envelope id.
        id: uuid::Uuid,
        /// Why.
        detail: String,
    },
    /// Asking for the backlog failed.
    #[error("reading the backlog of group `{group}` failed: {detail}")]
    Backlog {
        /// The consumer group.
        group: String,
        /// Why.
        detail: String,
    },
    /// The broker handle was closed.
    #[error("the broker connection is closed")]
    Closed,
}
