//! Turning what a client sent into a [`NewOrder`], or into an error that says which field
//! is wrong and why.
//!
//! Nothing here touches the database or the broker: a request that fails any rule is
//! refused before anything is stored, so a bad request can never leave half an order or a
//! stray event behind.
//!
//! This file owns the *request's* shape: size, content type, JSON syntax, which fields
//! exist, how many items, and the order total (a rule about the lines together). What one
//! value may be — a user id, a phone, a SKU, a quantity, a price — is the business of the
//! [`orderflow_events::domain`] types the request is deserialized into, the same types
//! every consumer decodes events with. So the API cannot accept an order the payment
//! service would refuse, and the rules are written once.
//!
//! The rules:
//!
//! | problem | status | `field` |
//! | --- | --- | --- |
//! | body larger than [`MAX_BODY_BYTES`] | 413 | — |
//! | `Content-Type` not JSON | 415 | — |
//! | not JSON at all (syntax, truncated, trailing data, empty) | 400 | — |
//! | a field missing, unknown, or of the wrong type | 422 | the JSON path, e.g. `items[1].quantity` |
//! | `user_id` not in 1..=2⁶³−1 ([`UserId`]) | 422 | `user_id` |
//! | `phone` not 6–15 digits with an optional leading `+` ([`Phone`]) | 422 | `phone` |
//! | no items, or more than [`MAX_ITEMS`] | 422 | `items` |
//! | `sku` empty, longer than [`MAX_SKU_CHARS`], or with control, invisible or bidi-control characters ([`Sku`]) | 422 | `items[i].sku` |
//! | `quantity` not in 1..=[`MAX_QUANTITY`] ([`Quantity`]) | 422 | `items[i].quantity` |
//! | `unit_price_cents` negative ([`Cents`]) | 422 | `items[i].unit_price_cents` |
//! | the order total zero, above [`MAX_TOTAL_CENTS`] or overflowing ([`TotalCents`]) | 422 | `items` |
//! | `Idempotency-Key` header empty, too long or not visible ASCII | 400 | `Idempotency-Key` |
//! | order id in a path not a UUID | 400 | `order_id` |

use axum::http::{HeaderValue, StatusCode};
use orderflow_events::{
    domain::{Cents, Phone, Quantity, Sku, TotalCents, UserId},
    LineItem,
};
use orderflow_kit::http::ApiError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The largest request body accepted. An order of [`MAX_ITEMS`] lines fits many times
/// over; anything bigger is a mistake or an attack, refused before it is parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest order total, in cents (1,000,000.00): [`TotalCents::MAX`].
pub const MAX_TOTAL_CENTS: i64 = TotalCents::MAX;

/// The most lines one order may have.
pub const MAX_ITEMS: usize = 100;

/// The most units of one line: [`Quantity::MAX`].
pub const MAX_QUANTITY: i64 = Quantity::MAX as i64;

/// The longest SKU, in characters: [`Sku::MAX_CHARS`].
pub const MAX_SKU_CHARS: usize = Sku::MAX_CHARS;

/// The longest `Idempotency-Key`, in bytes (a UUID is 36).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The header a client sets so that retrying a request cannot create a second order.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `POST /orders` as sent. Unknown fields are refused: a misspelt `quantty` must not
/// silently become an order without a quantity. Each value is deserialized straight into
/// its domain type, so a bad one fails here with the type's rule and its JSON path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    user_id: UserId,
    phone: Phone,
    items: Vec<ItemRequest>,
}

/// One line as sent: a [`LineItem`] that refuses unknown fields. (The event's `LineItem`
/// does not, so that a newer producer may add a field without breaking older consumers.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemRequest {
    sku: Sku,
    quantity: Quantity,
    unit_price_cents: Cents,
}

/// A request that passed every rule: safe to store and publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewOrder {
    /// The customer.
    pub user_id: UserId,
    /// Digits with an optional leading `+`.
    pub phone: Phone,
    /// At least one line, at most [`MAX_ITEMS`].
    pub items: Vec<LineItem>,
    /// Sum of quantity × unit price: at least 1 cent, at most [`MAX_TOTAL_CENTS`].
    pub total_cents: TotalCents,
}

impl NewOrder {
    /// A canonical text of the order, stored with an idempotency key: a retry with the same
    /// key must carry the same order, or it is refused instead of silently answered with a
    /// different order than the one the client is asking for.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(self).expect("a NewOrder is plain data and always serializes")
    }
}

/// Why a request was refused. Becomes an [`ApiError`]: `{"error": message, "field": field}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// 400, 413, 415 or 422.
    pub status: StatusCode,
    /// The field to blame, as a JSON path (`items[0].quantity`), when there is one.
    pub field: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl ValidationError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ValidationError {
            status,
            field: None,
            message: message.into(),
        }
    }

    fn field(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            status,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError::field(StatusCode::UNPROCESSABLE_ENTITY, field, message)
    }

    /// 413 for a body over [`MAX_BODY_BYTES`].
    pub fn too_large() -> Self {
        ValidationError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(formatter, "{} ({field}): {}", self.status, self.message),
            None => write!(formatter, "{}: {}", self.status, self.message),
        }
    }
}

impl std::error::Error for ValidationError {}

impl From<ApiError> for ValidationError {
    fn from(error: ApiError) -> Self {
        ValidationError {
            status: error.status,
            field: error.field,
            message: error.message,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError {
            status: error.status,
            message: error.message,
            field: error.field,
        }
    }
}

/// Parses and checks a `POST /orders` body the way the route does: the kit's JSON reading
/// (which names the field a value fails in), then [`check`]. The route gets the same two
/// steps from [`orderflow_kit::http::JsonBody`]; this is them without HTTP, for tests.
pub fn parse_order(body: &[u8]) -> Result<NewOrder, ValidationError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ValidationError::too_large());
    }
    let request: OrderRequest = orderflow_kit::http::parse_json(body)?;
    check(request)
}

/// The rules about the lines together, which no single value's type can know.
pub fn check(request: OrderRequest) -> Result<NewOrder, ValidationError> {
    if request.items.is_empty() {
        return Err(ValidationError::invalid(
            "items",
            "an order needs at least one item",
        ));
    }
    if request.items.len() > MAX_ITEMS {
        return Err(ValidationError::invalid(
            "items",
            format!("an order has at most {MAX_ITEMS} items"),
        ));
    }
    let items: Vec<LineItem> = request
        .items
        .into_iter()
        .map(|item| LineItem {
            sku: item.sku,
            quantity: item.quantity,
            unit_price_cents: item.unit_price_cents,
        })
        .collect();
    // Checked arithmetic: a wrapped total would be a cheap order for an expensive basket.
    let sum = items.iter().try_fold(0_i64, |total, item| {
        item.line_total()
            .and_then(|line_total| total.checked_add(line_total))
    });
    let sum = sum.ok_or_else(too_large_total)?;
    let total_cents = TotalCents::parse(sum).map_err(|_| {
        if sum < 1 {
            // Every line free: the order could never be paid, so it is not accepted.
            ValidationError::invalid(
                "items",
                "the order total must be at least 1 cent: an order of free items cannot be paid",
            )
        } else {
            too_large_total()
        }
    })?;
    Ok(NewOrder {
        user_id: request.user_id,
        phone: request.phone,
        items,
        total_cents,
    })
}

/// The order total is over [`MAX_TOTAL_CENTS`], or so large it overflowed `i64`.
fn too_large_total() -> ValidationError {
    ValidationError::invalid(
        "items",
        format!("the order total exceeds the limit of {MAX_TOTAL_CENTS} cents"),
    )
}

/// The `Idempotency-Key` header, if sent: 1–255 visible ASCII characters.
pub fn idempotency_key(value: Option<&HeaderValue>) -> Result<Option<String>, ValidationError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let refuse = |why: &str| {
        ValidationError::field(StatusCode::BAD_REQUEST, "Idempotency-Key", why.to_owned())
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(refuse("must not be empty"));
    }
    if bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(refuse(&format!(
            "must be at most {MAX_IDEMPOTENCY_KEY_BYTES} characters"
        )));
    }
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(refuse(
            "must be visible ASCII characters only (a UUID is ideal)",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The `{id}` of `/orders/{id}`.
pub fn order_id(raw: &str) -> Result<Uuid, ValidationError> {
    raw.parse().map_err(|_| {
        ValidationError::field(
            StatusCode::BAD_REQUEST,
            "order_id",
            format!("{raw:?} is not a UUID"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "user_id": 42,
            "phone": "+8613800138000",
            "items": [
                {"sku": "green-tea-250g", "quantity": 2, "unit_price_cents": 1_990},
                {"sku": "teapot", "quantity": 1, "unit_price_cents": 4_500},
            ],
        })
    }

    fn parse(value: &serde_json::Value) -> Result<NewOrder, ValidationError> {
        parse_order(value.to_string().as_bytes())
    }

    #[track_caller]
    fn refused(value: serde_json::Value, status: StatusCode, field: &str) -> ValidationError {
        let error = parse(&value).unwrap_err();
        assert_eq!(error.status, status, "{error}");
        assert_eq!(error.field.as_deref(), Some(field), "{error}");
        error
    }

    #[test]
    fn a_valid_order_is_totalled() {
        let order = parse(&valid()).unwrap();
        assert_eq!(order.total_cents.get(), 2 * 1_990 + 4_500);
        assert_eq!(order.items.len(), 2);
        assert_eq!(order.items[0].quantity.get(), 2);
        assert_eq!(order.items[1].sku.as_str(), "teapot");
        assert_eq!(order.phone.as_str(), "+8613800138000");
    }

    #[test]
    fn malformed_json_is_400_without_a_field() {
        let trailing = format!("{} {{}}", valid());
        for body in [
            &b"{\"user_id\": 1,"[..],
            b"not json",
            trailing.as_bytes(),
            b"",
            b"  ",
        ] {
            let error = parse_order(body).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body:?}: {error}");
            assert_eq!(error.field, None);
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let mut body = valid();
        body.as_object_mut().unwrap().remove("phone");
        let error = refused(body, StatusCode::UNPROCESSABLE_ENTITY, "phone");
        assert!(error.message.contains("required"), "{error}");

        let mut body = valid();
        body["items"][1].as_object_mut().unwrap().remove("quantity");
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[1].quantity");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let mut body = valid();
        body["coupon"] = "FREE".into();
        let error = refused(body, StatusCode::UNPROCESSABLE_ENTITY, "coupon");
        assert!(error.message.contains("unknown field"), "{error}");

        let mut body = valid();
        body["items"][0]["quantty"] = 3.into();
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[0].quantty");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let mut body = valid();
        body["items"][0]["quantity"] = "two".into();
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[0].quantity");

        let mut body = valid();
        body["user_id"] = (-5).into();
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "user_id");

        let error = parse_order(b"[1, 2]").unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn items_must_be_there() {
        let mut body = valid();
        body["items"] = serde_json::json!([]);
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items");

        let mut body = valid();
        body["items"] = serde_json::Value::Array(vec![valid()["items"][0].clone(); MAX_ITEMS + 1]);
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items");
    }

    #[test]
    fn quantity_must_be_positive() {
        for quantity in [0, -1, MAX_QUANTITY + 1] {
            let mut body = valid();
            body["items"][1]["quantity"] = quantity.into();
            refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[1].quantity");
        }
    }

    #[test]
    fn price_must_not_be_negative_but_may_be_zero() {
        let mut body = valid();
        body["items"][0]["unit_price_cents"] = (-1).into();
        refused(
            body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "items[0].unit_price_cents",
        );

        let mut body = valid();
        body["items"][0]["unit_price_cents"] = 0.into();
        assert_eq!(parse(&body).unwrap().total_cents.get(), 4_500);
    }

    #[test]
    fn a_zero_total_is_refused_because_it_could_never_be_paid() {
        let mut body = valid();
        body["items"][0]["unit_price_cents"] = 0.into();
        body["items"][1]["unit_price_cents"] = 0.into();
        let error = refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items");
        assert!(error.message.contains("at least 1 cent"), "{error}");
    }

    #[test]
    fn absurd_totals_are_refused() {
        // Exactly at the cap is fine.
        let mut body = valid();
        body["items"] = serde_json::json!([{"sku": "gold", "quantity": 1, "unit_price_cents": MAX_TOTAL_CENTS}]);
        assert_eq!(parse(&body).unwrap().total_cents.get(), MAX_TOTAL_CENTS);
        // One cent over, spread over lines.
        body["items"] = serde_json::json!([
            {"sku": "gold", "quantity": 1, "unit_price_cents": MAX_TOTAL_CENTS},
            {"sku": "tip", "quantity": 1, "unit_price_cents": 1},
        ]);
        refused(body.clone(), StatusCode::UNPROCESSABLE_ENTITY, "items");
        // A product that overflows i64.
        body["items"] =
            serde_json::json!([{"sku": "x", "quantity": 10_000, "unit_price_cents": i64::MAX}]);
        refused(body.clone(), StatusCode::UNPROCESSABLE_ENTITY, "items");
        // A price that does not even fit i64.
        let text = valid()
            .to_string()
            .replace("1990", "99999999999999999999999");
        let error = parse_order(text.as_bytes()).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("items[0].unit_price_cents"));
    }

    #[test]
    fn phone_numbers() {
        for good in ["+8613800138000", "123456", "123456789012345"] {
            let mut body = valid();
            body["phone"] = good.into();
            assert!(parse(&body).is_ok(), "{good}");
        }
        for bad in [
            "",
            "+",
            "12345",
            "1234567890123456",
            "+86 138 0013",
            "phone",
            "++123456",
            "１２３４５６",
        ] {
            let mut body = valid();
            body["phone"] = bad.into();
            refused(body, StatusCode::UNPROCESSABLE_ENTITY, "phone");
        }
    }

    #[test]
    fn skus_and_users() {
        let mut body = valid();
        body["items"][0]["sku"] = "   ".into();
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[0].sku");
        let mut body = valid();
        body["items"][0]["sku"] = "x".repeat(MAX_SKU_CHARS + 1).into();
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[0].sku");
        for hidden in [
            "tea\u{200B}pot",
            "tea\u{202E}gk5",
            "\u{FEFF}tea",
            "tea\u{0007}",
        ] {
            let mut body = valid();
            body["items"][1]["sku"] = hidden.into();
            let error = refused(body, StatusCode::UNPROCESSABLE_ENTITY, "items[1].sku");
            assert!(error.message.contains("bidi-control"), "{error}");
        }
        let mut body = valid();
        body["items"][0]["sku"] = "  padded  ".into();
        assert_eq!(parse(&body).unwrap().items[0].sku.as_str(), "padded");
        let mut body = valid();
        body["user_id"] = 0.into();
        let error = refused(body, StatusCode::UNPROCESSABLE_ENTITY, "user_id");
        assert!(error.message.contains("between 1 and"), "{error}");
        let mut body = valid();
        body["user_id"] = u64::MAX.into();
        refused(body, StatusCode::UNPROCESSABLE_ENTITY, "user_id");
    }

    #[test]
    fn too_large_bodies_are_413() {
        let body = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse_order(&body).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(idempotency_key(None).unwrap(), None);
        let key = HeaderValue::from_static("0190-abc");
        assert_eq!(
            idempotency_key(Some(&key)).unwrap().as_deref(),
            Some("0190-abc")
        );
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_static("has space"),
            HeaderValue::from_str(&"k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1)).unwrap(),
        ] {
            let error = idempotency_key(Some(&bad)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert_eq!(error.field.as_deref(), Some("Idempotency-Key"));
        }
    }

    #[test]
    fn order_ids() {
        let id = Uuid::now_v7();
        assert_eq!(order_id(&id.to_string()).unwrap(), id);
        let error = order_id("42").unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.field.as_deref(), Some("order_id"));
    }

    #[test]
    fn the_fingerprint_is_stable_and_tells_orders_apart() {
        let order = parse(&valid()).unwrap();
        assert_eq!(order.fingerprint(), parse(&valid()).unwrap().fingerprint());
        let mut other = valid();
        other["user_id"] = 43.into();
        assert_ne!(order.fingerprint(), parse(&other).unwrap().fingerprint());
    }
}
