//! Rejoining a group that handed this consumer nothing.
//!
//! A consumer restarted after a `kill -9` joins its group while the group still counts
//! the dead member: its session has not expired yet. tansu 0.6 then completes the
//! rebalance with an *empty* assignment for the new member and, when the dead member's
//! session does expire, does not start another one. The new member stays a member that
//! owns no partition, and its group receives nothing at all (seen in the chaos suite:
//! payment restarted, `partitions=[]`, 829 orders never paid). Real Kafka rebalances on
//! the expiry; this costs it nothing.
//!
//! So the poll loop watches for an assignment that is still empty a session timeout and
//! a little later, and then leaves and joins the group again: by then the dead member is
//! gone, and the fresh join gets the partitions. An empty assignment can also be honest
//! (more consumers than partitions), so a consumer rejoins at most [`MAX_REJOINS`] times
//! in a row before it accepts being idle; every non-empty assignment resets the count.

use std::time::Duration;

use tokio::{sync::watch, time::Instant};

use super::config::SESSION_TIMEOUT;

/// How long an assignment may stay empty before the consumer rejoins: past the session
/// timeout, so the dead member has been expired.
pub(super) const REJOIN_AFTER: Duration = SESSION_TIMEOUT.saturating_add(Duration::from_secs(2));

/// Rejoins in a row with nothing assigned, after which an empty assignment is believed.
pub(super) const MAX_REJOINS: u32 = 5;

/// Since when the consumer's assignment has been empty (`None`: it owns partitions, or
/// it has not been assigned yet). Written by the rebalance callback.
pub(super) type EmptySince = watch::Sender<Option<Instant>>;

/// Resolves once the assignment has been empty for [`REJOIN_AFTER`]. Cancel-safe: the poll
/// loop makes a new one for every record it waits for.
pub(super) async fn empty_for_too_long(empty_since: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let since = *empty_since.borrow_and_update();
        match since {
            None => {
                if empty_since.changed().await.is_err() {
                    // The callbacks are gone with the consumer: never resolve.
                    std::future::pending::<()>().await;
                }
            }
            Some(since) => {
                tokio::select! {
                    () = tokio::time::sleep_until(since + REJOIN_AFTER) => return,
                    changed = empty_since.changed() => if changed.is_err() {
                        std::future::pending::<()>().await;
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn resolves_only_once_the_assignment_stayed_empty_long_enough() {
        let (sender, mut receiver) = watch::channel(None);
        // Owning partitions: never.
        let waiting = tokio::time::timeout(REJOIN_AFTER * 3, empty_for_too_long(&mut receiver));
        assert!(waiting.await.is_err());
        // Empty, then assigned again before the time is up: still never.
        sender.send_replace(Some(Instant::now()));
        tokio::time::advance(REJOIN_AFTER / 2).await;
        sender.send_replace(None);
        let waiting = tokio::time::timeout(REJOIN_AFTER * 3, empty_for_too_long(&mut receiver));
        assert!(waiting.await.is_err());
        // Empty and left so: resolves after REJOIN_AFTER.
        let started = Instant::now();
        sender.send_replace(Some(started));
        empty_for_too_long(&mut receiver).await;
        assert!(started.elapsed() >= REJOIN_AFTER);
    }
}
