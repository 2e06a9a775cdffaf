//! Every event stored once per message id; an order's journey read back in publish order.

use chrono::{Duration, Utc};
use orderflow_broker::Envelope;
use orderflow_events::{
    domain::{Cents, Phone, Quantity, Sku, TotalCents, UserId},
    headers, topics, Event, LineItem, OrderPlaced, PaymentSucceeded, PointsAwarded, SmsSent,
};
use uuid::Uuid;

use crate::helpers::{spawn_app, Store, TestApp};

/// The four events of a paid order, as envelopes published one second apart from `start`.
fn journey(order_id: Uuid) -> Vec<Envelope> {
    let now = Utc::now();
    let events = [
        Event::OrderPlaced(OrderPlaced {
            order_id,
            user_id: UserId::parse(7).unwrap(),
            phone: Phone::parse("+8613800138000").unwrap(),
            items: vec![LineItem {
                sku: Sku::parse("tea-500g").unwrap(),
                quantity: Quantity::parse(2).unwrap(),
                unit_price_cents: Cents::parse(500).unwrap(),
            }],
            total_cents: TotalCents::parse(1_000).unwrap(),
            placed_at: now,
        }),
        Event::PaymentSucceeded(PaymentSucceeded {
            order_id,
            payment_id: Uuid::now_v7(),
            user_id: UserId::parse(7).unwrap(),
            phone: Phone::parse("+8613800138000").unwrap(),
            amount_cents: TotalCents::parse(1_000).unwrap(),
            paid_at: now,
        }),
        Event::PointsAwarded(PointsAwarded {
            order_id,
            user_id: UserId::parse(7).unwrap(),
            points: 10,
            awarded_at: now,
        }),
        Event::SmsSent(SmsSent {
            order_id,
            phone: Phone::parse("+8613800138000").unwrap(),
            text: "paid".into(),
            sent_at: now,
        }),
    ];
    events
        .iter()
        .zip(0..)
        .map(|(event, second)| {
            let mut envelope = event.to_envelope();
            envelope.published_at = now + Duration::seconds(second);
            envelope
        })
        .collect()
}

/// Waits until the service stored `rows` (order, event type) pairs and ignored at least
/// `duplicates` redeliveries.
async fn stored(app: &TestApp, rows: usize, duplicates: i64) -> serde_json::Value {
    app.wait_for("the events to be stored", |app| async move {
        let report = app.reconcile().await;
        let done = report["events"].as_array().map(Vec::len) == Some(rows)
            && report["common"]["duplicates_ignored"].as_i64() >= Some(duplicates);
        done.then_some(report)
    })
    .await
}

async fn stores_each_message_once_and_reads_the_journey_in_order(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let order_id = Uuid::now_v7();
    let envelopes = journey(order_id);
    // Published newest first: the journey is ordered by when each was published, not by
    // when it arrived.
    for envelope in envelopes.iter().rev() {
        app.publish(envelope.clone()).await;
    }
    // A broker redelivery of the first event: same envelope id.
    app.publish(envelopes[0].clone()).await;
    // Another order's event must not show up in this order's journey.
    let other = journey(Uuid::now_v7()).remove(0);
    app.publish(other).await;

    let report = stored(&app, 5, 1).await;
    assert_eq!(report["common"]["duplicates_ignored"], 1, "{report}");
    let counts: Vec<_> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["order_id"] == order_id.to_string())
        .map(|row| {
            (
                row["event_type"].as_str().unwrap().to_owned(),
                row["count"].as_i64(),
            )
        })
        .collect();
    assert_eq!(counts.len(), 4, "{report}");
    assert!(
        counts.iter().all(|(_, count)| *count == Some(1)),
        "{counts:?}"
    );

    let logged = app.get_json(&format!("/events?order_id={order_id}")).await;
    let logged = logged.as_array().expect("a list");
    let types: Vec<_> = logged
        .iter()
        .map(|event| event["event_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "PaymentSucceeded",
            "PointsAwarded",
            "SmsSent"
        ]
    );
    let topics_seen: Vec<_> = logged
        .iter()
        .map(|event| event["topic"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        topics_seen,
        [
            topics::ORDER_PLACED,
            topics::PAYMENT_SUCCEEDED,
            topics::POINTS_AWARDED,
            topics::SMS_SENT
        ]
    );
    for (event, envelope) in logged.iter().zip(&envelopes) {
        assert_eq!(event["message_id"], envelope.id.to_string());
        assert_eq!(event["order_id"], order_id.to_string());
        assert_eq!(event["payload"]["data"]["order_id"], order_id.to_string());
        assert_eq!(
            event["headers"][headers::CORRELATION_ID],
            order_id.to_string()
        );
    }
    app.stop().await;
}

async fn a_second_message_about_one_event_is_counted(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    let order_id = Uuid::now_v7();
    let placed = journey(order_id).remove(0);
    app.publish(placed.clone()).await;
    app.publish(placed.clone()).await;
    // A producer that published the same event again, under a new envelope id: the log
    // keeps both, and the reconciliation shows the event as logged twice.
    let mut republished = placed.clone();
    republished.id = Uuid::now_v7();
    app.publish(republished).await;

    let report = app
        .wait_for("both messages stored", |app| async move {
            let report = app.reconcile().await;
            (report["events"][0]["count"] == 2
                && report["common"]["duplicates_ignored"].as_i64() >= Some(1))
            .then_some(report)
        })
        .await;
    assert_eq!(report["events"][0]["event_type"], "OrderPlaced");
    assert_eq!(report["common"]["duplicates_ignored"], 1, "{report}");
    assert_eq!(
        report["common"]["outbox_pending"], 0,
        "the log publishes nothing"
    );
    let logged = app.get_json(&format!("/events?order_id={order_id}")).await;
    assert_eq!(logged.as_array().map(Vec::len), Some(2));
    app.stop().await;
}

async fn bad_queries_are_named(store: Store) {
    let app = spawn_app(store, |_| {}).await;
    for path in ["/events", "/events?order_id=", "/events?order_id=42"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 422, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["field"], "order_id", "{path}");
    }
    let unknown = app
        .get_json(&format!("/events?order_id={}", Uuid::now_v7()))
        .await;
    assert_eq!(unknown, serde_json::json!([]));
    app.stop().await;
}

orderflow_kit::on_every_store!(
    stores_each_message_once_and_reads_the_journey_in_order,
    a_second_message_about_one_event_is_counted,
    bad_queries_are_named,
);
