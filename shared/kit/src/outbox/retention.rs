//! Keeping the outbox and the consumer's records from growing for ever: sent rows,
//! processed message ids and stale crash counts older than the retention window are
//! deleted.
//!
//! The window must outlast the longest time after which a copy of a message can still
//! arrive (see the module doc of [`crate::outbox`]): a processed id pruned too early lets
//! a very late duplicate be applied a second time. Unsent rows are never pruned, however
//! old: they are events nobody has heard of yet.

use std::time::Duration;

use crate::{consumer::crashes, db::Db, idempotency};

/// Rows deleted per statement: each `DELETE` stays short, so it never holds the database
/// (SQLite's single connection, PostgreSQL's row locks) for long.
pub(crate) const PRUNE_CHUNK: i64 = 1_000;

/// What one pruning pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Sent outbox rows.
    pub outbox_rows: u64,
    /// Processed message ids.
    pub processed_ids: u64,
    /// Crash counts of messages that never came back (`consumer/crashes.rs`).
    pub crash_records: u64,
}

/// Deletes sent outbox rows, processed message ids and crash counts older than
/// `retention`.
pub async fn prune(db: &Db, retention: Duration) -> anyhow::Result<Pruned> {
    let Some(cutoff) = cutoff(retention) else {
        // A window reaching before the epoch keeps everything.
        return Ok(Pruned::default());
    };
    Ok(Pruned {
        outbox_rows: delete_in_chunks(
            db,
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1
                 ORDER BY seq LIMIT $2)",
            &cutoff,
        )
        .await?,
        processed_ids: idempotency::prune(db, &cutoff).await?,
        crash_records: crashes::prune(db, &cutoff).await?,
    })
}

/// Runs `delete` (a `DELETE` of at most `$2` rows older than `$1`) until it deletes fewer
/// than [`PRUNE_CHUNK`] rows; returns how many it deleted in all. Every pruned table goes
/// through here, so each statement stays short.
pub(crate) async fn delete_in_chunks(db: &Db, delete: &str, cutoff: &str) -> anyhow::Result<u64> {
    let delete = db.sql(delete);
    let mut deleted = 0;
    loop {
        let chunk = sqlx::query(&delete)
            .bind(cutoff)
            .bind(PRUNE_CHUNK)
            .execute(db.pool())
            .await?
            .rows_affected();
        deleted += chunk;
        if chunk < PRUNE_CHUNK as u64 {
            return Ok(deleted);
        }
    }
}

/// How often the lease holder prunes: a quarter of the window (so nothing outlives it by
/// much), at least every hour, at most every 100 ms.
pub(super) fn prune_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(3_600))
}

/// `now − retention` in the format the stored times have (`to_rfc3339`: UTC, `+00:00`,
/// 0, 3, 6 or 9 fraction digits). Text comparison orders such times correctly, since `+`
/// sorts before `.` and every digit.
fn cutoff(retention: Duration) -> Option<String> {
    let retention = chrono::Duration::from_std(retention).ok()?;
    chrono::Utc::now()
        .checked_sub_signed(retention)
        .map(|cutoff| cutoff.to_rfc3339())
}
