//! The relay's rounds against a real database (a SQLite file; PostgreSQL too when
//! `ORDERFLOW_DATABASE_URL` is set) and the memory broker: the deadline, per-key order
//! under lost confirms, the lease, pruning.

use std::{collections::HashMap, sync::Arc, time::Duration};

use orderflow_broker::{Broker, Deliveries, Envelope, Subscription};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{lease::Lease, relay::Round, *};
use crate::{
    consumer::crashes,
    db::{Db, Migrations},
    idempotency, testenv, wait,
};

const TOPIC: &str = "relay.test";
const PATIENCE: Duration = Duration::from_secs(15);

/// A database of the test's own with the kit's tables, and how to remove it.
struct TestDb {
    db: Db,
    scratch: std::path::PathBuf,
    postgres: Option<(String, String)>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let scratch =
            std::env::temp_dir().join(format!("orderflow-outbox-{}", Uuid::now_v7().simple()));
        let db = Db::connect(&format!("sqlite://{}/t.db", scratch.display()))
            .await
            .unwrap();
        TestDb::migrated(db, scratch, None).await
    }

    async fn postgres() -> Option<TestDb> {
        let server = testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL")?;
        let name = format!("orderflow_kit_outbox_{}", Uuid::now_v7().simple());
        let (base, _) = server.rsplit_once('/').unwrap();
        let db = Db::connect(&format!("{base}/{name}")).await.unwrap();
        let scratch =
            std::env::temp_dir().join(format!("orderflow-outbox-{}", Uuid::now_v7().simple()));
        Some(TestDb::migrated(db, scratch, Some((server, name))).await)
    }

    /// The kit's migrations only: a service's set that is empty.
    async fn migrated(
        db: Db,
        scratch: std::path::PathBuf,
        postgres: Option<(String, String)>,
    ) -> TestDb {
        let empty = scratch.join("no-migrations");
        std::fs::create_dir_all(&empty).unwrap();
        let none = Migrations {
            postgres: Migrator::new(empty.as_path()).await.unwrap(),
            sqlite: Migrator::new(empty.as_path()).await.unwrap(),
        };
        db.migrate(&none).await.unwrap();
        TestDb {
            db,
            scratch,
            postgres,
        }
    }

    async fn remove(self) {
        self.db.pool().close().await;
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some((server, name)) = self.postgres {
            use sqlx::{ConnectOptions, Connection};
            let options: sqlx::postgres::PgConnectOptions = server.parse().unwrap();
            let mut connection = options.connect().await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut connection)
                .await
                .unwrap();
            let _ = connection.close().await;
        }
    }
}

/// A memory broker of the test's own (`query`: its faults and capacity) with one group,
/// `sink`, bound to [`TOPIC`], declared but not consumed yet.
async fn broker(query: &str) -> (Arc<dyn Broker>, String) {
    let url = format!("memory://outbox-{}{query}", Uuid::now_v7().simple());
    let broker = orderflow_broker::connect(&url).await.unwrap();
    broker
        .declare(&Subscription::new("sink", [TOPIC]))
        .await
        .unwrap();
    (broker, url)
}

/// The `sink` group's deliveries, through a second handle on the broker (without the
/// faults, which belong to the handle that publishes).
async fn sink(url: &str) -> Deliveries {
    let name = url.split('?').next().unwrap();
    orderflow_broker::connect(name)
        .await
        .unwrap()
        .subscribe(Subscription::new("sink", [TOPIC]))
        .await
        .unwrap()
}

/// Commits one outbox row per key in `keys`, in that order; returns their message ids.
async fn enqueue_rows(db: &Db, keys: &[&str]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for key in keys {
        let envelope = Envelope::new(TOPIC, *key, b"{}".to_vec());
        let mut transaction = db.pool().begin().await.unwrap();
        enqueue(db, &mut transaction, &envelope).await.unwrap();
        transaction.commit().await.unwrap();
        ids.push(envelope.id);
    }
    ids
}

fn settings(publish_timeout: Duration, retention: Duration) -> RelaySettings {
    RelaySettings {
        publish_timeout,
        retention,
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

/// A publish the broker cannot take in time ends at the deadline; its rows stay unsent
/// and go out in a later round once the broker takes messages again.
#[tokio::test]
async fn unconfirmed_rows_stay_unsent_past_the_deadline_and_go_out_later() {
    let test = TestDb::sqlite().await;
    // Room for one waiting message: the second publish waits for room, for good.
    let (broker, url) = broker("?capacity=1").await;
    let relay = Relay::new(
        test.db.clone(),
        broker,
        settings(Duration::from_millis(200), Duration::from_secs(3_600)),
    );
    let ids = enqueue_rows(&test.db, &["a", "b", "c"]).await;
    let mut lease = Lease::new(Duration::from_secs(10));
    let error = relay.round(&mut lease).await.unwrap_err();
    assert!(error.to_string().contains("publish deadline"), "{error:#}");
    assert_eq!(
        relay.pending().await.unwrap(),
        2,
        "one row confirmed, two waiting"
    );

    let mut sink = sink(&url).await;
    let mut received = Vec::new();
    let mut rounds = 0;
    while received.len() < ids.len() {
        rounds += 1;
        assert!(
            rounds < 50,
            "all rows published within 50 rounds: {received:?}"
        );
        // The broker takes one message at a time: each round publishes what fits.
        let _ = relay.round(&mut lease).await;
        while let Some(delivery) = sink.next_within(Duration::from_millis(50)).await {
            received.push(delivery.envelope().id);
            delivery.ack().await.unwrap();
        }
    }
    received.dedup();
    assert_eq!(received, ids, "every row once, in order");
    assert_eq!(relay.pending().await.unwrap(), 0);
    test.remove().await;
}

/// With a third of the confirms lost, a key's rows still reach the broker in the order
/// they were written: a later row is only tried once the ones before it of its key are
/// confirmed.
#[tokio::test]
async fn rows_of_one_key_reach_the_broker_in_order_when_confirms_are_lost() {
    let test = TestDb::sqlite().await;
    let (broker, url) = broker("?drop=0.3&seed=11").await;
    let mut sink = sink(&url).await;
    let relay = Relay::new(
        test.db.clone(),
        broker,
        settings(Duration::from_secs(5), Duration::from_secs(3_600)),
    );
    let keys: Vec<&str> = (0..40)
        .map(|index| ["k1", "k2", "k3", "k4"][index % 4])
        .collect();
    let ids = enqueue_rows(&test.db, &keys).await;
    let mut lease = Lease::new(Duration::from_secs(10));
    let mut rounds = 0;
    while relay.pending().await.unwrap() > 0 {
        rounds += 1;
        assert!(rounds < 200, "the outbox empties despite the lost confirms");
        let _ = relay.round(&mut lease).await;
    }
    let mut arrived: HashMap<String, Vec<Uuid>> = HashMap::new();
    while let Some(delivery) = sink.next_within(Duration::from_millis(200)).await {
        arrived
            .entry(delivery.envelope().key.clone())
            .or_default()
            .push(delivery.envelope().id);
        delivery.ack().await.unwrap();
    }
    for key in ["k1", "k2", "k3", "k4"] {
        let written: Vec<Uuid> = keys
            .iter()
            .zip(&ids)
            .filter(|(row_key, _)| **row_key == key)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            arrived[key], written,
            "key {key}: arrival order is write order"
        );
    }
    test.remove().await;
}

/// A relay that does not hold the lease publishes nothing; when the holder releases it
/// (a graceful stop) the other takes over at its next round.
#[tokio::test]
async fn only_the_lease_holder_publishes_and_a_release_hands_over() {
    let test = TestDb::sqlite().await;
    let (broker, url) = broker("").await;
    let mut sink = sink(&url).await;
    let holder = Relay::new(
        test.db.clone(),
        broker.clone(),
        settings(Duration::from_secs(5), Duration::from_secs(3_600)),
    );
    let standby = holder.clone();
    let (mut holder_lease, mut standby_lease) = (
        Lease::new(Duration::from_secs(10)),
        Lease::new(Duration::from_secs(10)),
    );
    enqueue_rows(&test.db, &["a"]).await;
    assert_eq!(
        holder.round(&mut holder_lease).await.unwrap(),
        Round::Published(1)
    );
    enqueue_rows(&test.db, &["b"]).await;
    assert_eq!(
        standby.round(&mut standby_lease).await.unwrap(),
        Round::Standby
    );
    assert_eq!(
        standby.pending().await.unwrap(),
        1,
        "the standby published nothing"
    );
    holder_lease.release(&test.db).await.unwrap();
    assert_eq!(
        standby.round(&mut standby_lease).await.unwrap(),
        Round::Published(1)
    );
    assert_eq!(
        holder.round(&mut holder_lease).await.unwrap(),
        Round::Standby
    );
    let mut received = 0;
    while let Some(delivery) = sink.next_within(Duration::from_millis(200)).await {
        received += 1;
        delivery.ack().await.unwrap();
    }
    assert_eq!(received, 2);
    test.remove().await;
}

/// `prune` deletes sent rows and processed ids older than the window, and nothing else:
/// never an unsent row, however old.
async fn prune_deletes_only_what_outlived_the_window(test: TestDb) {
    let db = &test.db;
    let ids = enqueue_rows(db, &["old-sent", "new-sent", "old-unsent"]).await;
    let long_ago = "2001-01-01T00:00:00+00:00";
    let set = |column: &'static str, value: String, id: Uuid| {
        let sql = db.sql(&format!(
            "UPDATE outbox SET {column} = $1 WHERE message_id = $2"
        ));
        async move {
            sqlx::query(&sql)
                .bind(value)
                .bind(id.to_string())
                .execute(db.pool())
                .await
                .unwrap();
        }
    };
    set("sent_at", long_ago.to_owned(), ids[0]).await;
    set("sent_at", chrono::Utc::now().to_rfc3339(), ids[1]).await;
    set("published_at", long_ago.to_owned(), ids[2]).await;
    let (old_id, new_id) = (Uuid::now_v7(), Uuid::now_v7());
    for id in [old_id, new_id] {
        let mut transaction = db.pool().begin().await.unwrap();
        assert!(idempotency::claim(db, &mut transaction, id, TOPIC)
            .await
            .unwrap());
        transaction.commit().await.unwrap();
    }
    sqlx::query(&db.sql("UPDATE processed_messages SET processed_at = $1 WHERE message_id = $2"))
        .bind(long_ago)
        .bind(old_id.to_string())
        .execute(db.pool())
        .await
        .unwrap();
    // A crash count left behind long ago, and one of a handler running now.
    for message in ["crashed-long-ago", "running-now"] {
        crashes::record_start(db, "prune-group", message)
            .await
            .unwrap();
    }
    sqlx::query(&db.sql("UPDATE consumer_crashes SET last_started_at = $1 WHERE message_id = $2"))
        .bind(long_ago)
        .bind("crashed-long-ago")
        .execute(db.pool())
        .await
        .unwrap();

    let pruned = prune(db, Duration::from_secs(3_600)).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            outbox_rows: 1,
            processed_ids: 1,
            crash_records: 1,
        }
    );
    let crash_records: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM consumer_crashes WHERE consumer_group = 'prune-group'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(crash_records, vec!["running-now".to_owned()]);
    let left: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, vec![ids[1].to_string(), ids[2].to_string()]);
    let processed: Vec<String> = sqlx::query_scalar("SELECT message_id FROM processed_messages")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(processed, vec![new_id.to_string()]);
    test.remove().await;
}

/// A running relay with a tiny retention window prunes what it sent and the processed
/// ids, by itself.
async fn a_running_relay_prunes_after_a_tiny_window(test: TestDb) {
    let (broker, url) = broker("").await;
    let mut sink = sink(&url).await;
    let relay = Relay::new(
        test.db.clone(),
        broker,
        settings(Duration::from_secs(5), Duration::from_millis(300)),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.clone().run(stop.clone()));
    let ids = enqueue_rows(&test.db, &["a", "b", "c"]).await;
    relay.wake();
    for id in &ids {
        let mut transaction = test.db.pool().begin().await.unwrap();
        idempotency::claim(&test.db, &mut transaction, *id, TOPIC)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }
    let mut received = 0;
    while received < ids.len() {
        let delivery = sink
            .next_within(PATIENCE)
            .await
            .expect("the rows are published");
        received += 1;
        delivery.ack().await.unwrap();
    }
    let db = test.db.clone();
    wait::until(
        "sent rows and processed ids pruned",
        PATIENCE,
        Duration::from_millis(50),
        || {
            let db = db.clone();
            async move {
                let rows = count(&db, "SELECT COUNT(*) FROM outbox").await;
                let processed = count(&db, "SELECT COUNT(*) FROM processed_messages").await;
                (rows == 0 && processed == 0).then_some(())
            }
        },
    )
    .await
    .unwrap();
    stop.cancel();
    running.await.unwrap();
    test.remove().await;
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn prune_deletes_only_what_outlived_the_window() {
        super::prune_deletes_only_what_outlived_the_window(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn a_running_relay_prunes_after_a_tiny_window() {
        super::a_running_relay_prunes_after_a_tiny_window(TestDb::sqlite().await).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn prune_deletes_only_what_outlived_the_window() {
        if let Some(test) = TestDb::postgres().await {
            super::prune_deletes_only_what_outlived_the_window(test).await;
        }
    }

    #[tokio::test]
    async fn a_running_relay_prunes_after_a_tiny_window() {
        if let Some(test) = TestDb::postgres().await {
            super::a_running_relay_prunes_after_a_tiny_window(test).await;
        }
    }
}
