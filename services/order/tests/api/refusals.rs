//! Malformed requests: each is refused with the status and the field it is about, and
//! none of them stores or publishes anything.

use orderflow_events::topics;
use orderflow_order::validation;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{order_body, order_id_of, order_placed_until, post_order, spawn_app, Store};

/// One malformed request and what it must be answered with.
struct Refusal {
    what: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    idempotency_key: Option<&'static str>,
    status: StatusCode,
    field: Option<&'static str>,
}

fn refusal(what: &'static str, body: Value, field: &'static str) -> Refusal {
    Refusal {
        what,
        body: body.to_string().into_bytes(),
        content_type: Some("application/json"),
        idempotency_key: None,
        status: StatusCode::UNPROCESSABLE_ENTITY,
        field: Some(field),
    }
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = order_body(42);
    edit(&mut body);
    body
}

fn refusals() -> Vec<Refusal> {
    let mut padded = order_body(42).to_string().into_bytes();
    padded.resize(validation::MAX_BODY_BYTES + 1024, b' ');
    vec![
        Refusal {
            what: "malformed JSON",
            body: br#"{"user_id": 42, "phone": "#.to_vec(),
            content_type: Some("application/json"),
            idempotency_key: None,
            status: StatusCode::BAD_REQUEST,
            field: None,
        },
        Refusal {
            what: "not declared as JSON",
            body: order_body(42).to_string().into_bytes(),
            content_type: Some("text/plain"),
            idempotency_key: None,
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            field: None,
        },
        Refusal {
            what: "a body over 64 KiB",
            body: padded,
            content_type: Some("application/json"),
            idempotency_key: None,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            field: None,
        },
        Refusal {
            what: "an Idempotency-Key with a space",
            body: order_body(42).to_string().into_bytes(),
            content_type: Some("application/json"),
            idempotency_key: Some("not a key"),
            status: StatusCode::BAD_REQUEST,
            field: Some("Idempotency-Key"),
        },
        refusal(
            "a missing phone",
            with(|body| {
                body.as_object_mut().unwrap().remove("phone");
            }),
            "phone",
        ),
        refusal(
            "a missing quantity",
            with(|body| {
                body["items"][0].as_object_mut().unwrap().remove("quantity");
            }),
            "items[0].quantity",
        ),
        refusal(
            "an unknown field",
            with(|body| body["coupon"] = "FREE".into()),
            "coupon",
        ),
        refusal(
            "an unknown item field",
            with(|body| body["items"][1]["colour"] = "red".into()),
            "items[1].colour",
        ),
        refusal("no items", with(|body| body["items"] = json!([])), "items"),
        refusal(
            "a zero quantity",
            with(|body| body["items"][0]["quantity"] = 0.into()),
            "items[0].quantity",
        ),
        refusal(
            "a negative quantity",
            with(|body| body["items"][1]["quantity"] = (-3).into()),
            "items[1].quantity",
        ),
        refusal(
            "a quantity that is text",
            with(|body| body["items"][0]["quantity"] = "two".into()),
            "items[0].quantity",
        ),
        refusal(
            "a negative price",
            with(|body| body["items"][0]["unit_price_cents"] = (-1).into()),
            "items[0].unit_price_cents",
        ),
        refusal(
            "a total above the cap",
            with(|body| body["items"][0]["unit_price_cents"] = validation::MAX_TOTAL_CENTS.into()),
            "items",
        ),
        refusal(
            "a total that overflows",
            with(|body| {
                body["items"][0]["unit_price_cents"] = i64::MAX.into();
                body["items"][0]["quantity"] = 10.into();
            }),
            "items",
        ),
        refusal(
            "a phone with letters",
            with(|body| body["phone"] = "call me".into()),
            "phone",
        ),
        refusal(
            "a phone too short",
            with(|body| body["phone"] = "+12345".into()),
            "phone",
        ),
        refusal(
            "a phone too long",
            with(|body| body["phone"] = "1234567890123456".into()),
            "phone",
        ),
        refusal(
            "a user id of zero",
            with(|body| body["user_id"] = 0.into()),
            "user_id",
        ),
    ]
}

async fn malformed_requests_are_refused_and_nothing_is_stored(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut placed_events = app.observe(&[topics::ORDER_PLACED]).await;
    for case in refusals() {
        let mut request = app
            .client
            .post(format!("{}/orders", app.address))
            .body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = case.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", case.what));
        assert_eq!(response.status(), case.status, "{}", case.what);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("{}: the error body is not JSON: {error}", case.what));
        let message = body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{}: no message in {body}", case.what);
        match case.field {
            Some(field) => assert_eq!(body["field"], field, "{}: {body}", case.what),
            None => assert!(body.get("field").is_none(), "{}: {body}", case.what),
        }
    }

    let report = app.reconcile().await;
    assert_eq!(report["orders"], json!([]), "nothing stored: {report}");
    assert_eq!(report["common"]["outbox_pending"], 0, "{report}");

    // The first event published after all those refusals is this order's: none of them
    // published anything.
    let (sentinel, _) = order_id_of(post_order(&app, &order_body(1), None).await).await;
    let seen = order_placed_until(&mut placed_events, sentinel).await;
    assert_eq!(
        seen.len(),
        1,
        "only the valid order was published: {seen:?}"
    );
    app.stop().await;
}

orderflow_kit::on_every_store!(malformed_requests_are_refused_and_nothing_is_stored);
