//! The broker contract, one suite for every backend.
//!
//! Each case in [`cases`] is written once against `dyn Broker`; the `contract_suite!`
//! macro instantiates all of them per backend, so a run lists `memory::per_key_order…`,
//! `rabbitmq::per_key_order…` and `kafka::per_key_order…` side by side. Where a backend
//! cannot do something, the case reads its declared [`Capabilities`] and says so in the
//! output instead of being skipped silently.
//!
//! Brokers come from the environment (`ORDERFLOW_AMQP_URL`, `ORDERFLOW_KAFKA_URL`,
//! `ORDERFLOW_TANSU_BIN`), set by `scripts/test.sh`. Outside CI a missing broker skips with
//! a message; with `CI=true` it fails the test.

mod support;

use std::time::Duration;

use support::{Harness, Outage};

/// Generates one `#[tokio::test]` per contract case for a backend.
macro_rules! contract_suite {
    ($backend:ident: $($case:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(harness) = super::Harness::connect(stringify!($backend)).await {
                        super::cases::$case(harness).await;
                    }
                }
            )+
        }
    };
}

macro_rules! all_backends {
    ($($backend:ident),+) => {
        $(
            contract_suite!($backend:
                fan_out_reaches_every_group,
                competing_consumers_share_the_work_once,
                dropped_delivery_is_redelivered,
                unacked_deliveries_of_a_dropped_consumer_go_to_the_next,
                per_key_order_holds_for_three_keys,
                retry_raises_the_attempt_then_dead_letters_with_reason,
                malformed_payload_is_dead_lettered_and_the_next_is_delivered,
                backlog_rises_while_nobody_consumes_and_falls_to_zero,
                ten_thousand_messages_none_lost_none_duplicated,
                survives_the_connection_being_cut,
                a_message_no_group_is_bound_to_is_refused_or_kept,
                concurrent_publishes_each_get_their_own_answer,
            );
        )+
    };
}

all_backends!(memory, rabbitmq, kafka);

/// How long any single wait in the suite may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

mod cases {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use orderflow_broker::{headers, Broker, BrokerError, Envelope, Subscription};
    use orderflow_events::{Event, EventKind};
    use uuid::Uuid;

    use super::support::{collect_acking, numbered, unique};
    use super::*;

    pub async fn fan_out_reaches_every_group(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("fanout");
        let billing = Subscription::new(unique("billing"), [&topic]);
        let audit = Subscription::new(unique("audit"), [&topic]);
        let mut billing_deliveries = broker.subscribe(billing).await.unwrap();
        let mut audit_deliveries = broker.subscribe(audit).await.unwrap();

        let sent = numbered(&topic, &["a", "b", "c"], 20);
        broker.publish_all(sent.clone()).await.unwrap();

        let expected: HashSet<Uuid> = sent.iter().map(|envelope| envelope.id).collect();
        for deliveries in [&mut billing_deliveries, &mut audit_deliveries] {
            let got = collect_acking(deliveries, expected.len(), DEADLINE).await;
            let ids: HashSet<Uuid> = got.iter().map(|envelope| envelope.id).collect();
            assert_eq!(ids, expected, "each group gets every message");
        }
    }

    pub async fn competing_consumers_share_the_work_once(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("work");
        let subscription = Subscription::new(unique("workers"), [&topic]).with_prefetch(8);
        let first = broker.subscribe(subscription.clone()).await.unwrap();
        let second = broker.subscribe(subscription.clone()).await.unwrap();

        // Many keys, so that a partitioned backend spreads them over every partition.
        let keys: Vec<String> = (0..40).map(|key| format!("order-{key}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sent = numbered(&topic, &keys, 5);
        broker.publish_all(sent.clone()).await.unwrap();

        // Both consumers drain concurrently until the group as a whole has everything.
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Uuid)>();
        let workers: Vec<_> = [first, second]
            .into_iter()
            .enumerate()
            .map(|(worker, mut deliveries)| {
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    while let Some(delivery) = deliveries.next().await {
                        let id = delivery.envelope().id;
                        delivery.ack().await.unwrap();
                        if seen_tx.send((worker, id)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(seen_tx);

        let mut per_worker = [0usize; 2];
        let mut handled: HashMap<Uuid, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while handled.len() < sent.len() {
            let (worker, id) = tokio::time::timeout_at(deadline, seen_rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {} handled in time", handled.len(), sent.len())
                })
                .expect("workers ended early");
            per_worker[worker] += 1;
            *handled.entry(id).or_default() += 1;
        }
        // Anything still arriving now would be a second handling of a message.
        while let Ok(Some((worker, id))) =
            tokio::time::timeout(Duration::from_millis(500), seen_rx.recv()).await
        {
            per_worker[worker] += 1;
            *handled.entry(id).or_default() += 1;
        }
        for worker in workers {
            worker.abort();
        }

        let twice: Vec<_> = handled.iter().filter(|(_, count)| **count > 1).collect();
        assert!(
            twice.is_empty(),
            "messages handled more than once: {twice:?}"
        );
        assert_eq!(handled.len(), sent.len());
        assert!(
            per_worker.iter().all(|count| *count > 0),
            "both consumers share the work: {per_worker:?}"
        );
        println!(
            "{}: competing consumers handled {per_worker:?}",
            harness.name
        );
    }

    pub async fn dropped_delivery_is_redelivered(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("drop");
        let mut deliveries = broker
            .subscribe(Subscription::new(unique("droppers"), [&topic]))
            .await
            .unwrap();
        let sent = Envelope::new(&topic, "k", "payload");
        broker.publish(sent.clone()).await.unwrap();

        let first = deliveries
            .next_within(DEADLINE)
            .await
            .expect("first delivery");
        assert_eq!(first.envelope().id, sent.id);
        drop(first); // the handler "crashed": no ack

        let again = deliveries.next_within(DEADLINE).await.expect("redelivery");
        assert_eq!(again.envelope().id, sent.id, "the same message, same id");
        assert_eq!(again.envelope().payload, sent.payload);
        again.ack().await.unwrap();
    }

    pub async fn unacked_deliveries_of_a_dropped_consumer_go_to_the_next(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("crash");
        let subscription = Subscription::new(unique("crashers"), [&topic]);
        let mut doomed = broker.subscribe(subscription.clone()).await.unwrap();
        let sent = numbered(&topic, &["x"], 3);
        broker.publish_all(sent.clone()).await.unwrap();

        // Take all three, ack none, then the consumer "dies" with them in hand.
        let mut held = Vec::new();
        for _ in 0..sent.len() {
            held.push(
                doomed
                    .next_within(DEADLINE)
                    .await
                    .expect("delivery before the crash"),
            );
        }
        drop(doomed);
        drop(held);

        let mut successor = broker.subscribe(subscription).await.unwrap();
        let got = collect_acking(&mut successor, sent.len(), DEADLINE).await;
        let ids: Vec<Uuid> = got.iter().map(|envelope| envelope.id).collect();
        let expected: Vec<Uuid> = sent.iter().map(|envelope| envelope.id).collect();
        assert_eq!(ids, expected, "all unacked messages come back, in order");
    }

    pub async fn per_key_order_holds_for_three_keys(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("order");
        let mut deliveries = broker
            .subscribe(Subscription::new(unique("orderly"), [&topic]).with_prefetch(32))
            .await
            .unwrap();
        let sent = numbered(&topic, &["alpha", "beta", "gamma"], 200);
        for batch in sent.chunks(50) {
            broker.publish_all(batch.to_vec()).await.unwrap();
        }

        let got = collect_acking(&mut deliveries, sent.len(), DEADLINE).await;
        let mut last_seen: BTreeMap<String, i64> = BTreeMap::new();
        for envelope in &got {
            let sequence: i64 = std::str::from_utf8(&envelope.payload)
                .unwrap()
                .parse()
                .unwrap();
            let previous = last_seen
                .insert(envelope.key.clone(), sequence)
                .unwrap_or(-1);
            assert_eq!(sequence, previous + 1, "key {} out of order", envelope.key);
        }
        assert_eq!(
            last_seen.values().copied().collect::<Vec<_>>(),
            vec![199, 199, 199]
        );
    }

    pub async fn retry_raises_the_attempt_then_dead_letters_with_reason(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("flaky");
        let group = unique("flaky-handlers");
        let mut deliveries = broker
            .subscribe(Subscription::new(&group, [&topic]))
            .await
            .unwrap();
        let sent = Envelope::new(&topic, "k", "always fails");
        broker.publish(sent.clone()).await.unwrap();

        const MAX_ATTEMPTS: u32 = 3;
        let mut attempts_seen = Vec::new();
        loop {
            let delivery = deliveries
                .next_within(DEADLINE)
                .await
                .expect("a (re)delivery");
            assert_eq!(delivery.envelope().id, sent.id, "retries keep the id");
            attempts_seen.push(delivery.attempt());
            if delivery.attempt() < MAX_ATTEMPTS {
                delivery.retry(Duration::from_millis(20)).await.unwrap();
            } else {
                delivery
                    .dead_letter("payment gateway said no 3 times")
                    .await
                    .unwrap();
                break;
            }
        }
        assert_eq!(attempts_seen, vec![1, 2, 3]);

        let mut dead = broker.subscribe_dead_letters(&group).await.unwrap();
        let dead_letter = dead.next_within(DEADLINE).await.expect("the dead letter");
        let envelope = dead_letter.envelope().clone();
        dead_letter.ack().await.unwrap();
        assert_eq!(envelope.id, sent.id);
        assert_eq!(envelope.payload, sent.payload);
        assert_eq!(
            envelope.header(headers::DEAD_LETTER_REASON),
            Some("payment gateway said no 3 times")
        );
        assert_eq!(
            envelope.header(headers::DEAD_LETTERED_BY),
            Some(group.as_str())
        );
        assert_eq!(
            envelope.header(headers::MESSAGE_TOPIC),
            Some(topic.as_str())
        );
        assert_eq!(envelope.attempt(), MAX_ATTEMPTS);
        // Nothing else is stuck on the main queue.
        assert!(deliveries
            .next_within(Duration::from_millis(300))
            .await
            .is_none());
    }

    pub async fn malformed_payload_is_dead_lettered_and_the_next_is_delivered(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("poison");
        let group = unique("careful");
        let mut deliveries = broker
            .subscribe(Subscription::new(&group, [&topic]))
            .await
            .unwrap();

        let poison = Envelope::new(&topic, "order-1", "{not json")
            .with_header(headers::EVENT_TYPE, "OrderPlaced");
        let good_event = Event::PointsAwarded(orderflow_events::PointsAwarded {
            order_id: Uuid::now_v7(),
            user_id: orderflow_events::domain::UserId::parse(7).unwrap(),
            points: 12,
            awarded_at: chrono::Utc::now(),
        });
        let mut good = good_event.to_envelope();
        good.topic = topic.clone();
        broker
            .publish_all(vec![poison.clone(), good.clone()])
            .await
            .unwrap();

        // A consumer loop in miniature: decode, dead-letter what cannot be decoded at once
        // (retrying a poison message can never succeed), handle the rest.
        let mut handled = Vec::new();
        // The two have different keys: on Kafka they sit on different partitions, and
        // order across keys is not promised, so wait for both outcomes in either order.
        let mut dead_lettered = false;
        while handled.is_empty() || !dead_lettered {
            let delivery = deliveries.next_within(DEADLINE).await.expect("a delivery");
            match Event::decode(&delivery.envelope().payload) {
                Ok(event) => {
                    handled.push(event);
                    delivery.ack().await.unwrap();
                }
                Err(error) => {
                    delivery.dead_letter(&error.to_string()).await.unwrap();
                    dead_lettered = true;
                }
            }
        }
        assert_eq!(handled, vec![good_event]);
        assert_eq!(handled[0].kind(), EventKind::PointsAwarded);

        let mut dead = broker.subscribe_dead_letters(&group).await.unwrap();
        let dead_letter = dead
            .next_within(DEADLINE)
            .await
            .expect("the poison message on the DLQ");
        assert_eq!(dead_letter.envelope().id, poison.id);
        let reason = dead_letter
            .envelope()
            .header(headers::DEAD_LETTER_REASON)
            .unwrap()
            .to_owned();
        assert!(
            reason.contains("not a JSON object"),
            "reason says why: {reason}"
        );
        dead_letter.ack().await.unwrap();
    }

    pub async fn backlog_rises_while_nobody_consumes_and_falls_to_zero(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("peak");
        let subscription = Subscription::new(unique("slow"), [&topic]);
        broker.declare(&subscription).await.unwrap();
        assert_eq!(broker.backlog(&subscription).await.unwrap(), 0);

        let sent = numbered(&topic, &["a", "b", "c", "d"], 25);
        broker.publish_all(sent.clone()).await.unwrap();
        wait_for_backlog(broker.as_ref(), &subscription, sent.len() as u64).await;

        let mut deliveries = broker.subscribe(subscription.clone()).await.unwrap();
        collect_acking(&mut deliveries, sent.len(), DEADLINE).await;
        wait_for_backlog(broker.as_ref(), &subscription, 0).await;
    }

    async fn wait_for_backlog(broker: &dyn Broker, subscription: &Subscription, expected: u64) {
        // The last value read, shared with the check so a timeout can say where it stuck.
        let last = std::sync::Arc::new(std::sync::Mutex::new(None));
        orderflow_kit::wait::until(
            &format!("backlog of {} to be {expected}", subscription.group),
            DEADLINE,
            Duration::from_millis(100),
            || {
                let backlog = broker.backlog(subscription);
                let last = last.clone();
                async move {
                    let value = backlog.await.unwrap();
                    *last.lock().unwrap() = Some(value);
                    (value == expected).then_some(())
                }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}; last backlog read: {:?}", last.lock().unwrap()));
    }

    pub async fn ten_thousand_messages_none_lost_none_duplicated(harness: Harness) {
        let broker = &harness.broker;
        let topic = unique("bulk");
        let mut deliveries = broker
            .subscribe(Subscription::new(unique("bulk-readers"), [&topic]).with_prefetch(256))
            .await
            .unwrap();
        let keys: Vec<String> = (0..100).map(|key| format!("k{key}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sent = numbered(&topic, &keys, 100);
        assert_eq!(sent.len(), 10_000);
        for batch in sent.chunks(1_000) {
            broker.publish_all(batch.to_vec()).await.unwrap();
        }

        let got = collect_acking(&mut deliveries, sent.len(), Duration::from_secs(120)).await;
        let ids: HashSet<Uuid> = got.iter().map(|envelope| envelope.id).collect();
        assert_eq!(ids.len(), got.len(), "no message delivered twice");
        assert_eq!(
            ids,
            sent.iter()
                .map(|envelope| envelope.id)
                .collect::<HashSet<_>>(),
            "none lost"
        );
        let extra = deliveries.next_within(Duration::from_millis(500)).await;
        assert!(
            extra.is_none(),
            "a duplicate arrived after all 10,000: {extra:?}"
        );
    }

    pub async fn survives_the_connection_being_cut(harness: Harness) {
        if !harness.broker.capabilities().broker_restart {
            println!(
                "{}: declared capability broker_restart=false (the broker lives inside this \
                 process, there is no connection to cut); case not applicable",
                harness.name
            );
            return;
        }
        let mut outage: Box<dyn Outage> = harness.outage().await;
        let broker = outage.broker();
        let topic = unique("restart");
        let mut deliveries = broker
            .subscribe(Subscription::new(unique("survivors"), [&topic]))
            .await
            .unwrap();

        let before = numbered(&topic, &["a", "b"], 10);
        broker.publish_all(before.clone()).await.unwrap();
        let got_before = collect_acking(&mut deliveries, before.len(), DEADLINE).await;
        assert_eq!(got_before.len(), before.len());

        outage.begin().await;
        outage.end().await;

        // The broker may refuse publishes until the client has reconnected; publishing
        // again is safe (ids are stable), so keep trying until it is taken.
        let after = numbered(&topic, &["a", "b"], 10);
        orderflow_kit::wait::until(
            "publishing after the outage",
            DEADLINE,
            Duration::from_millis(200),
            || {
                let batch = after.clone();
                let broker = broker.clone();
                async move { broker.publish_all(batch).await.ok() }
            },
        )
        .await
        .unwrap();

        // Everything published after the outage arrives on the same Deliveries.
        let expected: HashSet<Uuid> = after.iter().map(|envelope| envelope.id).collect();
        let mut received = HashSet::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !expected.is_subset(&received) {
            let delivery = tokio::time::timeout_at(deadline, deliveries.next())
                .await
                .expect("deliveries after the outage")
                .expect("the subscription survived");
            received.insert(delivery.envelope().id);
            // An ack can fail for a delivery of the dead connection; it will be redelivered.
            let _ = delivery.ack().await;
        }
        outage.finish().await;
    }

    pub async fn a_message_no_group_is_bound_to_is_refused_or_kept(harness: Harness) {
        let broker = &harness.broker;
        let nobody = unique("nobody");
        let alone = broker
            .publish(Envelope::new(&nobody, "k", "for nobody"))
            .await;

        // A batch with one message for a bound group and one for nobody.
        let bound = unique("bound");
        let mut deliveries = broker
            .subscribe(Subscription::new(unique("listeners"), [&bound]))
            .await
            .unwrap();
        let routable = Envelope::new(&bound, "k", "for the listeners");
        let batch = broker
            .publish_all(vec![
                Envelope::new(&nobody, "k", "again for nobody"),
                routable.clone(),
            ])
            .await;

        if broker.capabilities().refuses_unroutable {
            for (what, outcome) in [("publish", alone), ("publish_all", batch)] {
                match outcome {
                    Err(BrokerError::Unroutable { topic, .. }) => {
                        assert_eq!(topic, nobody, "{what} names the topic nobody listens to")
                    }
                    other => panic!("{what} to a topic no group is bound to: {other:?}"),
                }
            }
        } else {
            alone.expect("publish to a topic without groups is kept by the topic");
            batch.expect("publish_all to a topic without groups is kept by the topic");
            println!(
                "{}: declared capability refuses_unroutable=false (the topic itself keeps a \
                 record no group reads yet); publish returned Ok",
                harness.name
            );
        }
        // Either way the batch's other message reached its group, once.
        let got = collect_acking(&mut deliveries, 1, DEADLINE).await;
        assert_eq!(got[0].id, routable.id);
        assert!(deliveries
            .next_within(Duration::from_millis(300))
            .await
            .is_none());
    }

    /// Publishes to a bound and to an unbound topic, interleaved from several tasks at
    /// once. Each publish must get the answer for its own message: on RabbitMQ the server
    /// sends `basic.return` without saying which publish it answers, and acks several
    /// messages at once, so a client that pairs returns with confirms by arrival can tell
    /// one publisher "returned" for another's message and the other "Ok".
    pub async fn concurrent_publishes_each_get_their_own_answer(harness: Harness) {
        const TASKS: usize = 8;
        const EACH: usize = 150;
        let broker = harness.broker.clone();
        let heard = unique("heard");
        let unheard = unique("unheard");
        let mut deliveries = broker
            .subscribe(Subscription::new(unique("hearers"), [&heard]).with_prefetch(512))
            .await
            .unwrap();
        let refuses = broker.capabilities().refuses_unroutable;
        let publishers: Vec<_> = (0..TASKS)
            .map(|task| {
                let (broker, heard, unheard) = (broker.clone(), heard.clone(), unheard.clone());
                tokio::spawn(async move {
                    let (mut stored, mut wrong) = (Vec::new(), Vec::new());
                    for sequence in 0..EACH {
                        // Each task alternates, shifted by one from its neighbour, so the
                        // two kinds are in flight side by side.
                        let routable = (sequence + task) % 2 == 0;
                        let topic = if routable { &heard } else { &unheard };
                        let envelope =
                            Envelope::new(topic, format!("k{task}"), sequence.to_string());
                        match (routable, broker.publish(envelope.clone()).await) {
                            (true, Ok(())) => stored.push(envelope.id),
                            (false, Err(BrokerError::Unroutable { .. })) if refuses => {}
                            (false, Ok(())) if !refuses => {}
                            (routable, outcome) => wrong
                                .push(format!("routable={routable} {}: {outcome:?}", envelope.id)),
                        }
                    }
                    (stored, wrong)
                })
            })
            .collect();
        let (mut stored, mut wrong) = (HashSet::new(), Vec::new());
        for publisher in publishers {
            let (ids, errors) = publisher.await.unwrap();
            stored.extend(ids);
            wrong.extend(errors);
        }
        assert!(
            wrong.is_empty(),
            "{} of {} publishes got another message's answer, e.g. {:?}",
            wrong.len(),
            TASKS * EACH,
            &wrong[..wrong.len().min(3)]
        );
        let got = collect_acking(&mut deliveries, stored.len(), DEADLINE).await;
        let ids: HashSet<Uuid> = got.iter().map(|envelope| envelope.id).collect();
        assert_eq!(ids, stored, "every message answered Ok arrived");
    }
}
