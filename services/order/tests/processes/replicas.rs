//! Two `order-service` replicas on one PostgreSQL database share one outbox: every row is
//! published once — never by both at the same time — every row is marked, nothing
//! deadlocks, and when one stops gracefully the other takes the relay role over.

use futures::future::join_all;
use orderflow_events::topics;

use crate::helpers::{Observed, World, PATIENCE};

const ORDERS_PER_PHASE: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_each_row_once_and_hand_over_on_a_graceful_stop() {
    let Some(world) = World::new() else {
        return;
    };
    let broker = world.broker().await;
    let mut placed_events = world.observe(&broker, topics::ORDER_PLACED).await;
    // The first replica takes the relay lease before the second starts, so that stopping
    // it below is a hand-over.
    let mut first = world.spawn("order-1", &[]);
    first.wait_ready().await;
    first.wait_for_log("took the relay lease").await;
    let second = world.spawn("order-2", &[]);
    second.wait_ready().await;

    // Phase one: orders on both replicas at once, each row committed by either.
    let placed: Vec<_> = join_all((0..ORDERS_PER_PHASE).map(|user| {
        let replica = if user % 2 == 0 { &first } else { &second };
        replica.place(user + 1)
    }))
    .await
    .into_iter()
    .map(|order| order.expect("both replicas answer POST /orders"))
    .collect();
    let phase_one = Observed::collect(&mut placed_events, &placed).await;

    // Phase two: the first replica stops gracefully while orders keep coming to the
    // second; the second must take the relay role over and publish them.
    let stopped = first.terminate().await;
    assert!(stopped.success(), "order-1 stops cleanly: {stopped:?}");
    let more: Vec<_> =
        join_all((ORDERS_PER_PHASE..2 * ORDERS_PER_PHASE).map(|user| second.place(user + 1)))
            .await
            .into_iter()
            .map(|order| order.expect("the second replica answers POST /orders"))
            .collect();
    let phase_two = Observed::collect(&mut placed_events, &more).await;

    let wait = orderflow_kit::wait::until(
        "every outbox row marked sent",
        PATIENCE,
        std::time::Duration::from_millis(100),
        || async { (second.outbox_pending().await == 0).then_some(()) },
    )
    .await;
    let logs = format!(
        "--- order-1 ---\n{}\n--- order-2 ---\n{}",
        first.logs(),
        second.logs()
    );
    wait.unwrap_or_else(|error| panic!("{error}\n{logs}"));

    for (phase, observed, orders) in [(1, &phase_one, &placed), (2, &phase_two, &more)] {
        // Counted at the observer, independently of the outbox's own bookkeeping.
        let doubled: Vec<_> = observed
            .per_id
            .iter()
            .filter(|(_, copies)| **copies != 1)
            .collect();
        assert!(
            doubled.is_empty(),
            "phase {phase}: message ids published more than once: {doubled:?}\n{logs}"
        );
        for order in orders {
            let ids = &observed.per_key[&order.to_string()];
            assert_eq!(
                ids.len(),
                1,
                "phase {phase}: one OrderPlaced for {order}: {ids:?}"
            );
        }
        assert_eq!(
            observed.per_id.len(),
            orders.len(),
            "phase {phase}: one message per order"
        );
    }
    for replica in [&first, &second] {
        let log = replica.logs();
        assert!(
            !log.contains("deadlock"),
            "a replica reported a deadlock:\n{log}"
        );
    }
    // The lease changed hands exactly as planned: taken once at start, once at hand-over.
    let takeovers = logs.matches("took the relay lease").count();
    assert_eq!(
        takeovers, 2,
        "relay lease taken at start and at the hand-over\n{logs}"
    );
    drop((first, second));
    world.tear_down().await;
}
