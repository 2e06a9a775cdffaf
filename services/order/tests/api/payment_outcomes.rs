//! `payment.succeeded` and `payment.failed` move an order once, however often they arrive.

use orderflow_events::{
    domain::{Phone, TotalCents, UserId},
    Event, PaymentFailed, PaymentSucceeded,
};
use uuid::Uuid;

use crate::helpers::{get_with_status, order_body, order_id_of, post_order, spawn_app, Store};

async fn payment_outcomes_move_the_order_once(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let (paid_id, _) = order_id_of(post_order(&app, &order_body(5), None).await).await;
    let (declined_id, _) = order_id_of(post_order(&app, &order_body(6), None).await).await;

    let succeeded = Event::PaymentSucceeded(PaymentSucceeded {
        order_id: paid_id,
        payment_id: Uuid::now_v7(),
        user_id: UserId::parse(5).unwrap(),
        phone: Phone::parse("+8613800138000").unwrap(),
        amount_cents: TotalCents::parse(8_480).unwrap(),
        paid_at: chrono::Utc::now(),
    })
    .to_envelope();
    // The same message twice (a redelivery): one effect, one duplicate counted.
    app.publish(succeeded.clone()).await;
    app.publish(succeeded).await;
    let failed = Event::PaymentFailed(PaymentFailed {
        order_id: declined_id,
        user_id: UserId::parse(6).unwrap(),
        amount_cents: TotalCents::parse(8_480).unwrap(),
        reason: "card declined".into(),
        failed_at: chrono::Utc::now(),
    })
    .to_envelope();
    app.publish(failed).await;

    let report = app
        .wait_for(
            "both outcomes applied and the duplicate ignored",
            |app| async move {
                let report = app.reconcile().await;
                let status_of = |id: Uuid| {
                    report["orders"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|row| row["order_id"] == id.to_string())
                        .map(|row| row["status"].clone())
                };
                (status_of(paid_id) == Some("paid".into())
                    && status_of(declined_id) == Some("payment_failed".into())
                    && report["common"]["duplicates_ignored"] == 1)
                    .then_some(report)
            },
        )
        .await;
    assert_eq!(report["common"]["dead_lettered"], 0, "{report}");

    let (_, paid) = get_with_status(&app, &format!("/orders/{paid_id}")).await;
    let history: Vec<&str> = paid["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["placed", "paid"], "moved once: {paid}");
    assert_eq!(paid["history"][1]["event"], "PaymentSucceeded");
    assert!(paid["history"][1]["at"]
        .as_str()
        .is_some_and(|at| !at.is_empty()));

    let (_, declined) = get_with_status(&app, &format!("/orders/{declined_id}")).await;
    assert_eq!(declined["status"], "payment_failed");
    assert_eq!(
        declined["history"].as_array().unwrap().len(),
        2,
        "{declined}"
    );
    app.stop().await;
}

orderflow_kit::on_every_store!(payment_outcomes_move_the_order_once);
