//! Placing orders: accepted once per `Idempotency-Key`, published once per order, readable
//! back; unknown orders and routes answer with JSON errors.

use orderflow_events::topics;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    get_with_status, order_body, order_id_of, order_placed_until, post_order, spawn_app, Store,
};

async fn a_valid_order_is_placed_once_per_idempotency_key(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let mut placed_events = app.observe(&[topics::ORDER_PLACED]).await;
    let key = Uuid::now_v7().to_string();

    let (order_id, body) = order_id_of(post_order(&app, &order_body(42), Some(&key)).await).await;
    assert_eq!(body["status"], "placed");
    assert_eq!(body["total_cents"], 2 * 1_990 + 4_500);
    assert_eq!(body["user_id"], 42);

    let (status, order) = get_with_status(&app, &format!("/orders/{order_id}")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "placed");
    assert_eq!(order["total_cents"], 8_480);
    assert_eq!(order["items"][1]["sku"], "teapot");
    assert_eq!(order["history"].as_array().unwrap().len(), 1);
    assert_eq!(order["history"][0]["status"], "placed");

    // The client retries (say its first response was lost): the same order comes back.
    let retry = post_order(&app, &order_body(42), Some(&key)).await;
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|value| value.to_str().unwrap()),
        Some("true")
    );
    let (retried_id, _) = order_id_of(retry).await;
    assert_eq!(retried_id, order_id, "a retry returns the first order");

    // The same key for a different order is a client bug: refused, not silently mixed up.
    let conflict = post_order(&app, &order_body(43), Some(&key)).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let error: Value = conflict.json().await.unwrap();
    assert_eq!(error["field"], "Idempotency-Key", "{error}");

    // Retries racing each other (a client that gave up waiting and sent again while the
    // first was still in flight): still one order.
    let racing_key = Uuid::now_v7().to_string();
    let racing_body = order_body(99);
    let racing = futures::future::join_all(
        (0..8).map(|_| post_order(&app, &racing_body, Some(&racing_key))),
    )
    .await;
    let mut racing_ids = Vec::new();
    for response in racing {
        racing_ids.push(order_id_of(response).await.0);
    }
    racing_ids.dedup();
    assert_eq!(
        racing_ids.len(),
        1,
        "concurrent retries made one order: {racing_ids:?}"
    );

    // A later order without a key marks the end of what the retries could have published.
    let (sentinel, _) = order_id_of(post_order(&app, &order_body(7), None).await).await;
    let seen = order_placed_until(&mut placed_events, sentinel).await;
    let for_order: Vec<_> = seen
        .iter()
        .filter(|event| event.order_id == order_id)
        .collect();
    assert_eq!(
        for_order.len(),
        1,
        "exactly one OrderPlaced per order: {seen:?}"
    );
    assert_eq!(for_order[0].total_cents.get(), 8_480);
    assert_eq!(for_order[0].user_id.get(), 42);
    assert_eq!(for_order[0].items.len(), 2);
    assert_eq!(
        seen.iter()
            .filter(|event| event.order_id == racing_ids[0])
            .count(),
        1,
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3, "{seen:?}");

    let report = app
        .wait_for("the outbox to be drained", |app| async move {
            let report = app.reconcile().await;
            (report["common"]["outbox_pending"] == 0).then_some(report)
        })
        .await;
    let orders = report["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 3, "{report}");
    assert!(orders
        .iter()
        .any(|row| row["order_id"] == order_id.to_string()
            && row["status"] == "placed"
            && row["total_cents"] == 8_480));
    app.stop().await;
}

async fn unknown_orders_and_routes_are_json_errors(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let (status, body) = get_with_status(&app, &format!("/orders/{}", Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("no order")),
        "{body}"
    );

    let (status, body) = get_with_status(&app, "/orders/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "order_id", "{body}");

    let (status, body) = get_with_status(&app, "/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string(), "{body}");
    app.stop().await;
}

orderflow_kit::on_every_store!(
    a_valid_order_is_placed_once_per_idempotency_key,
    unknown_orders_and_routes_are_json_errors,
);
