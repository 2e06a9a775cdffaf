//! Durability against a real restart (issue 9, item 6): the broker process is killed with
//! SIGKILL — nothing flushed, no goodbye to the clients — and started again on the same
//! port with the same data, and what it had confirmed must all be there.
//!
//! Every case runs on a broker of its own (`support/nodes.rs`: a RabbitMQ node on other
//! ports, a tansu with SQLite storage), never on the shared ones, and the client is the
//! same `Broker` handle before and after: it must reconnect by itself. Messages are counted
//! by envelope id, here, independently of any consumer's deduplication.
//!
//! Run with `/work/tools/with-brokers.sh cargo test -p orderflow-broker --test durability`
//! (or scripts/test.sh); without `rabbitmq-server` or `ORDERFLOW_TANSU_BIN` a case skips,
//! and under `CI=true` it fails.

mod support;

use std::{collections::HashSet, sync::Arc, time::Duration};

use orderflow_broker::{Broker, Deliveries, Delivery, Envelope, Subscription};
use support::{
    nodes::{receive_all, Node},
    unique,
};
use uuid::Uuid;

/// How long the messages may take to arrive after a restart (the client's reconnect
/// backoff, RabbitMQ's queue recovery, a Kafka group rejoining).
const AFTER_RESTART: Duration = Duration::from_secs(120);

/// `count` messages on `topic` over ten keys; returns them and their ids.
fn messages(topic: &str, count: usize) -> (Vec<Envelope>, HashSet<Uuid>) {
    let envelopes: Vec<Envelope> = (0..count)
        .map(|n| Envelope::new(topic, format!("key-{}", n % 10), n.to_string()))
        .collect();
    let ids = envelopes.iter().map(|envelope| envelope.id).collect();
    (envelopes, ids)
}

/// Publishes in batches of 50; `Ok` for each means the broker confirmed every message.
async fn publish_confirmed(broker: &Arc<dyn Broker>, envelopes: &[Envelope]) {
    for batch in envelopes.chunks(50) {
        broker
            .publish_all(batch.to_vec())
            .await
            .expect("publish_all before the kill");
    }
}

/// Receives `count` deliveries and keeps them, unsettled.
async fn hold(deliveries: &mut Deliveries, count: usize) -> Vec<Delivery> {
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let delivery = deliveries
            .next_within(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("only {} of {count} deliveries arrived", held.len()));
        held.push(delivery);
    }
    held
}

/// Subscribes on a handle that lived through a restart. While its client is still
/// reconnecting, `subscribe` fails at once ("connection lost, reconnecting": the caller
/// decides whether to wait), so this waits for the reconnect by trying again.
async fn subscribe_once_reconnected(
    broker: &Arc<dyn Broker>,
    subscription: &Subscription,
) -> Deliveries {
    orderflow_kit::wait::until(
        "the client to reconnect and subscribe",
        AFTER_RESTART,
        Duration::from_millis(200),
        || async { broker.subscribe(subscription.clone()).await.ok() },
    )
    .await
    .expect("subscribing on the handle that lived through the restart")
}

fn duplicates(seen: &std::collections::HashMap<Uuid, usize>) -> usize {
    seen.values().map(|times| times - 1).sum()
}

/// (a) Confirmed, not yet consumed by a declared group, broker killed: after the restart
/// the group gets every one of them.
async fn confirmed_messages_survive_a_kill9(backend: &'static str) {
    let Some(mut node) = Node::start(backend).await else {
        return;
    };
    let broker = orderflow_broker::connect(&node.url()).await.unwrap();
    let topic = unique("durability.unconsumed");
    let subscription = Subscription::new(unique("durability-unconsumed"), [topic.as_str()]);
    broker.declare(&subscription).await.unwrap();
    let (envelopes, published) = messages(&topic, 500);
    publish_confirmed(&broker, &envelopes).await;

    node.kill9().await;
    node.restart().await;

    let mut deliveries = subscribe_once_reconnected(&broker, &subscription).await;
    let seen = receive_all(&mut deliveries, &published, AFTER_RESTART).await;
    assert!(
        seen.keys().all(|id| published.contains(id)),
        "{backend}: a message nobody published arrived"
    );
    eprintln!(
        "{backend}: {} confirmed before kill -9, all {} delivered after the restart ({} duplicates)",
        published.len(),
        seen.len(),
        duplicates(&seen)
    );
    drop(deliveries);
    let _ = broker.close().await;
}

/// (b) Delivered and unacked when the broker was killed, held by a consumer that lives
/// through the restart and then gives them up: they are delivered again, and so is
/// everything that had not been delivered yet.
async fn in_flight_deliveries_come_again_after_a_kill9(backend: &'static str) {
    let Some(mut node) = Node::start(backend).await else {
        return;
    };
    let broker = orderflow_broker::connect(&node.url()).await.unwrap();
    let topic = unique("durability.in-flight");
    let subscription =
        Subscription::new(unique("durability-in-flight"), [topic.as_str()]).with_prefetch(100);
    let mut deliveries = broker.subscribe(subscription).await.unwrap();
    let (envelopes, published) = messages(&topic, 100);
    publish_confirmed(&broker, &envelopes).await;
    let held = hold(&mut deliveries, 30).await;
    let held_ids: HashSet<Uuid> = held.iter().map(|delivery| delivery.envelope().id).collect();

    node.kill9().await;
    node.restart().await;
    // The handler fails them: never acked.
    drop(held);

    let seen = receive_all(&mut deliveries, &published, AFTER_RESTART).await;
    assert!(held_ids.iter().all(|id| seen.contains_key(id)));
    eprintln!(
        "{backend}: {} in flight at kill -9 delivered again, {} delivered in all ({} duplicates)",
        held_ids.len(),
        seen.len(),
        duplicates(&seen)
    );
    drop(deliveries);
    let _ = broker.close().await;
}

/// (b, the crash of both) Delivered and unacked when the broker was killed, and the
/// consumer gone with it: after the restart, the group's next consumer gets them.
async fn in_flight_deliveries_of_a_vanished_consumer_reach_the_next_one(backend: &'static str) {
    let Some(mut node) = Node::start(backend).await else {
        return;
    };
    let broker = orderflow_broker::connect(&node.url()).await.unwrap();
    let topic = unique("durability.vanished");
    let subscription =
        Subscription::new(unique("durability-vanished"), [topic.as_str()]).with_prefetch(100);
    let mut deliveries = broker.subscribe(subscription.clone()).await.unwrap();
    let (envelopes, published) = messages(&topic, 100);
    publish_confirmed(&broker, &envelopes).await;
    let held = hold(&mut deliveries, 30).await;

    node.kill9().await;
    drop(held);
    drop(deliveries);
    node.restart().await;

    let mut next = subscribe_once_reconnected(&broker, &subscription).await;
    let seen = receive_all(&mut next, &published, AFTER_RESTART).await;
    eprintln!(
        "{backend}: all {} delivered to the next consumer ({} duplicates)",
        seen.len(),
        duplicates(&seen)
    );
    drop(next);
    let _ = broker.close().await;
}

/// (d) What the broker holds on a consumer's behalf after a retry or a dead letter — the
/// retried copy (RabbitMQ: republished to the group queue; Kafka: the record, its offset
/// not committed) and the dead-lettered copy on `<group>.dlq` — survives a kill -9 of the
/// broker that takes the consumer with it.
async fn retried_and_dead_lettered_messages_survive_a_kill9(backend: &'static str) {
    let Some(mut node) = Node::start(backend).await else {
        return;
    };
    let broker = orderflow_broker::connect(&node.url()).await.unwrap();
    let topic = unique("durability.settled");
    let subscription =
        Subscription::new(unique("durability-settled"), [topic.as_str()]).with_prefetch(100);
    let mut deliveries = broker.subscribe(subscription.clone()).await.unwrap();
    let (envelopes, _) = messages(&topic, 30);
    publish_confirmed(&broker, &envelopes).await;
    let mut retried = HashSet::new();
    let mut dead_lettered = HashSet::new();
    for (n, delivery) in hold(&mut deliveries, 30).await.into_iter().enumerate() {
        let id = delivery.envelope().id;
        match n % 3 {
            0 => delivery.ack().await.expect("ack"),
            1 => {
                delivery
                    .retry(Duration::from_millis(10))
                    .await
                    .expect("retry");
                retried.insert(id);
            }
            _ => {
                delivery
                    .dead_letter("durability test")
                    .await
                    .expect("dead letter");
                dead_lettered.insert(id);
            }
        }
    }

    node.kill9().await;
    drop(deliveries);
    node.restart().await;

    let mut next = subscribe_once_reconnected(&broker, &subscription).await;
    receive_all(&mut next, &retried, AFTER_RESTART).await;
    drop(next);
    let mut dead_letters = broker
        .subscribe_dead_letters(&subscription.group)
        .await
        .expect("subscribing to the dead letters after the restart");
    receive_all(&mut dead_letters, &dead_lettered, AFTER_RESTART).await;
    eprintln!(
        "{backend}: {} retried and {} dead-lettered before kill -9, all there after the restart",
        retried.len(),
        dead_lettered.len()
    );
    drop(dead_letters);
    let _ = broker.close().await;
}

/// (e) A kill -9 in the middle of a stream of publishes: every publish that returned Ok,
/// up to the kill and while the broker came back, is delivered after the restart. This is
/// where a confirm sent before the message is on disk would show.
async fn every_publish_confirmed_around_a_kill9_is_delivered(backend: &'static str) {
    let Some(mut node) = Node::start(backend).await else {
        return;
    };
    let broker = orderflow_broker::connect(&node.url()).await.unwrap();
    let topic = unique("durability.mid-stream");
    let subscription = Subscription::new(unique("durability-mid-stream"), [topic.as_str()]);
    broker.declare(&subscription).await.unwrap();
    let confirmed = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (broker, confirmed, stop, topic) = (
            broker.clone(),
            confirmed.clone(),
            stop.clone(),
            topic.clone(),
        );
        async move {
            let mut failed = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (batch, ids) = messages(&topic, 10);
                match broker.publish_all(batch).await {
                    Ok(()) => confirmed.lock().unwrap().extend(ids),
                    // Down or reconnecting: try again, the way the outbox relay does.
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            failed
        }
    });
    let count = || confirmed.lock().unwrap().len();
    orderflow_kit::wait::until(
        "200 confirmed publishes before the kill",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let enough = count() >= 200;
            async move { enough.then_some(()) }
        },
    )
    .await
    .unwrap();

    node.kill9().await;
    let at_kill = count();
    node.restart().await;
    // Publishing goes on until some publishes after the restart are confirmed too.
    orderflow_kit::wait::until(
        "publishes confirmed after the restart",
        AFTER_RESTART,
        Duration::from_millis(50),
        || {
            let more = count() >= at_kill + 100;
            async move { more.then_some(()) }
        },
    )
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failed_batches = tokio::time::timeout(AFTER_RESTART, publisher)
        .await
        .expect("the publisher to stop")
        .unwrap();

    let confirmed = confirmed.lock().unwrap().clone();
    let mut deliveries = subscribe_once_reconnected(&broker, &subscription).await;
    let seen = receive_all(&mut deliveries, &confirmed, AFTER_RESTART).await;
    eprintln!(
        "{backend}: {} confirmed around a kill -9 ({at_kill} by the kill, {failed_batches} failed batches), all delivered; {} arrived in all ({} duplicates)",
        confirmed.len(),
        seen.len(),
        duplicates(&seen)
    );
    drop(deliveries);
    let _ = broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_confirmed_messages_survive_a_kill9() {
    confirmed_messages_survive_a_kill9("rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_confirmed_messages_survive_a_kill9() {
    confirmed_messages_survive_a_kill9("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_in_flight_deliveries_come_again_after_a_kill9() {
    in_flight_deliveries_come_again_after_a_kill9("rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_in_flight_deliveries_come_again_after_a_kill9() {
    in_flight_deliveries_come_again_after_a_kill9("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_in_flight_deliveries_of_a_vanished_consumer_reach_the_next_one() {
    in_flight_deliveries_of_a_vanished_consumer_reach_the_next_one("rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_in_flight_deliveries_of_a_vanished_consumer_reach_the_next_one() {
    in_flight_deliveries_of_a_vanished_consumer_reach_the_next_one("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_retried_and_dead_lettered_messages_survive_a_kill9() {
    retried_and_dead_lettered_messages_survive_a_kill9("rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_retried_and_dead_lettered_messages_survive_a_kill9() {
    retried_and_dead_lettered_messages_survive_a_kill9("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_every_publish_confirmed_around_a_kill9_is_delivered() {
    every_publish_confirmed_around_a_kill9_is_delivered("rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_every_publish_confirmed_around_a_kill9_is_delivered() {
    every_publish_confirmed_around_a_kill9_is_delivered("kafka").await;
}

/// The state RabbitMQ shows for the connection whose client-provided name is `name`
/// (`running`, `blocking`, `blocked`, …), if it has one.
async fn connection_state(node: &orderflow_nodes::RabbitNode, name: &str) -> Option<String> {
    let listing = node
        .ctl(&[
            "list_connections",
            "--no-table-headers",
            "state",
            "client_properties",
        ])
        .await
        .ok()?;
    let quoted = format!("\"{name}\"");
    listing
        .lines()
        .find(|line| line.contains(&quoted))
        .and_then(|line| line.split_whitespace().next())
        .map(str::to_owned)
}

/// How many messages (ready and unacked) the queue `queue` holds, as the server counts.
async fn queue_messages(node: &orderflow_nodes::RabbitNode, queue: &str) -> u64 {
    let listing = node
        .ctl(&["list_queues", "--no-table-headers", "name", "messages"])
        .await
        .expect("rabbitmqctl list_queues");
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(name, _)| name.trim() == queue)
        .map(|(_, count)| count.trim().parse().expect("a message count"))
        .unwrap_or_else(|| panic!("no queue {queue} in {listing}"))
}

/// (c) While a memory alarm blocks publishing on the node, `publish` does not return Ok
/// (it waits, or fails once its timeout passes); the message is not in the queue. Once
/// the alarm is cleared, publishing works again, and every message confirmed before,
/// during (if the blocked publish was confirmed after all) and after is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_publish_is_not_ok_while_a_memory_alarm_blocks_publishing() {
    let Some(node) = Node::start("rabbitmq").await else {
        return;
    };
    let node = node.rabbit();
    // The timeout is the publish's own bound where the backend supports it; without it,
    // the blocked publish simply stays pending, which this case accepts too.
    let url = format!("{}?publish_timeout_ms=3000", node.amqp_url());
    let rabbit = orderflow_broker::rabbitmq::RabbitBroker::connect(&url)
        .await
        .unwrap();
    let connection_name = rabbit.connection_name().to_owned();
    let broker: Arc<dyn Broker> = Arc::new(rabbit);
    let topic = unique("durability.alarm");
    let subscription = Subscription::new(unique("durability-alarm"), [topic.as_str()]);
    broker.declare(&subscription).await.unwrap();
    let (before, mut confirmed) = messages(&topic, 20);
    publish_confirmed(&broker, &before).await;

    node.set_memory_alarm(true).await.unwrap();
    let blocked = Envelope::new(topic.as_str(), "key-blocked", "sent during the alarm");
    let blocked_id = blocked.id;
    let publishing = tokio::spawn({
        let broker = broker.clone();
        async move { broker.publish(blocked).await }
    });
    // The server marks the connection `blocked` once it has stopped reading from it
    // because of the publish; or the publish gave up first.
    orderflow_kit::wait::until(
        "the publish to give up or its connection to be blocked",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            if publishing.is_finished() {
                return Some(());
            }
            (connection_state(node, &connection_name).await.as_deref() == Some("blocked"))
                .then_some(())
        },
    )
    .await
    .unwrap();
    let still_pending = !publishing.is_finished();
    assert_eq!(
        queue_messages(node, &subscription.group).await,
        before.len() as u64,
        "the message published during the alarm must not be in the queue"
    );
    // Settled now if it gave up, or later, once the alarm is cleared.
    let mut pending = Some(publishing);
    if !still_pending {
        let outcome = pending.take().unwrap().await.unwrap();
        assert!(
            outcome.is_err(),
            "publish returned Ok while a memory alarm blocked publishing"
        );
        eprintln!("rabbitmq: the publish during the alarm failed: {outcome:?}");
    }

    node.set_memory_alarm(false).await.unwrap();
    if let Some(publishing) = pending {
        // Nothing decides its fate but the server now: confirmed once unblocked, or
        // failed by the publish timeout. Either is honest; only a confirmed one counts.
        let outcome = tokio::time::timeout(AFTER_RESTART, publishing)
            .await
            .expect("the blocked publish to end once the alarm is cleared")
            .unwrap();
        eprintln!("rabbitmq: the publish blocked by the alarm ended with {outcome:?}");
        if outcome.is_ok() {
            confirmed.insert(blocked_id);
        }
    }
    let (after, after_ids) = messages(&topic, 20);
    publish_confirmed(&broker, &after).await;
    confirmed.extend(after_ids);

    let mut deliveries = broker.subscribe(subscription).await.unwrap();
    let seen = receive_all(&mut deliveries, &confirmed, AFTER_RESTART).await;
    eprintln!(
        "rabbitmq: {} confirmed around a memory alarm, all delivered ({} duplicates)",
        confirmed.len(),
        duplicates(&seen)
    );
    drop(deliveries);
    let _ = broker.close().await;
}
