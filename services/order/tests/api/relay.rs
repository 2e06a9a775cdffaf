//! The outbox relay as the order service runs it: a broker that stops taking messages
//! does not stop the service from taking orders, and what it could not publish goes out
//! once the broker takes messages again.

use std::time::Duration;

use orderflow_broker::Subscription;
use orderflow_events::topology;
use uuid::Uuid;

use crate::helpers::{order_body, order_id_of, post_order, spawn_app, Store, PATIENCE};

/// How long one `POST /orders` may take here: it is a few inserts, so anything near this
/// means it waited for something else (the pool's only SQLite connection).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// SQLite's pool has one connection. A memory broker whose group queues hold one message
/// and that nobody consumes blocks the second publish for good; the relay must not hold
/// that connection while it waits, or every request after it hangs.
#[tokio::test]
async fn orders_are_taken_on_sqlite_while_the_broker_blocks_publishing() {
    let app = spawn_app(Store::Sqlite, |config| {
        // The same named broker (the test's handle shares it), with room for one waiting
        // message per group: the payment group fills up at the first order.
        config.service.broker_url.push_str("?capacity=1");
    })
    .await;
    let mut placed = Vec::new();
    for user in 1..=5 {
        let response = tokio::time::timeout(
            ANSWER_WITHIN,
            post_order(&app, &order_body(user), None),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("POST /orders #{user} did not answer within {ANSWER_WITHIN:?} while the broker blocked publishing")
        });
        placed.push(order_id_of(response).await.0);
    }
    let report = tokio::time::timeout(ANSWER_WITHIN, app.reconcile())
        .await
        .expect("/internal/reconcile answers while the broker blocks publishing");
    assert!(
        report["common"]["outbox_pending"].as_i64().unwrap() > 0,
        "the broker took one message per group, so some rows wait: {report}"
    );

    // The broker takes messages again: consume the groups order.placed is routed to
    // (declared by the service at start), and every order's event arrives.
    let mut seen = std::collections::HashSet::new();
    let mut consumers = Vec::new();
    for group in topology::GROUPS.iter().filter(|group| {
        group
            .topics
            .contains(&orderflow_events::topics::ORDER_PLACED)
    }) {
        consumers.push(
            app.broker
                .subscribe(Subscription::new(group.group, group.topics.iter().copied()))
                .await
                .unwrap(),
        );
    }
    // The fan-out fills each group in turn, so every group must be consumed at once.
    let mut payment = consumers.remove(0);
    let drainers: Vec<_> = consumers
        .into_iter()
        .map(|mut other| {
            tokio::spawn(async move {
                while let Some(delivery) = other.next_within(PATIENCE).await {
                    delivery.ack().await.unwrap();
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen.len() < placed.len() {
        let delivery = payment
            .next_within(deadline - tokio::time::Instant::now())
            .await
            .unwrap_or_else(|| panic!("only {} of {} orders published", seen.len(), placed.len()));
        seen.insert(delivery.envelope().key.parse::<Uuid>().unwrap());
        delivery.ack().await.unwrap();
    }
    for order in &placed {
        assert!(seen.contains(order), "order {order} never published");
    }
    app.wait_for("every outbox row marked sent", |app| async move {
        let report = app.reconcile().await;
        (report["common"]["outbox_pending"] == 0).then_some(())
    })
    .await;
    for drainer in drainers {
        drainer.abort();
    }
    app.stop().await;
}
