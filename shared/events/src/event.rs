//! The order-flow events and their JSON encoding.
//!
//! Every payload is one JSON object of the same shape:
//!
//! ```json
//! {"type": "OrderPlaced", "version": 1, "data": { ...the event's fields... }}
//! ```
//!
//! `type` says which struct `data` holds and `version` which revision of it, so a
//! consumer can refuse what it does not understand with a precise [`DecodeError`] instead
//! of guessing. Events carry the state their consumers need (the payment events repeat the
//! user, phone and total), so no consumer has to call back the service that published them.
//!
//! The fields are [`crate::domain`] types, so decoding checks every value as well as the
//! shape: `"quantity": 0` is a [`DecodeError::InvalidField`] with the field's path
//! (`items[0].quantity`), not an `OrderPlaced` a handler would have to re-check.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    domain::{Cents, Phone, Quantity, Sku, TotalCents, UserId},
    headers, topics, Envelope,
};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// Stock-keeping unit, e.g. `"tea-500g"`.
    pub sku: Sku,
    /// How many units; at least 1.
    pub quantity: Quantity,
    /// Price of one unit in cents (fen): integers, never floating-point money.
    pub unit_price_cents: Cents,
}

impl LineItem {
    /// Quantity × unit price, or `None` if that overflows `i64`.
    pub fn line_total(&self) -> Option<i64> {
        self.unit_price_cents.times(self.quantity)
    }
}

/// An order was accepted. Published by the order service through its outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order id, also the message key and correlation id of the whole flow.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: UserId,
    /// Where the "your order is paid" SMS goes, E.164 (`+8613800138000`).
    pub phone: Phone,
    /// What was ordered.
    pub items: Vec<LineItem>,
    /// Sum of quantity × unit price over the items, in cents; at least 1.
    pub total_cents: TotalCents,
    /// When the order service accepted the order.
    pub placed_at: DateTime<Utc>,
}

/// The payment gateway charged the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    /// The order that was paid.
    pub order_id: Uuid,
    /// The payment's own id, as the gateway returned it.
    pub payment_id: Uuid,
    /// The customer (carried so the points service needs no call to the order service).
    pub user_id: UserId,
    /// The customer's phone (carried for the SMS service).
    pub phone: Phone,
    /// The amount charged, in cents.
    pub amount_cents: TotalCents,
    /// When the gateway confirmed the charge.
    pub paid_at: DateTime<Utc>,
}

/// The payment gateway declined the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// The order that was not paid.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: UserId,
    /// The amount that was attempted, in cents.
    pub amount_cents: TotalCents,
    /// Why, in words a support person can read (e.g. `"card declined"`).
    pub reason: String,
    /// When the gateway answered.
    pub failed_at: DateTime<Utc>,
}

/// Points were credited for a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsAwarded {
    /// The paid order the points are for (points are awarded once per order).
    pub order_id: Uuid,
    /// Whose balance grew.
    pub user_id: UserId,
    /// How many points: one per whole yuan (100 cents) paid.
    pub points: i64,
    /// When the ledger row was written.
    pub awarded_at: DateTime<Utc>,
}

/// The "your order is paid" text was handed to the SMS gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSent {
    /// The order the text is about.
    pub order_id: Uuid,
    /// Where it went.
    pub phone: Phone,
    /// What it said.
    pub text: String,
    /// When the gateway accepted it.
    pub sent_at: DateTime<Utc>,
}

/// Which event a payload holds: the `type` field of the JSON and the `event-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`OrderPlaced`]
    OrderPlaced,
    /// [`PaymentSucceeded`]
    PaymentSucceeded,
    /// [`PaymentFailed`]
    PaymentFailed,
    /// [`PointsAwarded`]
    PointsAwarded,
    /// [`SmsSent`]
    SmsSent,
}

impl EventKind {
    /// Every kind, in flow order.
    pub const ALL: [EventKind; 5] = [
        EventKind::OrderPlaced,
        EventKind::PaymentSucceeded,
        EventKind::PaymentFailed,
        EventKind::PointsAwarded,
        EventKind::SmsSent,
    ];

    /// The name used in the `type` field and the `event-type` header.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => "OrderPlaced",
            EventKind::PaymentSucceeded => "PaymentSucceeded",
            EventKind::PaymentFailed => "PaymentFailed",
            EventKind::PointsAwarded => "PointsAwarded",
            EventKind::SmsSent => "SmsSent",
        }
    }

    /// The topic events of this kind are published on.
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => topics::ORDER_PLACED,
            EventKind::PaymentSucceeded => topics::PAYMENT_SUCCEEDED,
            EventKind::PaymentFailed => topics::PAYMENT_FAILED,
            EventKind::PointsAwarded => topics::POINTS_AWARDED,
            EventKind::SmsSent => topics::SMS_SENT,
        }
    }

    /// The kind with this name, if any.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Any order-flow event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// See [`OrderPlaced`].
    OrderPlaced(OrderPlaced),
    /// See [`PaymentSucceeded`].
    PaymentSucceeded(PaymentSucceeded),
    /// See [`PaymentFailed`].
    PaymentFailed(PaymentFailed),
    /// See [`PointsAwarded`].
    PointsAwarded(PointsAwarded),
    /// See [`SmsSent`].
    SmsSent(SmsSent),
}

/// Why a payload could not be decoded. Each variant names what was wrong, so the reason
/// on a dead-lettered message tells a person what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a JSON object.
    #[error("payload is not a JSON object: {0}")]
    NotJson(String),
    /// A field is absent. `event` is `"envelope"` for the outer `type`/`version`/`data`.
    #[error("missing field `{field}` in {event}")]
    MissingField {
        /// Which event (or `"envelope"`).
        event: String,
        /// The field's path inside the event's `data`, e.g. `items[0].quantity`.
        field: String,
    },
    /// A field is present but holds the wrong kind of value, or a value its
    /// [`crate::domain`] type refuses.
    #[error("invalid value in {event} at `{field}`: {detail}")]
    InvalidField {
        /// Which event (or `"envelope"`).
        event: String,
        /// The field's path inside the event's `data`, e.g. `items[0].quantity`; `data`
        /// when `data` itself is not an object.
        field: String,
        /// What is wrong: the domain type's rule (`quantity must be between 1 and
        /// 10000`) or serde's account of a wrong JSON type.
        detail: String,
    },
    /// `type` names no event this build knows.
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    /// `version` is not one this build can read.
    #[error(
        "unsupported schema version {version} of {event} (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// Which event.
        event: String,
        /// The version found.
        version: u64,
        /// The version this build reads.
        supported: u32,
    },
}

/// The outer JSON object, borrowed while decoding so `data` is parsed only once.
#[derive(Serialize)]
struct WireOut<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
    data: &'a T,
}

impl Event {
    /// Which kind of event this is.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::OrderPlaced(_) => EventKind::OrderPlaced,
            Event::PaymentSucceeded(_) => EventKind::PaymentSucceeded,
            Event::PaymentFailed(_) => EventKind::PaymentFailed,
            Event::PointsAwarded(_) => EventKind::PointsAwarded,
            Event::SmsSent(_) => EventKind::SmsSent,
        }
    }

    /// The order this event is about: the message key and correlation id.
    pub fn order_id(&self) -> Uuid {
        match self {
            Event::OrderPlaced(event) => event.order_id,
            Event::PaymentSucceeded(event) => event.order_id,
            Event::PaymentFailed(event) => event.order_id,
            Event::PointsAwarded(event) => event.order_id,
            Event::SmsSent(event) => event.order_id,
        }
    }

    /// The JSON payload (see the module docs for its shape).
    pub fn encode(&self) -> Vec<u8> {
        fn wire<T: Serialize>(kind: EventKind, data: &T) -> Vec<u8> {
            serde_json::to_vec(&WireOut {
                kind: kind.name(),
                version: SCHEMA_VERSION,
                data,
            })
            .expect("events are plain data and always serialize")
        }
        match self {
            Event::OrderPlaced(event) => wire(self.kind(), event),
            Event::PaymentSucceeded(event) => wire(self.kind(), event),
            Event::PaymentFailed(event) => wire(self.kind(), event),
            Event::PointsAwarded(event) => wire(self.kind(), event),
            Event::SmsSent(event) => wire(self.kind(), event),
        }
    }

    /// Reads a payload back. Never panics: every problem is a [`DecodeError`].
    pub fn decode(payload: &[u8]) -> Result<Event, DecodeError> {
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|error| DecodeError::NotJson(error.to_string()))?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(DecodeError::NotJson(format!("found {}", json_kind(&value))));
        };
        let missing = |field: &str| DecodeError::MissingField {
            event: "envelope".into(),
            field: field.into(),
        };
        let type_name = match object.get("type").ok_or_else(|| missing("type"))? {
            serde_json::Value::String(name) => name.clone(),
            other => {
                return Err(DecodeError::InvalidField {
                    event: "envelope".into(),
                    field: "type".into(),
                    detail: format!("must be a string, found {}", json_kind(other)),
                })
            }
        };
        let kind =
            EventKind::from_name(&type_name).ok_or(DecodeError::UnknownEventType(type_name))?;
        let version = object
            .get("version")
            .ok_or_else(|| missing("version"))?
            .as_u64()
            .ok_or_else(|| DecodeError::InvalidField {
                event: "envelope".into(),
                field: "version".into(),
                detail: "must be a non-negative integer".into(),
            })?;
        if version != u64::from(SCHEMA_VERSION) {
            return Err(DecodeError::UnsupportedVersion {
                event: kind.name().into(),
                version,
                supported: SCHEMA_VERSION,
            });
        }
        let data = object.remove("data").ok_or_else(|| missing("data"))?;
        Ok(match kind {
            EventKind::OrderPlaced => Event::OrderPlaced(decode_data(kind, data)?),
            EventKind::PaymentSucceeded => Event::PaymentSucceeded(decode_data(kind, data)?),
            EventKind::PaymentFailed => Event::PaymentFailed(decode_data(kind, data)?),
            EventKind::PointsAwarded => Event::PointsAwarded(decode_data(kind, data)?),
            EventKind::SmsSent => Event::SmsSent(decode_data(kind, data)?),
        })
    }

    /// An envelope carrying this event: its topic, the order id as key and correlation
    /// id, and the event-type and schema-version headers.
    pub fn to_envelope(&self) -> Envelope {
        let order_id = self.order_id().to_string();
        Envelope::new(self.kind().topic(), order_id.clone(), self.encode())
            .with_header(headers::EVENT_TYPE, self.kind().name())
            .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION.to_string())
            .with_header(headers::CORRELATION_ID, order_id)
    }

    /// Like [`Event::to_envelope`], recording `cause` as the message this one results from.
    pub fn caused_by(&self, cause: &Envelope) -> Envelope {
        let mut envelope = self.to_envelope();
        envelope
            .headers
            .insert(headers::CAUSATION_ID.into(), cause.id.to_string());
        if let Some(trace) = cause.header(headers::TRACEPARENT) {
            envelope
                .headers
                .insert(headers::TRACEPARENT.into(), trace.into());
        }
        envelope
    }
}

fn decode_data<T: DeserializeOwned>(
    kind: EventKind,
    data: serde_json::Value,
) -> Result<T, DecodeError> {
    // serde_path_to_error records where in `data` the failure happened (`items[1].quantity`);
    // plain serde_json would only say what went wrong, which is useless in an order of
    // twenty lines.
    serde_path_to_error::deserialize(data).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let inside = |name: &str| match path.as_str() {
            "." => name.to_owned(),
            parent => format!("{parent}.{name}"),
        };
        // serde reports an absent field as "missing field `name`" at the path of the
        // object it is missing from: lift the name out so the error is structured rather
        // than a sentence to grep.
        match message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            Some(field) => DecodeError::MissingField {
                event: kind.name().into(),
                field: inside(field),
            },
            None => DecodeError::InvalidField {
                event: kind.name().into(),
                field: if path == "." { "data".into() } else { path },
                detail: message,
            },
        }
    })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse(42).unwrap()
    }

    fn phone() -> Phone {
        Phone::parse("+8613800138000").unwrap()
    }

    fn amount() -> TotalCents {
        TotalCents::parse(7_100).unwrap()
    }

    fn order() -> OrderPlaced {
        OrderPlaced {
            order_id: Uuid::now_v7(),
            user_id: user(),
            phone: phone(),
            items: vec![LineItem {
                sku: Sku::parse("tea-500g").unwrap(),
                quantity: Quantity::parse(2).unwrap(),
                unit_price_cents: Cents::parse(3_550).unwrap(),
            }],
            total_cents: amount(),
            placed_at: Utc::now(),
        }
    }

    #[test]
    fn every_event_round_trips() {
        let order = order();
        let now = Utc::now();
        let events = [
            Event::OrderPlaced(order.clone()),
            Event::PaymentSucceeded(PaymentSucceeded {
                order_id: order.order_id,
                payment_id: Uuid::now_v7(),
                user_id: user(),
                phone: order.phone.clone(),
                amount_cents: amount(),
                paid_at: now,
            }),
            Event::PaymentFailed(PaymentFailed {
                order_id: order.order_id,
                user_id: user(),
                amount_cents: amount(),
                reason: "card declined".into(),
                failed_at: now,
            }),
            Event::PointsAwarded(PointsAwarded {
                order_id: order.order_id,
                user_id: user(),
                points: 71,
                awarded_at: now,
            }),
            Event::SmsSent(SmsSent {
                order_id: order.order_id,
                phone: order.phone.clone(),
                text: "paid".into(),
                sent_at: now,
            }),
        ];
        for event in events {
            assert_eq!(Event::decode(&event.encode()).unwrap(), event);
            let envelope = event.to_envelope();
            assert_eq!(envelope.topic, event.kind().topic());
            assert_eq!(envelope.key, order.order_id.to_string());
            assert_eq!(
                envelope.header(headers::EVENT_TYPE),
                Some(event.kind().name())
            );
        }
    }

    #[test]
    fn the_wire_shape_is_type_version_data() {
        let json: serde_json::Value =
            serde_json::from_slice(&Event::OrderPlaced(order()).encode()).unwrap();
        assert_eq!(json["type"], "OrderPlaced");
        assert_eq!(json["version"], 1);
        assert_eq!(json["data"]["items"][0]["unit_price_cents"], 3_550);
    }

    #[test]
    fn decoding_errors_name_what_was_wrong() {
        assert!(matches!(
            Event::decode(b"{oops"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(
            matches!(Event::decode(b"[1,2]"), Err(DecodeError::NotJson(detail)) if detail.contains("array"))
        );
        assert_eq!(
            Event::decode(br#"{"type":"OrderShipped","version":1,"data":{}}"#),
            Err(DecodeError::UnknownEventType("OrderShipped".into()))
        );
        assert_eq!(
            Event::decode(br#"{"type":"OrderPlaced","version":7,"data":{}}"#),
            Err(DecodeError::UnsupportedVersion {
                event: "OrderPlaced".into(),
                version: 7,
                supported: 1
            })
        );
        assert_eq!(
            Event::decode(br#"{"version":1,"data":{}}"#),
            Err(DecodeError::MissingField {
                event: "envelope".into(),
                field: "type".into()
            })
        );
        let mut json: serde_json::Value =
            serde_json::from_slice(&Event::OrderPlaced(order()).encode()).unwrap();
        json["data"].as_object_mut().unwrap().remove("phone");
        assert_eq!(
            Event::decode(json.to_string().as_bytes()),
            Err(DecodeError::MissingField {
                event: "OrderPlaced".into(),
                field: "phone".into()
            })
        );
        json["data"]["phone"] = "+86".into();
        json["data"]["user_id"] = "forty-two".into();
        let error = Event::decode(json.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&error, DecodeError::InvalidField { event, field, .. } if event == "OrderPlaced" && field == "phone"),
            "{error}"
        );
        json["data"]["phone"] = "+8613800138000".into();
        json["data"]["user_id"] = "forty-two".into();
        let error = Event::decode(json.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&error, DecodeError::InvalidField { event, field, .. } if event == "OrderPlaced" && field == "user_id"),
            "{error}"
        );
        json["data"]["user_id"] = 42.into();
        json["data"]["items"][0]
            .as_object_mut()
            .unwrap()
            .remove("sku");
        assert_eq!(
            Event::decode(json.to_string().as_bytes()),
            Err(DecodeError::MissingField {
                event: "OrderPlaced".into(),
                field: "items[0].sku".into()
            })
        );
    }

    /// Replaces one value inside an encoded event's `data`, as a producer with other rules
    /// (or a bug) might have written it.
    fn with_data(event: &Event, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        edit(&mut json["data"]);
        json.to_string().into_bytes()
    }

    #[test]
    fn a_value_breaking_a_domain_rule_fails_decoding_with_its_path() {
        let placed = Event::OrderPlaced(order());
        let cases: [(&str, serde_json::Value, &str); 7] = [
            ("items[0].quantity", 0.into(), "quantity must be between 1"),
            (
                "items[0].sku",
                "tea\u{202e}pot".into(),
                "sku must not contain",
            ),
            (
                "items[0].unit_price_cents",
                (-1).into(),
                "unit_price_cents must not be negative",
            ),
            (
                "total_cents",
                0.into(),
                "total_cents must be at least 1 cent",
            ),
            ("user_id", 0.into(), "user_id must be between 1"),
            ("user_id", (-7).into(), "user_id must be between 1"),
            ("phone", "call me".into(), "phone must be 6 to 15 digits"),
        ];
        for (path, value, rule) in cases {
            let payload = with_data(&placed, |data| {
                let slot = match path.split_once('.') {
                    Some((_, name)) => &mut data["items"][0][name],
                    None => &mut data[path],
                };
                *slot = value;
            });
            let error = Event::decode(&payload).unwrap_err();
            match &error {
                DecodeError::InvalidField {
                    event,
                    field,
                    detail,
                } => {
                    assert_eq!(event, "OrderPlaced");
                    assert_eq!(field, path, "{error}");
                    assert!(detail.starts_with(rule), "{path}: {error}");
                }
                other => panic!("{path}: expected InvalidField, got {other:?}"),
            }
            assert!(
                error.to_string().contains(path),
                "the message names the field: {error}"
            );
        }

        let paid = Event::PaymentSucceeded(PaymentSucceeded {
            order_id: Uuid::now_v7(),
            payment_id: Uuid::now_v7(),
            user_id: user(),
            phone: phone(),
            amount_cents: amount(),
            paid_at: Utc::now(),
        });
        let error = Event::decode(&with_data(&paid, |data| {
            data["amount_cents"] = (-100).into()
        }))
        .unwrap_err();
        assert!(
            matches!(&error, DecodeError::InvalidField { field, .. } if field == "amount_cents"),
            "{error}"
        );
        let error = Event::decode(&with_data(&paid, |data| data["phone"] = "".into())).unwrap_err();
        assert!(
            matches!(&error, DecodeError::InvalidField { field, .. } if field == "phone"),
            "{error}"
        );
    }
}
