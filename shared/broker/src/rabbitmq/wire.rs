//! An [`Envelope`] on the wire: its AMQP properties and headers, as `docs/events.md`
//! describes them, and the way back from a delivery, including the best envelope that
//! can be made of what the server dead-lettered.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};
use uuid::Uuid;

use super::topology::EXCHANGE;
use crate::{headers, Envelope};

/// Every payload orderflow publishes is an event serialized as JSON.
const CONTENT_TYPE: &str = "application/json";
/// AMQP delivery mode 2: the broker writes the message to disk (with a durable queue).
pub(super) const PERSISTENT: u8 = 2;

/// An AMQP short string (at most 255 bytes), or why not.
pub(super) fn short(value: &str) -> std::result::Result<ShortString, String> {
    ShortString::try_new(value).map_err(|error| format!("`{value}`: {error}"))
}

/// The AMQP properties of an envelope, as `docs/events.md` describes them. With
/// `keep_topic` (a copy sent straight to a queue, whose routing key is then the queue
/// name) the topic travels in the `message-topic` header.
pub(super) fn properties_of(
    envelope: &Envelope,
    keep_topic: bool,
) -> std::result::Result<BasicProperties, String> {
    // Header values go as long strings: AMQP's type for text of any length.
    let mut table = BTreeMap::new();
    for (name, value) in &envelope.headers {
        table.insert(
            short(name)?,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    table.insert(
        ShortString::from(headers::MESSAGE_KEY),
        AMQPValue::LongString(LongString::from(envelope.key.as_bytes())),
    );
    table.insert(
        ShortString::from(headers::PUBLISHED_AT),
        AMQPValue::LongString(LongString::from(
            envelope
                .published_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )),
    );
    if keep_topic {
        // `entry`: a dead letter already carries `message-topic` (set by
        // `Delivery::dead_letter`); that value stays.
        table
            .entry(ShortString::from(headers::MESSAGE_TOPIC))
            .or_insert_with(|| AMQPValue::LongString(LongString::from(envelope.topic.as_bytes())));
    }
    Ok(BasicProperties::default()
        .with_message_id(ShortString::from(
            envelope
                .id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()) as &str,
        ))
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from(CONTENT_TYPE))
        // Whole seconds only (the AMQP type); `published-at` above keeps the precision.
        .with_timestamp(u64::try_from(envelope.published_at.timestamp()).unwrap_or(0))
        .with_headers(FieldTable::from(table)))
}

/// A header value as a string; `None` for values that have no string form (tables and
/// arrays such as the server's `x-death`).
fn header_text(name: &str, value: &AMQPValue) -> std::result::Result<Option<String>, String> {
    let not_utf8 = |_| format!("header `{name}` is not UTF-8");
    Ok(Some(match value {
        AMQPValue::LongString(text) => {
            String::from_utf8(text.as_bytes().to_vec()).map_err(not_utf8)?
        }
        AMQPValue::ShortString(text) => text.as_str().to_owned(),
        AMQPValue::Boolean(value) => value.to_string(),
        AMQPValue::ShortShortInt(value) => value.to_string(),
        AMQPValue::ShortShortUInt(value) => value.to_string(),
        AMQPValue::ShortInt(value) => value.to_string(),
        AMQPValue::ShortUInt(value) => value.to_string(),
        AMQPValue::LongInt(value) => value.to_string(),
        AMQPValue::LongUInt(value) => value.to_string(),
        AMQPValue::LongLongInt(value) => value.to_string(),
        AMQPValue::Timestamp(value) => value.to_string(),
        AMQPValue::Float(value) => value.to_string(),
        AMQPValue::Double(value) => value.to_string(),
        _ => return Ok(None),
    }))
}

/// Turns a delivery into an envelope, or says why it cannot be one.
///
/// - `id` from the `message_id` property (required: without it nobody can deduplicate);
/// - `key` from the `message-key` header (empty if absent);
/// - `published_at` from the `published-at` header, else the `timestamp` property;
/// - `topic`: the routing key when published to `orderflow`; for a copy sent straight to
///   a queue (retry, dead letter), the `message-topic` header;
/// - `headers`: the other headers as strings. `message-topic` stays only on dead letters
///   (where it is part of the documented format); on a retried copy it was transport.
pub(super) fn envelope_of(
    raw: &lapin::message::Delivery,
    payload: Bytes,
) -> std::result::Result<Envelope, String> {
    let id = match raw.properties.message_id() {
        Some(id) => Uuid::parse_str(id.as_str())
            .map_err(|error| format!("message_id `{id}` is not a UUID: {error}"))?,
        None => return Err("no message_id property".into()),
    };
    // The two transport headers are read in place: this runs for every delivery, and an
    // envelope without other headers then needs no map allocation at all.
    let mut header_map = BTreeMap::new();
    let mut key = None;
    let mut published_at = None;
    if let Some(table) = raw.properties.headers() {
        for (name, value) in table {
            match name.as_str() {
                headers::MESSAGE_KEY => key = header_text(headers::MESSAGE_KEY, value)?,
                headers::PUBLISHED_AT => {
                    let text = match value {
                        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
                        AMQPValue::ShortString(text) => Some(text.as_str()),
                        _ => None,
                    }
                    .ok_or("the published-at header is not a string")?;
                    published_at = Some(
                        DateTime::parse_from_rfc3339(text)
                            .map_err(|error| {
                                format!("published-at `{text}` is not RFC 3339: {error}")
                            })?
                            .with_timezone(&Utc),
                    );
                }
                other => {
                    if let Some(text) = header_text(other, value)? {
                        header_map.insert(other.to_owned(), text);
                    }
                }
            }
        }
    }
    let key = key.unwrap_or_default();
    let published_at = match published_at {
        Some(published_at) => published_at,
        None => match raw.properties.timestamp() {
            Some(seconds) => i64::try_from(*seconds)
                .ok()
                .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
                .ok_or_else(|| format!("timestamp {seconds} is out of range"))?,
            None => return Err("neither a published-at header nor a timestamp property".into()),
        },
    };
    let topic = if raw.exchange.as_str() == EXCHANGE {
        raw.routing_key.as_str().to_owned()
    } else {
        let dead_letter = header_map.contains_key(headers::DEAD_LETTER_REASON);
        let carried = if dead_letter {
            header_map.get(headers::MESSAGE_TOPIC).cloned()
        } else {
            header_map.remove(headers::MESSAGE_TOPIC)
        };
        carried.unwrap_or_else(|| raw.routing_key.as_str().to_owned())
    };
    Ok(Envelope {
        id,
        topic,
        key,
        headers: header_map,
        payload,
        published_at,
    })
}

/// Envelopes on a dead-letter queue: what [`envelope_of`] gives, and for what the
/// server dead-lettered because it was malformed, the best envelope that can be made
/// (a fresh id if it has none), with the reason in [`headers::DEAD_LETTER_REASON`].
/// Rejecting those again would drop them: a dead-letter queue has no dead-letter queue.
pub(super) fn envelope_of_dead_letter(raw: &lapin::message::Delivery, payload: Bytes) -> Envelope {
    match envelope_of(raw, payload.clone()) {
        Ok(envelope) => envelope,
        Err(reason) => {
            let mut header_map = BTreeMap::new();
            if let Some(table) = raw.properties.headers() {
                for (name, value) in table {
                    if let Ok(Some(text)) = header_text(name.as_str(), value) {
                        header_map.insert(name.as_str().to_owned(), text);
                    }
                }
            }
            let key = header_map.remove(headers::MESSAGE_KEY).unwrap_or_default();
            header_map
                .entry(headers::DEAD_LETTER_REASON.to_owned())
                .or_insert_with(|| format!("malformed message: {reason}"));
            let id = raw
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| Uuid::parse_str(id.as_str()).ok())
                .unwrap_or_else(Uuid::now_v7);
            let topic = header_map
                .get(headers::MESSAGE_TOPIC)
                .cloned()
                .or_else(|| first_death_routing_key(raw))
                .unwrap_or_else(|| raw.routing_key.as_str().to_owned());
            Envelope {
                id,
                topic,
                key,
                headers: header_map,
                payload,
                published_at: Utc::now(),
            }
        }
    }
}

/// For a message the server dead-lettered: the routing key it had before, i.e. its
/// topic (`x-death[0].routing-keys[0]`; the dead-letter routing key replaced it).
fn first_death_routing_key(raw: &lapin::message::Delivery) -> Option<String> {
    let headers = raw.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    let AMQPValue::FieldArray(keys) = death.inner().get("routing-keys")? else {
        return None;
    };
    match keys.as_slice().first()? {
        AMQPValue::LongString(key) => String::from_utf8(key.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(key) => Some(key.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;
    use crate::rabbitmq::DEAD_LETTER_EXCHANGE;

    fn delivered(
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> lapin::message::Delivery {
        let mut raw = lapin::message::Delivery::mock(
            1,
            exchange.into(),
            routing_key.into(),
            false,
            b"{}".to_vec(),
        );
        raw.properties = properties;
        raw
    }

    fn sample() -> Envelope {
        Envelope::new("order.placed", "order-1", "{}")
            .with_header(headers::CORRELATION_ID, "order-1")
            .with_header(headers::EVENT_TYPE, "OrderPlaced")
    }

    #[test]
    fn an_envelope_survives_the_wire() {
        let sent = sample();
        let properties = properties_of(&sent, false).unwrap();
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(sent.id.to_string().as_str())
        );
        let raw = delivered(EXCHANGE, &sent.topic, properties);
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        // published_at keeps its sub-second precision through the header.
        assert_eq!(received, sent);
    }

    #[test]
    fn a_retried_copy_gets_its_topic_back_and_no_transport_header() {
        let sent = sample().with_header(headers::ATTEMPT, "2");
        let raw = delivered("", "payment", properties_of(&sent, true).unwrap());
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        assert_eq!(received.topic, "order.placed");
        assert_eq!(received.header(headers::MESSAGE_TOPIC), None);
        assert_eq!(received, sent);
    }

    #[test]
    fn a_dead_letter_keeps_its_reason_and_topic_headers() {
        let sent = sample()
            .with_header(headers::DEAD_LETTER_REASON, "no")
            .with_header(headers::MESSAGE_TOPIC, "order.placed");
        let raw = delivered("", "payment.dlq", properties_of(&sent, true).unwrap());
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        assert_eq!(received, sent);
    }

    #[test]
    fn messages_without_a_usable_id_are_refused_not_panicked_on() {
        let no_id = delivered(EXCHANGE, "order.placed", BasicProperties::default());
        assert!(envelope_of(&no_id, Bytes::new())
            .unwrap_err()
            .contains("message_id"));
        let bad_id = delivered(
            EXCHANGE,
            "order.placed",
            BasicProperties::default().with_message_id("42".into()),
        );
        assert!(envelope_of(&bad_id, Bytes::new())
            .unwrap_err()
            .contains("not a UUID"));
        let too_long = Envelope::new("t".repeat(300), "k", "");
        assert!(short(&too_long.topic).is_err());
        let long_header = sample().with_header(&"h".repeat(300), "v");
        assert!(properties_of(&long_header, false).is_err());
    }

    #[test]
    fn a_message_the_server_dead_lettered_is_still_readable_from_the_dlq() {
        let mut death = FieldTable::default();
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                "order.placed".into(),
            )])),
        );
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        table.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("rejected".into()),
        );
        let raw = delivered(
            DEAD_LETTER_EXCHANGE,
            "payment.dlq",
            BasicProperties::default().with_headers(table),
        );
        let envelope = envelope_of_dead_letter(&raw, Bytes::from_static(b"?"));
        assert_eq!(envelope.topic, "order.placed");
        assert!(envelope
            .header(headers::DEAD_LETTER_REASON)
            .unwrap()
            .starts_with("malformed message: no message_id"));
        assert_eq!(envelope.header("x-first-death-reason"), Some("rejected"));
        assert_eq!(envelope.payload, Bytes::from_static(b"?"));
    }

    #[test]
    fn foreign_header_types_are_read_as_text() {
        let sent = sample();
        let mut properties = properties_of(&sent, false).unwrap();
        let mut table = properties.headers().clone().unwrap();
        table.insert("schema-version".into(), AMQPValue::LongInt(1));
        table.insert("flag".into(), AMQPValue::Boolean(true));
        properties = properties.with_headers(table);
        let raw = delivered(EXCHANGE, &sent.topic, properties);
        let received = envelope_of(&raw, sent.payload.clone()).unwrap();
        assert_eq!(received.header(headers::SCHEMA_VERSION), Some("1"));
        assert_eq!(received.header("flag"), Some("true"));
    }
}
