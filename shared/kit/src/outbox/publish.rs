//! Publishing one claimed batch: each key's rows in order, all keys at once, until a
//! deadline.
//!
//! A row is published only once the row before it *of the same key* was confirmed, so an
//! order's events reach the broker in the order they were written even when one of them
//! has to be tried again: if a row fails or is still unconfirmed at the deadline, the
//! later rows of its key are not published this round, and the next round starts with
//! it. Rows of different keys do not wait for each other — their publishes are in flight
//! together, so the confirms of a batch cost about one round trip.

use std::collections::HashMap;

use orderflow_broker::Broker;
use tokio::time::Instant;

use super::rows::OutboxRow;

/// What became of a batch.
#[derive(Debug, Default)]
pub(super) struct BatchOutcome {
    /// The rows the broker confirmed, to be marked sent.
    pub(super) confirmed: Vec<i64>,
    /// The first failure, if any row was not confirmed (its later rows of the same key
    /// were then not tried).
    pub(super) first_failure: Option<anyhow::Error>,
}

/// Publishes `rows` (oldest first) through `broker`; whatever is not confirmed by
/// `deadline` counts as failed and stays unsent.
pub(super) async fn publish_batch(
    broker: &dyn Broker,
    rows: Vec<OutboxRow>,
    deadline: Instant,
) -> BatchOutcome {
    let chains = futures::future::join_all(
        by_key(rows)
            .into_iter()
            .map(|chain| publish_chain(broker, chain, deadline)),
    )
    .await;
    let mut outcome = BatchOutcome::default();
    for (confirmed, failure) in chains {
        outcome.confirmed.extend(confirmed);
        if let Some(failure) = failure {
            outcome.first_failure.get_or_insert(failure);
        }
    }
    outcome
}

/// One key's rows, one after the other; stops at the first that is not confirmed.
async fn publish_chain(
    broker: &dyn Broker,
    chain: Vec<OutboxRow>,
    deadline: Instant,
) -> (Vec<i64>, Option<anyhow::Error>) {
    let mut confirmed = Vec::with_capacity(chain.len());
    for row in chain {
        let topic = row.envelope.topic.clone();
        match tokio::time::timeout_at(deadline, broker.publish(row.envelope)).await {
            Ok(Ok(())) => confirmed.push(row.seq),
            Ok(Err(error)) => return (confirmed, Some(error.into())),
            Err(_elapsed) => {
                let error = anyhow::anyhow!(
                    "no confirm for a {topic} message before the publish deadline; it stays unsent"
                );
                return (confirmed, Some(error));
            }
        }
    }
    (confirmed, None)
}

/// The rows grouped by key, each group oldest first, the groups in order of their oldest
/// row.
fn by_key(rows: Vec<OutboxRow>) -> Vec<Vec<OutboxRow>> {
    let mut chains: Vec<Vec<OutboxRow>> = Vec::new();
    let mut index_of_key: HashMap<String, usize> = HashMap::new();
    for row in rows {
        match index_of_key.get(&row.envelope.key) {
            Some(&index) => chains[index].push(row),
            None => {
                index_of_key.insert(row.envelope.key.clone(), chains.len());
                chains.push(vec![row]);
            }
        }
    }
    chains
}
