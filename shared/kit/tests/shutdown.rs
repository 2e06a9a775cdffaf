//! A consumer's graceful stop against real brokers: two replicas of one consumer share a
//! group, one is stopped mid-load, and the test counts, in the handler itself, how often
//! each message was handled and by whom — independently of any deduplication, which would
//! hide a double. Also: a stop whose handler hangs, and a stop while the broker is gone,
//! both return.
//!
//! Brokers come from `ORDERFLOW_AMQP_URL`, `ORDERFLOW_KAFKA_URL` and `ORDERFLOW_TANSU_BIN`
//! (`scripts/test.sh` sets them); the broker-gone case on Kafka kills a tansu of its own
//! (the contract suite's outage harness, shared with `shared/broker/tests`).

#[path = "../../broker/tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use orderflow_broker::{Broker, Envelope, Subscription};
use orderflow_events::{
    domain::{Phone, TotalCents, UserId},
    Event, OrderPlaced,
};
use orderflow_kit::{
    consumer::{self, ConsumerOptions, ConsumerStats, Handler, HandlerError, Outcome},
    wait,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long any wait of these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Which replica handled what: message id → the replicas that completed it, in order.
#[derive(Default)]
struct Ledger {
    completions: Mutex<HashMap<Uuid, Vec<&'static str>>>,
}

impl Ledger {
    fn completed_by(&self, replica: &'static str) -> Vec<Uuid> {
        let completions = self.completions.lock().unwrap();
        completions
            .iter()
            .filter(|(_, by)| by.contains(&replica))
            .map(|(id, _)| *id)
            .collect()
    }

    fn count(&self, id: &Uuid) -> usize {
        self.completions.lock().unwrap().get(id).map_or(0, Vec::len)
    }

    fn distinct(&self) -> usize {
        self.completions.lock().unwrap().len()
    }
}

/// A replica's handler: a little work, then a completion written to the ledger.
struct Recording {
    replica: &'static str,
    ledger: Arc<Ledger>,
}

#[async_trait]
impl Handler for Recording {
    async fn handle(&self, _: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.ledger
            .completions
            .lock()
            .unwrap()
            .entry(envelope.id)
            .or_default()
            .push(self.replica);
        Ok(Outcome::Done)
    }
}

fn order_on(topic: &str, order_id: Uuid) -> Envelope {
    let mut envelope = Event::OrderPlaced(OrderPlaced {
        order_id,
        user_id: UserId::parse(1).unwrap(),
        phone: Phone::parse("+8613800138000").unwrap(),
        items: Vec::new(),
        total_cents: TotalCents::parse(100).unwrap(),
        placed_at: chrono::Utc::now(),
    })
    .to_envelope();
    envelope.topic = topic.to_owned();
    envelope
}

/// One replica: its own broker connection, as a separate process would have.
struct Replica {
    broker: Arc<dyn Broker>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_replica(
    url: &str,
    subscription: &Subscription,
    name: &'static str,
    ledger: &Arc<Ledger>,
) -> Replica {
    let broker = orderflow_broker::connect(url).await.unwrap();
    let deliveries = broker.subscribe(subscription.clone()).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        deliveries,
        Arc::new(Recording {
            replica: name,
            ledger: ledger.clone(),
        }),
        ConsumerOptions::default(),
        Arc::new(ConsumerStats::default()),
        stop.clone(),
    ));
    Replica { broker, stop, task }
}

/// Two replicas, 600 messages over 8 keys, replica A stopped mid-load (a third handled, some by A):
/// every message is handled (nothing lost), and nothing A finished is handled again. Few
/// keys, so that messages wait for their key inside the loop: on Kafka, a waiting record
/// released at the stop leaves a gap below records of other keys that were finished.
async fn a_replica_stopped_mid_load_hands_over_nothing_it_finished(url: &str) {
    let run = Uuid::now_v7().simple();
    let topic = format!("test.stop-mid-load.{run}");
    let subscription = Subscription::new(format!("stop-mid-load-{run}"), [&topic]);
    let ledger = Arc::new(Ledger::default());
    let a = start_replica(url, &subscription, "a", &ledger).await;
    let b = start_replica(url, &subscription, "b", &ledger).await;

    let keys: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let sent: Vec<Envelope> = (0..75)
        .flat_map(|_| keys.iter().map(|key| order_on(&topic, *key)))
        .collect();
    let publisher = orderflow_broker::connect(url).await.unwrap();
    publisher.publish_all(sent.clone()).await.unwrap();

    wait::until(
        "a third of the messages to be handled, some by replica a",
        PATIENCE,
        Duration::from_millis(2),
        || async {
            (ledger.distinct() >= sent.len() / 3 && !ledger.completed_by("a").is_empty())
                .then_some(())
        },
    )
    .await
    .unwrap();
    a.stop.cancel();
    tokio::time::timeout(PATIENCE, a.task)
        .await
        .expect("replica a stops")
        .unwrap();
    let _ = a.broker.close().await;
    let finished_by_a = ledger.completed_by("a");

    wait::until(
        "every message to be handled",
        PATIENCE,
        Duration::from_millis(20),
        || async { (ledger.distinct() == sent.len()).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}: {} of {}", ledger.distinct(), sent.len()));
    let handled_again: Vec<&Uuid> = finished_by_a
        .iter()
        .filter(|id| ledger.count(id) > 1)
        .collect();
    let doubles_by_b = sent
        .iter()
        .filter(|envelope| ledger.count(&envelope.id) > 1)
        .count()
        - handled_again.len();
    println!(
        "replica a finished {} of {}; handled again after its stop: {}; other doubles: {doubles_by_b}",
        finished_by_a.len(),
        sent.len(),
        handled_again.len()
    );
    assert!(
        handled_again.is_empty(),
        "{} of the {} messages replica a finished were handled again after its stop",
        handled_again.len(),
        finished_by_a.len()
    );
    b.stop.cancel();
    tokio::time::timeout(PATIENCE, b.task)
        .await
        .expect("replica b stops")
        .unwrap();
    let _ = b.broker.close().await;
    let _ = publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_replica_stopped_mid_load_hands_over_nothing_it_finished() {
    let url = format!("memory://stop-mid-load-{}", Uuid::now_v7().simple());
    a_replica_stopped_mid_load_hands_over_nothing_it_finished(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_replica_stopped_mid_load_hands_over_nothing_it_finished() {
    if let Some(url) = orderflow_kit::testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") {
        a_replica_stopped_mid_load_hands_over_nothing_it_finished(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_replica_stopped_mid_load_hands_over_nothing_it_finished() {
    if let Some(url) =
        orderflow_kit::testenv::require("ORDERFLOW_KAFKA_URL", "a Kafka-protocol broker")
    {
        a_replica_stopped_mid_load_hands_over_nothing_it_finished(&url).await;
    }
}

/// Never returns from the message it is given first; handles the others.
#[derive(Default)]
struct HangsOnTheFirst {
    first: Mutex<Option<Uuid>>,
    started: tokio::sync::Notify,
}

#[async_trait]
impl Handler for HangsOnTheFirst {
    async fn handle(&self, _: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        let hang = {
            let mut first = self.first.lock().unwrap();
            first.get_or_insert(envelope.id) == &envelope.id
        };
        if hang {
            self.started.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(Outcome::Done)
    }
}

/// A stop while a handler hangs returns once the stop's bound has passed, and the hung
/// message is not lost: the group's next consumer gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_a_hanging_handler_returns_within_the_bound() {
    let url = format!("memory://stop-hang-{}", Uuid::now_v7().simple());
    let broker = orderflow_broker::connect(&url).await.unwrap();
    let topic = "test.stop-hang";
    let subscription = Subscription::new("stop-hang", [topic]);
    let deliveries = broker.subscribe(subscription.clone()).await.unwrap();
    let handler = Arc::new(HangsOnTheFirst::default());
    let stop = CancellationToken::new();
    let bound = Duration::from_secs(1);
    let task = tokio::spawn(consumer::run(
        deliveries,
        handler.clone(),
        ConsumerOptions {
            stop_timeout: bound,
            ..ConsumerOptions::default()
        },
        Arc::new(ConsumerStats::default()),
        stop.clone(),
    ));
    let hung = order_on(topic, Uuid::now_v7());
    broker.publish(hung.clone()).await.unwrap();
    tokio::time::timeout(PATIENCE, handler.started.notified())
        .await
        .expect("the handler starts");
    stop.cancel();
    // Generous against a slow machine, far below "forever".
    tokio::time::timeout(bound * 20, task)
        .await
        .expect("the stop returns although its handler hangs")
        .unwrap();
    let mut next = broker.subscribe(subscription).await.unwrap();
    let again = next
        .next_within(PATIENCE)
        .await
        .expect("the hung message is delivered again");
    assert_eq!(again.envelope().id, hung.id);
    again.ack().await.unwrap();
}

/// Holds every message until released, and says when it has started one.
struct Gated {
    started: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl Handler for Gated {
    async fn handle(&self, _: Event, _: &Envelope) -> Result<Outcome, HandlerError> {
        self.started.notify_one();
        let _permit = self.release.acquire().await.expect("never closed");
        Ok(Outcome::Done)
    }
}

/// The broker goes away (Kafka: its process killed; RabbitMQ: the connection cut) while a
/// handler runs; the stop still returns, and so does closing the broker handle.
async fn a_stop_with_the_broker_gone_returns(backend: &'static str) {
    let Some(harness) = support::Harness::connect(backend).await else {
        return;
    };
    let mut outage = harness.outage().await;
    let broker = outage.broker();
    let run = Uuid::now_v7().simple();
    let topic = format!("test.stop-gone.{run}");
    let deliveries = broker
        .subscribe(Subscription::new(format!("stop-gone-{run}"), [&topic]))
        .await
        .unwrap();
    let handler = Arc::new(Gated {
        started: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        deliveries,
        handler.clone(),
        ConsumerOptions {
            stop_timeout: Duration::from_secs(2),
            ..ConsumerOptions::default()
        },
        Arc::new(ConsumerStats::default()),
        stop.clone(),
    ));
    broker
        .publish_all((0..5).map(|_| order_on(&topic, Uuid::now_v7())).collect())
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, handler.started.notified())
        .await
        .expect("a handler starts");
    outage.begin().await;
    stop.cancel();
    handler.release.add_permits(100);
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the stop returns with the broker gone")
        .unwrap();
    tokio::time::timeout(PATIENCE, broker.close())
        .await
        .expect("closing the broker handle returns with the broker gone")
        .ok();
    outage.finish().await;
    let _ = harness.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_stop_with_the_broker_gone_returns() {
    a_stop_with_the_broker_gone_returns("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_stop_with_the_connection_cut_returns() {
    a_stop_with_the_broker_gone_returns("rabbitmq").await;
}

/// A whole service (HTTP, relay, one consumer) whose handler hangs: once stopped, it
/// returns within `ORDERFLOW_SHUTDOWN_TIMEOUT` instead of waiting for the handler forever,
/// so the process can exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_handler_hangs_stops_within_its_shutdown_timeout() {
    let run = Uuid::now_v7().simple();
    let scratch = std::env::temp_dir().join(format!("orderflow-service-stop-{run}"));
    let empty = scratch.join("no-migrations");
    std::fs::create_dir_all(&empty).unwrap();
    let broker_url = format!("memory://service-stop-{run}");
    // This test binary's only reader of these variables.
    std::env::set_var("ORDERFLOW_BROKER", &broker_url);
    std::env::set_var(
        "DATABASE_URL",
        format!("sqlite://{}/service.db", scratch.display()),
    );
    std::env::set_var("ORDERFLOW_HTTP_ADDR", "127.0.0.1:0");
    std::env::set_var("ORDERFLOW_SHUTDOWN_TIMEOUT", "1");
    let name = format!("service-stop-{run}");
    let config = orderflow_kit::config::ServiceConfig::from_env(&name, 0).unwrap();
    let migrations = orderflow_kit::db::Migrations {
        postgres: sqlx::migrate::Migrator::new(empty.as_path()).await.unwrap(),
        sqlite: sqlx::migrate::Migrator::new(empty.as_path()).await.unwrap(),
    };
    let mut service = orderflow_kit::service::Service::start(config, &migrations)
        .await
        .unwrap();
    let topic = format!("test.service-stop.{run}");
    let handler = Arc::new(HangsOnTheFirst::default());
    let options = service.consumer_options();
    service.consume(&[topic.as_str()], handler.clone(), options);
    let broker = orderflow_broker::connect(&broker_url).await.unwrap();
    broker
        .declare(&Subscription::new(name.as_str(), [&topic]))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        service
            .with_routes(axum::Router::new())
            .run_until_stopped(stop.clone()),
    );
    broker
        .publish(order_on(&topic, Uuid::now_v7()))
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, handler.started.notified())
        .await
        .expect("the handler starts");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the service stops although its handler hangs")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(scratch);
}
