//! The failpoint `outbox-after-confirm`: the process dies after the broker confirmed a
//! batch and before the rows are marked sent — a `kill -9` at the worst instant. After a
//! restart the same rows are published again, with the same message ids, and marked.

use std::{os::unix::process::ExitStatusExt, time::Duration};

use orderflow_events::topics;

use crate::helpers::{Observed, World, PATIENCE};

/// Short, so that the restarted process takes the dead one's lease (twice this) soon.
const PUBLISH_TIMEOUT: &str = "1s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_confirm_and_mark_republishes_the_same_messages() {
    let Some(world) = World::new() else {
        return;
    };
    let broker = world.broker().await;
    let mut placed_events = world.observe(&broker, topics::ORDER_PLACED).await;
    let mut doomed = world.spawn(
        "order-failpoint",
        &[
            ("FAILPOINTS", "outbox-after-confirm=return"),
            ("ORDERFLOW_PUBLISH_TIMEOUT", PUBLISH_TIMEOUT),
        ],
    );
    doomed.wait_ready().await;
    // The order is committed before the relay publishes it; the process may die before
    // or after its answer is sent, so the answer is not required.
    let _ = doomed.place(1).await;
    let status = doomed.exited_within(PATIENCE).await.unwrap_or_else(|| {
        panic!(
            "order-service did not die at the failpoint after its first confirmed batch; log:\n{}",
            doomed.logs()
        )
    });
    assert_eq!(
        status.signal(),
        Some(libc_sigabrt()),
        "order-service aborted (no destructor, nothing marked): {status:?}\n{}",
        doomed.logs()
    );
    assert!(doomed.logs().contains("failpoint outbox-after-confirm"));

    // What the broker confirmed before the crash: the observer has it.
    let first_copies = collect_ids(&mut placed_events).await;
    assert!(
        !first_copies.is_empty(),
        "the batch was confirmed before the crash, so it reached the observer"
    );

    // Restarted without the failpoint: the rows were never marked, so they go out again
    // (with the same message ids) and are marked this time.
    let restarted = world.spawn(
        "order-restarted",
        &[("ORDERFLOW_PUBLISH_TIMEOUT", PUBLISH_TIMEOUT)],
    );
    restarted.wait_ready().await;
    let second_copies = collect_ids(&mut placed_events).await;
    for (key, ids) in &first_copies {
        assert_eq!(
            second_copies.get(key),
            Some(ids),
            "order {key} published again after the restart with the same message id"
        );
    }
    orderflow_kit::wait::until(
        "every outbox row marked sent",
        PATIENCE,
        Duration::from_millis(100),
        || async { (restarted.outbox_pending().await == 0).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", restarted.logs()));
    // And the service goes on normally: a new order is published once.
    let next = restarted
        .place(2)
        .await
        .expect("the restarted service answers");
    let observed = Observed::collect(&mut placed_events, &[next]).await;
    assert_eq!(observed.per_key[&next.to_string()].len(), 1);
    drop((doomed, restarted));
    world.tear_down().await;
}

/// The message ids per key that arrive until the observer is quiet for a while (at
/// least one must arrive within [`PATIENCE`]).
async fn collect_ids(
    deliveries: &mut orderflow_broker::Deliveries,
) -> std::collections::BTreeMap<String, Vec<uuid::Uuid>> {
    let mut ids = std::collections::BTreeMap::<String, Vec<uuid::Uuid>>::new();
    let mut patience = PATIENCE;
    while let Some(delivery) = deliveries.next_within(patience).await {
        let envelope = delivery.envelope();
        ids.entry(envelope.key.clone())
            .or_default()
            .push(envelope.id);
        delivery.ack().await.unwrap();
        patience = Duration::from_millis(500);
    }
    ids
}

/// SIGABRT, the signal `std::process::abort` ends a process with.
fn libc_sigabrt() -> i32 {
    6
}
