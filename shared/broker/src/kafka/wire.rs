//! Envelope ↔ Kafka record. The record key is the envelope key, the payload its payload;
//! the envelope's headers travel as record headers, with the id and publish time added as
//! `message-id` and `published-at` (`docs/events.md`, "On Kafka").

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use uuid::Uuid;

use crate::{headers, Envelope};

/// The record headers of an envelope: its own headers plus `message-id` and
/// `published-at` (`docs/events.md`, "On Kafka").
pub(super) fn record_headers(envelope: &Envelope) -> OwnedHeaders {
    let mut record = OwnedHeaders::new_with_capacity(envelope.headers.len() + 2);
    for (name, value) in &envelope.headers {
        // The envelope's own fields are authoritative; a stale copy in the headers map
        // (e.g. from a message read off Kafka and published again) must not shadow them.
        if name == headers::MESSAGE_ID || name == headers::PUBLISHED_AT {
            continue;
        }
        record = record.insert(Header {
            key: name,
            value: Some(value.as_str()),
        });
    }
    let mut id = Uuid::encode_buffer();
    let id = envelope.id.hyphenated().encode_lower(&mut id);
    let published_at = envelope
        .published_at
        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
    record
        .insert(Header {
            key: headers::MESSAGE_ID,
            value: Some(&*id),
        })
        .insert(Header {
            key: headers::PUBLISHED_AT,
            value: Some(published_at.as_str()),
        })
}

/// Turns a consumed record back into an envelope; `Err` says why it cannot be one.
pub(super) fn envelope_from<M: Message>(message: &M) -> std::result::Result<Envelope, String> {
    let mut id = None;
    let mut published_at = None;
    let mut envelope_headers = BTreeMap::new();
    if let Some(record_headers) = message.headers() {
        for header in record_headers.iter() {
            let value = match header.value {
                Some(bytes) => std::str::from_utf8(bytes)
                    .map_err(|_| format!("header `{}` is not UTF-8", header.key))?,
                None => "",
            };
            match header.key {
                headers::MESSAGE_ID => {
                    id = Some(Uuid::parse_str(value).map_err(|error| {
                        format!("header `{}` is not a UUID: {error}", headers::MESSAGE_ID)
                    })?)
                }
                headers::PUBLISHED_AT => {
                    published_at = DateTime::parse_from_rfc3339(value)
                        .ok()
                        .map(|time| time.with_timezone(&Utc))
                }
                name => {
                    envelope_headers.insert(name.to_owned(), value.to_owned());
                }
            }
        }
    }
    let id = id.ok_or_else(|| format!("no `{}` header", headers::MESSAGE_ID))?;
    let key = match message.key() {
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| "the record key is not UTF-8".to_owned())?
            .to_owned(),
        None => String::new(),
    };
    // A producer that left out `published-at` still stamped the record.
    let published_at = published_at
        .or_else(|| {
            message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis)
        })
        .unwrap_or_else(Utc::now);
    Ok(Envelope {
        id,
        topic: message.topic().to_owned(),
        key,
        headers: envelope_headers,
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        published_at,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::{message::OwnedMessage, Timestamp};

    use super::*;

    #[test]
    fn envelopes_survive_the_record_format() {
        let envelope = Envelope::new("orders", "order-1", "{}")
            .with_header(headers::EVENT_TYPE, "OrderPlaced")
            .with_header(headers::ATTEMPT, "2");
        let record = OwnedMessage::new(
            Some(envelope.payload.to_vec()),
            Some(envelope.key.clone().into_bytes()),
            envelope.topic.clone(),
            Timestamp::CreateTime(envelope.published_at.timestamp_millis()),
            0,
            0,
            Some(record_headers(&envelope)),
        );
        assert_eq!(envelope_from(&record).unwrap(), envelope);
    }

    #[test]
    fn a_record_without_an_id_is_not_an_envelope() {
        let record = OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "orders".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        let reason = envelope_from(&record).unwrap_err();
        assert!(reason.contains(headers::MESSAGE_ID), "{reason}");
    }
}
