//! One payment per order, however often `order.placed` arrives; declines published with
//! their reason.

use orderflow_events::{
    domain::{Cents, Phone, Quantity, Sku, TotalCents, UserId},
    headers, topics, Event, LineItem, OrderPlaced,
};
use uuid::Uuid;

use orderflow_kit::testkit;

use crate::helpers::{drain, spawn_app, Store, TestApp};

pub(crate) fn order(total_cents: i64) -> OrderPlaced {
    OrderPlaced {
        order_id: Uuid::now_v7(),
        user_id: UserId::parse(7).unwrap(),
        phone: Phone::parse("+8613800138000").unwrap(),
        items: vec![LineItem {
            sku: Sku::parse("tea-500g").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
            unit_price_cents: Cents::parse(total_cents).unwrap(),
        }],
        total_cents: TotalCents::parse(total_cents).unwrap(),
        placed_at: chrono::Utc::now(),
    }
}

/// Waits until all three deliveries are handled (one effect, two duplicates) and the
/// outbox is empty; returns the reconcile report.
async fn settled(app: &TestApp) -> serde_json::Value {
    app.wait_for(
        "one payment, two duplicates, an empty outbox",
        |app| async move {
            let report = app.reconcile().await;
            let done = report["payments"].as_array().map(Vec::len) == Some(1)
                && report["common"]["duplicates_ignored"].as_i64() >= Some(2)
                && report["common"]["outbox_pending"] == 0;
            done.then_some(report)
        },
    )
    .await
}

async fn pays_once_however_often_the_order_arrives(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut published = app
        .observe(&[topics::PAYMENT_SUCCEEDED, topics::PAYMENT_FAILED])
        .await;
    let order = order(12_345);
    let cause = app.publish_thrice(&Event::OrderPlaced(order.clone())).await;

    let report = settled(&app).await;
    assert_eq!(
        report["payments"][0]["order_id"],
        order.order_id.to_string()
    );
    assert_eq!(report["payments"][0]["outcome"], "succeeded");
    // The gateway's own books: one charge made for the order.
    assert_eq!(
        report["charges"],
        serde_json::json!([{"order_id": order.order_id.to_string(), "charges": 1}]),
        "{report}"
    );
    assert_eq!(report["common"]["duplicates_ignored"], 2, "{report}");
    assert_eq!(report["common"]["dead_lettered"], 0, "{report}");

    let payment = app.get_json(&format!("/payments/{}", order.order_id)).await;
    assert_eq!(payment["outcome"], "succeeded");
    assert_eq!(payment["amount_cents"], 12_345);
    assert_eq!(payment["charges"], 1);
    assert_eq!(payment["message_id"], cause.to_string());

    let events = drain(&mut published).await;
    assert_eq!(events.len(), 1, "exactly one payment event: {events:#?}");
    let Ok(Event::PaymentSucceeded(paid)) = Event::decode(&events[0].payload) else {
        panic!("expected PaymentSucceeded: {:?}", events[0]);
    };
    assert_eq!(paid.order_id, order.order_id);
    assert_eq!(paid.amount_cents.get(), 12_345);
    assert_eq!(paid.phone, order.phone);
    assert_eq!(payment["payment_id"], paid.payment_id.to_string());
    let envelope = &events[0];
    assert_eq!(envelope.topic, topics::PAYMENT_SUCCEEDED);
    assert_eq!(envelope.key, order.order_id.to_string());
    assert_eq!(
        envelope.correlation_id(),
        Some(order.order_id.to_string().as_str())
    );
    assert_eq!(
        envelope.header(headers::CAUSATION_ID),
        Some(cause.to_string().as_str())
    );
    app.stop().await;
}

async fn declines_over_the_card_limit_with_the_reason(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut published = app
        .observe(&[topics::PAYMENT_SUCCEEDED, topics::PAYMENT_FAILED])
        .await;
    let order = order(1_500_000);
    app.publish_thrice(&Event::OrderPlaced(order.clone())).await;

    let report = settled(&app).await;
    assert_eq!(report["payments"][0]["outcome"], "failed");
    assert_eq!(
        report["charges"],
        serde_json::json!([]),
        "a decline charges nothing"
    );

    let payment = app.get_json(&format!("/payments/{}", order.order_id)).await;
    assert_eq!(payment["outcome"], "failed");
    assert_eq!(payment["reason"], "card limit exceeded");

    let events = drain(&mut published).await;
    assert_eq!(events.len(), 1, "exactly one payment event: {events:#?}");
    assert_eq!(events[0].topic, topics::PAYMENT_FAILED);
    let Ok(Event::PaymentFailed(failed)) = Event::decode(&events[0].payload) else {
        panic!("expected PaymentFailed: {:?}", events[0]);
    };
    assert_eq!(failed.order_id, order.order_id);
    assert_eq!(failed.reason, "card limit exceeded");
    assert_eq!(failed.amount_cents.get(), 1_500_000);
    app.stop().await;
}

async fn the_failure_rate_declines_with_card_declined(store: Store) {
    let app = spawn_app(store, |config| config.gateway.failure_rate = 1.0).await;
    let order = order(500);
    app.publish_thrice(&Event::OrderPlaced(order.clone())).await;
    let report = settled(&app).await;
    assert_eq!(report["payments"][0]["outcome"], "failed");
    let payment = app.get_json(&format!("/payments/{}", order.order_id)).await;
    assert_eq!(payment["reason"], "card declined");
    app.stop().await;
}

async fn nonsense_orders_are_dead_lettered(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut dead = app
        .broker
        .subscribe_dead_letters("payment")
        .await
        .expect("the dead-letter queue can be read");
    let mut broken = order(1_000);
    broken.total_cents = TotalCents::parse(999).unwrap(); // does not match its items
    app.publish(Event::OrderPlaced(broken.clone()).to_envelope())
        .await;
    app.wait_for("the broken order to be dead-lettered", |app| async move {
        let report = app.reconcile().await;
        (report["common"]["dead_lettered"] == 1).then_some(())
    })
    .await;
    let letter = dead
        .next_within(crate::helpers::PATIENCE)
        .await
        .expect("a dead letter");
    let reason = testkit::dead_letter_reason(&letter);
    assert!(reason.contains("does not match its items"), "{reason}");
    letter.ack().await.unwrap();
    let response = app.get(&format!("/payments/{}", broken.order_id)).await;
    assert_eq!(response.status(), 404);
    app.stop().await;
}

async fn bad_order_ids_are_named(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let response = app.get("/payments/not-a-uuid").await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["field"], "order_id");
    let response = app.get(&format!("/payments/{}", Uuid::now_v7())).await;
    assert_eq!(response.status(), 404);
    app.stop().await;
}

orderflow_kit::on_every_store!(
    pays_once_however_often_the_order_arrives,
    declines_over_the_card_limit_with_the_reason,
    the_failure_rate_declines_with_card_declined,
    nonsense_orders_are_dead_lettered,
    bad_order_ids_are_named,
);
