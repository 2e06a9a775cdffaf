//! # orderflow-events
//!
//! What travels over the broker, and nothing else:
//!
//! - [`Envelope`] (`envelope.rs`) — the frame every backend carries: a UUID v7 id that
//!   consumers deduplicate on, the topic, the ordering key, string headers, the payload
//!   bytes and the time it was published.
//! - the order-flow events (`event.rs`) — [`OrderPlaced`], [`PaymentSucceeded`],
//!   [`PaymentFailed`], [`PointsAwarded`], [`SmsSent`] — and [`Event`], the enum that
//!   encodes them into a payload and decodes them back with a typed [`DecodeError`].
//! - [`domain`] — the values events are made of ([`domain::UserId`], [`domain::Phone`],
//!   [`domain::Sku`], [`domain::Quantity`], [`domain::Cents`], [`domain::TotalCents`]), one
//!   file each, every one checked by `parse` and by decoding: a bad value never gets past
//!   [`Event::decode`].
//! - [`topics`] and [`headers`] — the names on the wire, as constants, so no service
//!   spells a topic or a header by hand.
//!
//! The wire format is written down for other languages in `docs/events.md`.

pub mod domain;
mod envelope;
mod event;
pub mod topology;

pub use envelope::Envelope;
pub use event::{
    DecodeError, Event, EventKind, LineItem, OrderPlaced, PaymentFailed, PaymentSucceeded,
    PointsAwarded, SmsSent, SCHEMA_VERSION,
};

/// Topic names. On RabbitMQ each is a routing key on the `orderflow` topic exchange; on
/// Kafka each is a topic of its own.
pub mod topics {
    /// An order was accepted by the order service (published through its outbox).
    pub const ORDER_PLACED: &str = "order.placed";
    /// The payment gateway charged the order.
    pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
    /// The payment gateway declined the order.
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// The points service credited the user's balance.
    pub const POINTS_AWARDED: &str = "points.awarded";
    /// The SMS service handed the "your order is paid" text to the gateway.
    pub const SMS_SENT: &str = "sms.sent";

    /// Every topic of the order flow, in the order an order passes through them.
    pub const ALL: [&str; 5] = [
        ORDER_PLACED,
        PAYMENT_SUCCEEDED,
        PAYMENT_FAILED,
        POINTS_AWARDED,
        SMS_SENT,
    ];

    /// The dead-letter queue (RabbitMQ) or topic (Kafka) of a consumer group.
    pub fn dead_letter_of(group: &str) -> String {
        format!("{group}.dlq")
    }
}

/// Header keys. Every backend carries them as message headers (AMQP header table, Kafka
/// record headers); values are UTF-8 strings.
pub mod headers {
    /// Which event the payload holds, e.g. `OrderPlaced` (see [`crate::EventKind`]).
    pub const EVENT_TYPE: &str = "event-type";
    /// The payload's schema version, a decimal integer (see [`crate::SCHEMA_VERSION`]).
    pub const SCHEMA_VERSION: &str = "schema-version";
    /// The id that ties every message of one business flow together: the order id.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// The id of the message whose handling produced this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// W3C trace context, passed through untouched.
    pub const TRACEPARENT: &str = "traceparent";
    /// How many times this message has been handed to its consumer group (1 = first).
    pub const ATTEMPT: &str = "attempt";
    /// Why a message was dead-lettered; set only on messages in a `<group>.dlq`.
    pub const DEAD_LETTER_REASON: &str = "dead-letter-reason";
    /// The consumer group that dead-lettered the message.
    pub const DEAD_LETTERED_BY: &str = "dead-lettered-by";
    /// The envelope id, where the transport has no field of its own for it (Kafka).
    pub const MESSAGE_ID: &str = "message-id";
    /// The envelope key, where the transport has no field of its own for it (RabbitMQ).
    pub const MESSAGE_KEY: &str = "message-key";
    /// The envelope topic, kept when a message is moved to a dead-letter queue.
    pub const MESSAGE_TOPIC: &str = "message-topic";
    /// RFC 3339 time the producer published the message.
    pub const PUBLISHED_AT: &str = "published-at";
}
