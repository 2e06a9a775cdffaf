//! [`Relay`]: publishes a database's outbox, round after round, while it holds the relay
//! lease (the rounds and the lease are described in the [`crate::outbox`] module doc).

use std::{sync::Arc, time::Duration};

use orderflow_broker::Broker;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{lease::Lease, publish, retention, rows};
use crate::{config, db::Db, retry::RetryPolicy};

/// Rows published per round.
const BATCH: i64 = 500;

/// How often an idle relay looks for rows, and a standby relay for a free lease.
const POLL: Duration = Duration::from_millis(500);

/// How the relay publishes and how long what it published is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// How long a round waits for the broker's confirms (`ORDERFLOW_PUBLISH_TIMEOUT`).
    /// Rows not confirmed by then stay unsent and are tried again. The relay lease lasts
    /// twice this, so it is also about how long the other replicas wait after the holder
    /// was killed.
    pub publish_timeout: Duration,
    /// How long sent rows and processed message ids are kept (`ORDERFLOW_RETENTION`).
    pub retention: Duration,
}

impl Default for RelaySettings {
    /// The same defaults a service gets when neither variable is set.
    fn default() -> Self {
        RelaySettings {
            publish_timeout: config::DEFAULT_PUBLISH_TIMEOUT,
            retention: config::DEFAULT_RETENTION,
        }
    }
}

impl RelaySettings {
    /// How long a taken or renewed lease lasts.
    fn lease_duration(&self) -> Duration {
        self.publish_timeout.saturating_mul(2)
    }
}

/// Publishes committed outbox rows.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    broker: Arc<dyn Broker>,
    wake: Arc<Notify>,
    settings: RelaySettings,
    /// The wait after a failed round; only its backoff is used, since the relay never
    /// gives up on a committed row.
    failure_backoff: RetryPolicy,
}

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Round {
    /// This relay holds the lease and published this many rows.
    Published(usize),
    /// Another replica holds the lease.
    Standby,
}

impl Relay {
    /// A relay for `db`'s outbox publishing to `broker`.
    pub fn new(db: Db, broker: Arc<dyn Broker>, settings: RelaySettings) -> Self {
        Relay {
            db,
            broker,
            wake: Arc::new(Notify::new()),
            settings,
            failure_backoff: RetryPolicy::default(),
        }
    }

    /// Call after committing outbox rows so the relay publishes them now instead of at its
    /// next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes until `shutdown`, then publishes what is left once more, gives the lease
    /// up and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut lease = Lease::new(self.settings.lease_duration());
        // Rounds that failed in a row; the backoff grows with it and a success resets it.
        let mut failures = 0u32;
        // Prune once soon after start, then every interval.
        let mut next_prune = Instant::now();
        loop {
            // Housekeeping by the lease holder only, so one replica prunes each database;
            // checked before the round so that a relay kept busy by full batches prunes too.
            if lease.held() && Instant::now() >= next_prune {
                self.prune().await;
                next_prune = Instant::now() + retention::prune_interval(self.settings.retention);
            }
            match self.round(&mut lease).await {
                // A full batch: more rows are probably waiting, so go again at once
                // instead of waiting for a wake-up.
                Ok(Round::Published(published)) if published as i64 == BATCH => continue,
                // Everything pending went out (or there was nothing), or another replica
                // publishes: wait for news.
                Ok(_) => failures = 0,
                // The broker or the database failed. Rows not confirmed are still unsent
                // (see `round`), so nothing is lost: back off, then try again.
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay: publishing failed, will retry"
                    );
                }
            }
            let pause = if failures == 0 {
                // Polling is the safety net: `wake` only reaches the relay of this
                // process, so rows committed by another replica sharing the database
                // (docker-compose --scale), or by code that forgot to call `wake`, go
                // out at the next poll at the latest. It also renews the lease, and lets
                // a standby relay see that the lease has become free.
                POLL
            } else {
                self.failure_backoff.backoff(failures)
            };
            tokio::select! {
                // A handler committed rows and called `wake`: publish them now. A
                // `notify_one` sent while no one waited is kept, so a wake-up that
                // arrives during a round is not lost; it starts the next round.
                () = self.wake.notified() => {},
                // The poll interval or the failure backoff has passed.
                () = tokio::time::sleep(pause) => {},
                // Stop waiting; the last round below still runs.
                () = shutdown.cancelled() => break,
            }
        }
        // One last round: the service stops its consumers before its relay, so this
        // publishes the events their last handlers committed.
        if let Err(error) = self.round(&mut lease).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay: rows left unpublished at shutdown; they go out at next start"
            );
        }
        if let Err(error) = lease.release(&self.db).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay: could not release the relay lease; another replica takes over when it expires"
            );
        }
    }

    /// One round: lease, claim, publish, mark (see the module doc of [`crate::outbox`]).
    pub(super) async fn round(&self, lease: &mut Lease) -> anyhow::Result<Round> {
        let Some(held_until) = lease.take_or_renew(&self.db).await? else {
            return Ok(Round::Standby);
        };
        let rows = rows::claim_unsent(&self.db, BATCH).await?;
        if rows.is_empty() {
            return Ok(Round::Published(0));
        }
        // Never publish past the lease: once it ends another relay may publish.
        let deadline = (Instant::now() + self.settings.publish_timeout).min(held_until);
        let outcome = publish::publish_batch(self.broker.as_ref(), rows, deadline).await;
        if !outcome.confirmed.is_empty() {
            after_confirm_before_mark();
        }
        rows::mark_sent(&self.db, &outcome.confirmed).await?;
        match outcome.first_failure {
            // The unconfirmed rows stay unsent; the caller backs off and tries them again.
            Some(error) => Err(error),
            None => Ok(Round::Published(outcome.confirmed.len())),
        }
    }

    /// Deletes what outlived the retention window; a failure only waits for next time.
    async fn prune(&self) {
        match retention::prune(&self.db, self.settings.retention).await {
            Ok(pruned) if pruned != retention::Pruned::default() => {
                tracing::debug!(
                    outbox_rows = pruned.outbox_rows,
                    processed_ids = pruned.processed_ids,
                    crash_records = pruned.crash_records,
                    "outbox relay: pruned what outlived the retention window"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay: pruning failed, will try again"
            ),
        }
    }

    /// Rows committed but not yet published.
    pub async fn pending(&self) -> anyhow::Result<i64> {
        rows::count_unsent(&self.db).await
    }
}

/// The failpoint `outbox-after-confirm` (feature `failpoints`, switched on by the
/// `FAILPOINTS` variable, see [`crate::failpoints`]): the broker has confirmed a batch and
/// nothing is marked yet. Its action aborts the process — no destructor runs, nothing is
/// marked, as with a `kill -9` at this instant — so the chaos suite can show that the
/// rows are published again after a restart, with the same message ids.
fn after_confirm_before_mark() {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("outbox-after-confirm", |_| {
        tracing::error!(
            "failpoint outbox-after-confirm: aborting after the confirm, before the mark"
        );
        std::process::abort()
    });
}
