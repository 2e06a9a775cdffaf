//! Points once per paid order, however often `payment.succeeded` arrives.

use orderflow_events::{
    domain::{Phone, TotalCents, UserId},
    headers, topics, Event, PaymentSucceeded,
};
use uuid::Uuid;

use crate::helpers::{drain, spawn_app, Store};
use orderflow_kit::testkit;

fn payment(user_id: u64, amount_cents: i64) -> PaymentSucceeded {
    PaymentSucceeded {
        order_id: Uuid::now_v7(),
        payment_id: Uuid::now_v7(),
        user_id: UserId::try_from(user_id).unwrap(),
        phone: Phone::parse("+8613800138000").unwrap(),
        amount_cents: TotalCents::parse(amount_cents).unwrap(),
        paid_at: chrono::Utc::now(),
    }
}

async fn awards_once_per_order(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut published = app.observe(&[topics::POINTS_AWARDED]).await;
    let user = 4_242;
    let paid = payment(user, 12_345);
    let cause = app
        .publish_thrice(&Event::PaymentSucceeded(paid.clone()))
        .await;

    let report = app
        .wait_for(
            "one ledger row, two duplicates, an empty outbox",
            |app| async move {
                let report = app.reconcile().await;
                let done = report["ledger"].as_array().map(Vec::len) == Some(1)
                    && report["common"]["duplicates_ignored"].as_i64() >= Some(2)
                    && report["common"]["outbox_pending"] == 0;
                done.then_some(report)
            },
        )
        .await;
    assert_eq!(report["ledger"][0]["order_id"], paid.order_id.to_string());
    assert_eq!(report["ledger"][0]["points"], 123, "⌊12345 / 100⌋");
    assert_eq!(report["common"]["duplicates_ignored"], 2, "{report}");
    assert_eq!(report["common"]["dead_lettered"], 0, "{report}");

    let balance = app.get_json(&format!("/users/{user}/points")).await;
    assert_eq!(balance["user_id"], user);
    assert_eq!(balance["balance"], 123);
    assert_eq!(balance["ledger"].as_array().map(Vec::len), Some(1));
    assert_eq!(balance["ledger"][0]["order_id"], paid.order_id.to_string());
    assert!(balance["ledger"][0]["awarded_at"].is_string());

    let events = drain(&mut published).await;
    assert_eq!(events.len(), 1, "exactly one points.awarded: {events:#?}");
    let Ok(Event::PointsAwarded(awarded)) = Event::decode(&events[0].payload) else {
        panic!("expected PointsAwarded: {:?}", events[0]);
    };
    assert_eq!(
        (awarded.order_id, awarded.user_id.get(), awarded.points),
        (paid.order_id, user, 123)
    );
    assert_eq!(events[0].key, paid.order_id.to_string());
    assert_eq!(
        events[0].header(headers::CAUSATION_ID),
        Some(cause.to_string().as_str())
    );

    // A second order of the same user adds to the balance.
    let second = payment(user, 250);
    app.publish(Event::PaymentSucceeded(second).to_envelope())
        .await;
    app.wait_for("the second award", |app| async move {
        let balance = app.get_json(&format!("/users/{user}/points")).await;
        (balance["balance"] == 125).then_some(())
    })
    .await;
    app.stop().await;
}

async fn users_without_points_and_bad_ids(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let nobody = app.get_json("/users/99/points").await;
    assert_eq!(nobody["balance"], 0);
    assert_eq!(nobody["ledger"], serde_json::json!([]));
    let response = app.get("/users/alice/points").await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["field"], "user_id");
    app.stop().await;
}

async fn negative_amounts_are_dead_lettered(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut dead = app
        .broker
        .subscribe_dead_letters("points")
        .await
        .expect("the dead-letter queue can be read");
    // A negative amount cannot be built in Rust (`TotalCents` refuses it), so write the
    // payload by hand, as a producer with other rules might.
    let mut envelope = Event::PaymentSucceeded(payment(5, 100)).to_envelope();
    let mut json: serde_json::Value = serde_json::from_slice(&envelope.payload).unwrap();
    json["data"]["amount_cents"] = (-100).into();
    envelope.payload = json.to_string().into_bytes().into();
    app.publish(envelope).await;
    let letter = dead
        .next_within(crate::helpers::PATIENCE)
        .await
        .expect("a dead letter");
    let reason = testkit::dead_letter_reason(&letter);
    assert!(
        reason.contains("undecodable") && reason.contains("amount_cents"),
        "the reason names the field: {reason}"
    );
    letter.ack().await.unwrap();
    let report = app.reconcile().await;
    assert_eq!(report["ledger"], serde_json::json!([]));
    app.stop().await;
}

orderflow_kit::on_every_store!(
    awards_once_per_order,
    users_without_points_and_bad_ids,
    negative_amounts_are_dead_lettered,
);
