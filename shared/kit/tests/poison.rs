//! Poison by crash, on every backend: a message whose handler never comes back takes its
//! consumer down with it — the "process" (a broker connection and a consumer loop of its
//! own) is aborted without settling anything and a new one starts, as a restarted
//! process would. After `ORDERFLOW_MAX_CRASHES` (3) such crashes the message must be on
//! the dead-letter queue with the reason, and the message behind it (same key) handled.
//!
//! The crash count lives in the service database (a SQLite file here), because nothing
//! of the crashed process survives.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use orderflow_broker::{headers, Envelope, Subscription};
use orderflow_events::{
    domain::{Phone, TotalCents, UserId},
    Event, OrderPlaced,
};
use orderflow_kit::{
    consumer::{self, ConsumerOptions, ConsumerStats, Handler, HandlerError, Outcome},
    db::{Db, Migrations},
    retry::RetryPolicy,
    wait,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long any wait of these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);
/// The default `ORDERFLOW_MAX_CRASHES`.
const MAX_CRASHES: u32 = 3;

/// Hangs forever on the poison message (the consumer is then "killed"); handles the rest.
struct CrashesOnPoison {
    poison: Uuid,
    poison_starts: AtomicU32,
    healthy_handled: AtomicBool,
}

#[async_trait]
impl Handler for CrashesOnPoison {
    async fn handle(&self, _: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        if envelope.id == self.poison {
            self.poison_starts.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        self.healthy_handled.store(true, Ordering::SeqCst);
        Ok(Outcome::Done)
    }
}

fn order_on(topic: &str, order_id: Uuid, user: i64) -> Envelope {
    let mut envelope = Event::OrderPlaced(OrderPlaced {
        order_id,
        user_id: UserId::parse(user).unwrap(),
        phone: Phone::parse("+8613800138000").unwrap(),
        items: Vec::new(),
        total_cents: TotalCents::parse(100).unwrap(),
        placed_at: chrono::Utc::now(),
    })
    .to_envelope();
    envelope.topic = topic.to_owned();
    envelope
}

/// A SQLite database with the kit's tables only (the service part is an empty folder).
async fn kit_database() -> (Db, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("orderflow-poison-{}", Uuid::now_v7().simple()));
    let empty = dir.join("no-migrations");
    std::fs::create_dir_all(&empty).unwrap();
    let db = Db::connect(&format!("sqlite://{}/service.db", dir.display()))
        .await
        .unwrap();
    let none = Migrations {
        postgres: sqlx::migrate::Migrator::new(empty.as_path()).await.unwrap(),
        sqlite: sqlx::migrate::Migrator::new(empty.as_path()).await.unwrap(),
    };
    db.migrate(&none).await.unwrap();
    (db, dir)
}

async fn a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue(url: &str) {
    let (db, dir) = kit_database().await;
    let run = Uuid::now_v7().simple();
    let topic = format!("test.poison-crash.{run}");
    let subscription = Subscription::new(format!("poison-crash-{run}"), [&topic]);
    let key = Uuid::now_v7();
    let (poison, healthy) = (order_on(&topic, key, 13), order_on(&topic, key, 1));
    let publisher = orderflow_broker::connect(url).await.unwrap();
    publisher.declare(&subscription).await.unwrap();
    publisher
        .publish_all(vec![poison.clone(), healthy.clone()])
        .await
        .unwrap();
    let handler = Arc::new(CrashesOnPoison {
        poison: poison.id,
        poison_starts: AtomicU32::new(0),
        healthy_handled: AtomicBool::new(false),
    });

    let mut crashes = 0;
    while !handler.healthy_handled.load(Ordering::SeqCst) {
        assert!(
            crashes <= MAX_CRASHES,
            "the poison message crashed its consumer {crashes} times and is still handed out"
        );
        // Read before the loop starts: a loop quick to start the poison again would
        // otherwise be counted from after that start, and its crash never seen.
        let starts_before = handler.poison_starts.load(Ordering::SeqCst);
        // A new process: its own broker connection and consumer loop.
        let broker = orderflow_broker::connect(url).await.unwrap();
        let deliveries = broker.subscribe(subscription.clone()).await.unwrap();
        let task = tokio::spawn(consumer::run(
            deliveries,
            handler.clone(),
            ConsumerOptions {
                counters: Some(db.clone()),
                ..ConsumerOptions::default()
            },
            Arc::new(ConsumerStats::default()),
            CancellationToken::new(),
        ));
        wait::until(
            "the poison message to start again, or the healthy one to be handled",
            PATIENCE,
            Duration::from_millis(10),
            || async {
                (handler.poison_starts.load(Ordering::SeqCst) > starts_before
                    || handler.healthy_handled.load(Ordering::SeqCst))
                .then_some(())
            },
        )
        .await
        .unwrap();
        if handler.poison_starts.load(Ordering::SeqCst) > starts_before {
            // The crash: nothing is settled, the loop and the connection just go.
            crashes += 1;
            task.abort();
            let _ = task.await;
            let _ = broker.close().await;
        } else {
            task.abort();
            let _ = broker.close().await;
        }
    }
    println!("the poison message crashed its consumer {crashes} times");
    assert!(
        (MAX_CRASHES - 1..=MAX_CRASHES).contains(&crashes),
        "{crashes} crashes before the dead letter (limit {MAX_CRASHES})"
    );
    let mut dead_letters = publisher
        .subscribe_dead_letters(&subscription.group)
        .await
        .unwrap();
    let dead = dead_letters
        .next_within(PATIENCE)
        .await
        .expect("the poison message is dead-lettered");
    assert_eq!(dead.envelope().id, poison.id);
    let reason = dead
        .envelope()
        .header(headers::DEAD_LETTER_REASON)
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("crashed or hung its consumer"), "{reason}");
    dead.ack().await.unwrap();
    drop(dead_letters);
    let _ = publisher.close().await;
    db.pool().close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue() {
    let url = format!("memory://poison-crash-{}", Uuid::now_v7().simple());
    a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue() {
    if let Some(url) = orderflow_kit::testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") {
        a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue() {
    if let Some(url) =
        orderflow_kit::testenv::require("ORDERFLOW_KAFKA_URL", "a Kafka-protocol broker")
    {
        a_message_that_crashes_its_consumer_ends_on_the_dead_letter_queue(&url).await;
    }
}

/// A handler that hangs (without taking the process down) is cancelled at the handler
/// timeout; that counts as a failed attempt, so the message is retried, then
/// dead-lettered with the reason, and the message behind it on its key is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_hangs_is_timed_out_retried_then_dead_lettered() {
    let broker =
        orderflow_broker::connect(&format!("memory://poison-hang-{}", Uuid::now_v7().simple()))
            .await
            .unwrap();
    let topic = "test.poison-hang";
    let subscription = Subscription::new("poison-hang", [topic]);
    let deliveries = broker.subscribe(subscription.clone()).await.unwrap();
    let key = Uuid::now_v7();
    let (poison, healthy) = (order_on(topic, key, 13), order_on(topic, key, 1));
    let handler = Arc::new(CrashesOnPoison {
        poison: poison.id,
        poison_starts: AtomicU32::new(0),
        healthy_handled: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        deliveries,
        handler.clone(),
        ConsumerOptions {
            handler_timeout: Duration::from_millis(200),
            retry: RetryPolicy {
                max_attempts: 2,
                initial: Duration::from_millis(1),
                jitter: 0.0,
                ..RetryPolicy::default()
            },
            ..ConsumerOptions::default()
        },
        Arc::new(ConsumerStats::default()),
        stop.clone(),
    ));
    broker
        .publish_all(vec![poison.clone(), healthy])
        .await
        .unwrap();
    let mut dead_letters = broker
        .subscribe_dead_letters(&subscription.group)
        .await
        .unwrap();
    let dead = dead_letters
        .next_within(Duration::from_secs(20))
        .await
        .expect("the hanging message is dead-lettered");
    assert_eq!(dead.envelope().id, poison.id);
    let reason = dead
        .envelope()
        .header(headers::DEAD_LETTER_REASON)
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("gave up after 2 attempts") && reason.contains("did not finish within"),
        "{reason}"
    );
    dead.ack().await.unwrap();
    wait::until(
        "the message behind it to be handled",
        PATIENCE,
        Duration::from_millis(10),
        || async { handler.healthy_handled.load(Ordering::SeqCst).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(handler.poison_starts.load(Ordering::SeqCst), 2);
    stop.cancel();
    task.await.unwrap();
}
