//! Poison by crash: counting, across process restarts, how often a message was started
//! and never came back, so that one that kills or hangs its consumer every time ends on
//! the dead-letter queue instead of being redelivered forever.
//!
//! A handler error is counted by the attempt header of the retried copy. A crash leaves
//! no copy: the broker hands the original out again with the attempt count it was
//! published with. So the count has to live somewhere that survives the process — the
//! service's own database, table `consumer_crashes` (kit migration 0003).
//!
//! Only deliveries the backend marks as possibly handed out before
//! ([`Delivery::redelivered`]) are counted, so first deliveries — nearly all of them —
//! cost no extra statement. For a marked one, before its handler starts, one committed
//! upsert raises `starts` for (group, message id) and returns it; after the handler
//! returns (whatever it returned), the row is deleted. So `starts` is how many times the
//! message was handed out before without being settled: the recorded starts that never
//! came back (all but this one) plus the first delivery, which nothing recorded and which
//! is presumed to have crashed. At [`CrashPolicy::max_crashes`] the message is
//! dead-lettered without running its handler again.
//!
//! Counting handler starts, not deliveries, is what spares the bystanders: the other
//! messages a crashed consumer had prefetched come back marked as well, but their
//! handlers never started, so they carry no recorded start and come in at 1 (the
//! presumed first crash), far from the limit. The price of the presumption: where a
//! first delivery is marked too (Kafka marks the backlog found at an assignment), a
//! message reaches the limit one real crash early.
//!
//! [`Delivery::redelivered`]: orderflow_broker::Delivery::redelivered

use crate::db::Db;

/// When a message counts as poison by crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPolicy {
    /// Times a message may be handed out without being settled before it is
    /// dead-lettered (`ORDERFLOW_MAX_CRASHES`).
    pub max_crashes: u32,
}

/// The default of `ORDERFLOW_MAX_CRASHES`.
pub const DEFAULT_MAX_CRASHES: u32 = 3;

impl Default for CrashPolicy {
    fn default() -> Self {
        CrashPolicy {
            max_crashes: DEFAULT_MAX_CRASHES,
        }
    }
}

impl CrashPolicy {
    /// The dead-letter reason once `times` reached the limit.
    pub fn reason(&self, times: i64) -> String {
        format!(
            "crashed or hung its consumer: handed out {times} times without being settled (limit {})",
            self.max_crashes
        )
    }

    /// Whether a message handed out `times` times unsettled is poison.
    pub fn is_poison(&self, times: i64) -> bool {
        times >= i64::from(self.max_crashes)
    }
}

/// Records that `message_id`'s handler is about to start in `group` on a redelivery, and
/// returns how many times it was handed out before without being settled: the recorded
/// starts that never came back, plus the unrecorded first delivery (so `starts` after
/// this one is the answer). One statement, committed before it returns.
pub async fn record_start(db: &Db, group: &str, message_id: &str) -> anyhow::Result<i64> {
    let starts: i64 = sqlx::query_scalar(&db.sql(
        "INSERT INTO consumer_crashes (consumer_group, message_id, starts, last_started_at)
         VALUES ($1, $2, 1, $3)
         ON CONFLICT (consumer_group, message_id)
         DO UPDATE SET starts = consumer_crashes.starts + 1,
                       last_started_at = excluded.last_started_at
         RETURNING starts",
    ))
    .bind(group)
    .bind(message_id)
    .bind(chrono::Utc::now().to_rfc3339())
    .fetch_one(db.pool())
    .await?;
    Ok(starts)
}

/// The handler came back (or the message was dead-lettered): forget its starts.
pub async fn forget(db: &Db, group: &str, message_id: &str) -> anyhow::Result<()> {
    sqlx::query(
        &db.sql("DELETE FROM consumer_crashes WHERE consumer_group = $1 AND message_id = $2"),
    )
    .bind(group)
    .bind(message_id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Deletes start records last touched before `cutoff` (a time in the stored format, see
/// [`crate::outbox::prune`]), in short chunks; returns how many. A row normally goes when
/// its handler returns; one is left behind only when its message never came back after a
/// crash (settled by another consumer that kept no record, or purged from the broker),
/// and such a row would otherwise stay for ever.
pub async fn prune(db: &Db, cutoff: &str) -> anyhow::Result<u64> {
    crate::outbox::delete_in_chunks(
        db,
        "DELETE FROM consumer_crashes WHERE (consumer_group, message_id) IN (
             SELECT consumer_group, message_id FROM consumer_crashes
             WHERE last_started_at < $1
             ORDER BY consumer_group, message_id LIMIT $2)",
        cutoff,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::db::Migrations;

    /// The kit's tables only: the service's part is an empty folder.
    async fn migrated(url: &str, scratch: &std::path::Path) -> Db {
        let empty = scratch.join("no-migrations");
        std::fs::create_dir_all(&empty).unwrap();
        let db = Db::connect(url).await.unwrap();
        let none = Migrations {
            postgres: sqlx::migrate::Migrator::new(empty.as_path()).await.unwrap(),
            sqlite: sqlx::migrate::Migrator::new(empty.as_path()).await.unwrap(),
        };
        db.migrate(&none).await.unwrap();
        db
    }

    /// Starts count up per (group, message id) until forgotten; and what one counted
    /// redelivery costs (printed, not asserted: a figure for docs/events.md).
    async fn starts_count_until_forgotten(db: &Db) {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(record_start(db, "g", &id).await.unwrap(), 1);
        assert_eq!(record_start(db, "g", &id).await.unwrap(), 2);
        assert_eq!(
            record_start(db, "other", &id).await.unwrap(),
            1,
            "per group"
        );
        forget(db, "g", &id).await.unwrap();
        assert_eq!(record_start(db, "g", &id).await.unwrap(), 1);

        let ids: Vec<String> = (0..300).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let began = Instant::now();
        for id in &ids {
            record_start(db, "g", id).await.unwrap();
            forget(db, "g", id).await.unwrap();
        }
        println!(
            "{:?}: one counted redelivery (record + forget) took {:?} on average",
            db.dialect(),
            began.elapsed() / 300
        );
    }

    #[tokio::test]
    async fn starts_count_until_forgotten_on_sqlite() {
        let scratch = std::env::temp_dir().join(format!(
            "orderflow-crashes-{}",
            uuid::Uuid::now_v7().simple()
        ));
        let db = migrated(&format!("sqlite://{}/t.db", scratch.display()), &scratch).await;
        starts_count_until_forgotten(&db).await;
        db.pool().close().await;
        let _ = std::fs::remove_dir_all(scratch);
    }

    #[tokio::test]
    async fn starts_count_until_forgotten_on_postgres() {
        let Some(server) = crate::testenv::require("ORDERFLOW_DATABASE_URL", "PostgreSQL") else {
            return;
        };
        let name = format!("orderflow_kit_crashes_{}", uuid::Uuid::now_v7().simple());
        // The server's URL with this test's own database in place of its path.
        let base = server.split('?').next().unwrap_or(&server);
        let authority = base.find("://").map_or(0, |index| index + 3);
        let root = match base[authority..].find('/') {
            Some(slash) => &base[..authority + slash],
            None => base,
        };
        let scratch = std::env::temp_dir().join(&name);
        let db = migrated(&format!("{root}/{name}"), &scratch).await;
        starts_count_until_forgotten(&db).await;
        db.pool().close().await;
        let _ = std::fs::remove_dir_all(scratch);
        use sqlx::Connection;
        let mut maintenance = sqlx::postgres::PgConnection::connect(&server)
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut maintenance)
            .await
            .unwrap();
    }
}
