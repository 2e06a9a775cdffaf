//! One text per paid order, however often `payment.succeeded` arrives; a burst is paced
//! to the gateway's rate instead of being refused.

use std::time::{Duration, Instant};

use orderflow_events::{
    domain::{Phone, TotalCents, UserId},
    headers, topics, Event, PaymentSucceeded,
};
use uuid::Uuid;

use crate::helpers::{drain, spawn_app, Store};

pub(crate) fn payment(amount_cents: i64) -> PaymentSucceeded {
    PaymentSucceeded {
        order_id: Uuid::now_v7(),
        payment_id: Uuid::now_v7(),
        user_id: UserId::parse(7).unwrap(),
        phone: Phone::parse("+8613800138000").unwrap(),
        amount_cents: TotalCents::parse(amount_cents).unwrap(),
        paid_at: chrono::Utc::now(),
    }
}

async fn texts_once_per_order(store: Store) {
    let app = spawn_app(store, |config| config.instance = "sms-7".into()).await;
    let mut published = app.observe(&[topics::SMS_SENT]).await;
    let paid = payment(12_345);
    let cause = app
        .publish_thrice(&Event::PaymentSucceeded(paid.clone()))
        .await;

    let report = app
        .wait_for(
            "one text, two duplicates, an empty outbox",
            |app| async move {
                let report = app.reconcile().await;
                let done = report["messages"].as_array().map(Vec::len) == Some(1)
                    && report["common"]["duplicates_ignored"].as_i64() >= Some(2)
                    && report["common"]["outbox_pending"] == 0;
                done.then_some(report)
            },
        )
        .await;
    assert_eq!(report["messages"][0]["order_id"], paid.order_id.to_string());
    assert_eq!(report["messages"][0]["instance"], "sms-7");
    // The gateway's own books: one text dispatched about the order.
    assert_eq!(
        report["texts"],
        serde_json::json!([{"order_id": paid.order_id.to_string(), "texts": 1}]),
        "{report}"
    );
    assert_eq!(report["common"]["duplicates_ignored"], 2, "{report}");
    assert_eq!(report["common"]["dead_lettered"], 0, "{report}");

    let texts = app
        .get_json(&format!("/sms?order_id={}", paid.order_id))
        .await;
    let texts = texts.as_array().expect("a list");
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0]["phone"], paid.phone.as_str());
    assert_eq!(texts[0]["instance"], "sms-7");
    assert_eq!(texts[0]["message_id"], cause.to_string());
    let text = texts[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&paid.order_id.to_string())
            && text.contains("is paid")
            && text.contains("123.45"),
        "{text}"
    );

    let events = drain(&mut published).await;
    assert_eq!(events.len(), 1, "exactly one sms.sent: {events:#?}");
    let Ok(Event::SmsSent(sent)) = Event::decode(&events[0].payload) else {
        panic!("expected SmsSent: {:?}", events[0]);
    };
    assert_eq!((sent.order_id, sent.text.as_str()), (paid.order_id, text));
    assert_eq!(
        events[0].header(headers::CAUSATION_ID),
        Some(cause.to_string().as_str())
    );
    app.stop().await;
}

async fn a_burst_is_paced_to_the_gateway_rate(store: Store) {
    const ORDERS: usize = 10;
    const RATE: f64 = 20.0;
    let app = spawn_app(store, |config| config.gateway.rate_per_s = RATE).await;
    let started = Instant::now();
    let payments: Vec<_> = (0..ORDERS).map(|_| payment(1_000)).collect();
    app.broker
        .publish_all(
            payments
                .iter()
                .map(|paid| Event::PaymentSucceeded(paid.clone()).to_envelope())
                .collect(),
        )
        .await
        .expect("published");
    let report = app
        .wait_for("every order texted", |app| async move {
            let report = app.reconcile().await;
            (report["messages"].as_array().map(Vec::len) == Some(ORDERS)).then_some(report)
        })
        .await;
    // The consumer spaces handler starts 1/RATE apart: ten texts take at least nine gaps.
    let floor = Duration::from_secs_f64((ORDERS - 1) as f64 / RATE);
    assert!(
        started.elapsed() >= floor,
        "{ORDERS} texts at {RATE}/s took only {:?}",
        started.elapsed()
    );
    assert_eq!(report["common"]["dead_lettered"], 0, "{report}");
    let recent = app.get_json("/sms").await;
    assert_eq!(recent.as_array().map(Vec::len), Some(ORDERS));
    app.stop().await;
}

async fn bad_order_ids_are_named(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let response = app.get("/sms?order_id=nope").await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["field"], "order_id");
    let none = app
        .get_json(&format!("/sms?order_id={}", Uuid::now_v7()))
        .await;
    assert_eq!(none, serde_json::json!([]));
    app.stop().await;
}

orderflow_kit::on_every_store!(
    texts_once_per_order,
    a_burst_is_paced_to_the_gateway_rate,
    bad_order_ids_are_named,
);
