//! One consumer of a group: a task that takes messages from the group's queue as its
//! prefetch credit allows and hands them out as [`Delivery`]s, and the settlement of each
//! delivery — ack, retry later, dead-letter, or (dropped unsettled) back into the queue at
//! its original place.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    group::{hash_key, Group, Message},
    lock,
};
use crate::{Deliveries, Delivery, Envelope, Result, Settle};

/// Messages a consumer takes from its group under one lock (bounded by its credit).
const TAKE_AT_ONCE: usize = 64;

/// Starts consumer number `consumer` of `group`: at most `prefetch` unsettled deliveries at
/// once, stopped by dropping the returned [`Deliveries`] or by `closing`.
pub(super) fn spawn(
    group_name: String,
    group: Arc<Group>,
    dead_letters: Arc<Group>,
    consumer: u64,
    prefetch: u16,
    closing: Arc<Notify>,
) -> Deliveries {
    let prefetch = usize::from(prefetch.max(1));
    let (sender, receiver) = mpsc::channel(prefetch);
    let credit = Arc::new(Semaphore::new(prefetch));
    tokio::spawn(async move {
        let group_name: Arc<str> = group_name.into();
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        'consuming: loop {
            // Credit first: at most `prefetch` unsettled deliveries per consumer.
            let permit = tokio::select! {
                permit = credit.clone().acquire_owned() => permit.expect("never closed"),
                () = sender.closed() => break,
                () = closing.notified() => break,
            };
            credits.push(permit);
            while credits.len() < TAKE_AT_ONCE {
                match credit.clone().try_acquire_owned() {
                    Ok(permit) => credits.push(permit),
                    Err(_) => break,
                }
            }
            group.take_batch(consumer, credits.len(), &mut batch, false);
            while batch.is_empty() {
                let available = group.available.notified();
                tokio::pin!(available);
                // Registered before looking again, so a message arriving in between
                // wakes us.
                available.as_mut().enable();
                group.take_batch(consumer, credits.len(), &mut batch, true);
                if !batch.is_empty() {
                    break;
                }
                let stop = tokio::select! {
                    () = available => false,
                    () = sender.closed() => true,
                    () = closing.notified() => true,
                };
                group.woke();
                if stop {
                    break 'consuming;
                }
            }
            for message in batch.drain(..) {
                let permit = credits.pop().expect("one credit per message taken");
                let delivery = Delivery::new(
                    message.envelope.clone(),
                    &*group_name,
                    Box::new(MemorySettle {
                        group: group.clone(),
                        dead_letters: dead_letters.clone(),
                        sequence: message.sequence,
                        key_hash: message.key_hash,
                        twin: message.twin,
                        envelope: Some(message.envelope),
                        _credit: permit,
                    }),
                );
                // A closed receiver hands the delivery back; dropping it requeues it
                // (and the rest of the batch is requeued as this loop goes on).
                if let Err(refused) = sender.send(delivery).await {
                    drop(refused);
                }
            }
            if sender.is_closed() {
                break;
            }
            credits.clear();
        }
    });
    Deliveries::new(receiver, Box::new(()))
}

/// Settles one memory delivery. Holding the consumer's credit permit until then is what
/// makes the prefetch count unacked deliveries, not channel slots.
struct MemorySettle {
    group: Arc<Group>,
    dead_letters: Arc<Group>,
    sequence: u64,
    key_hash: u64,
    /// An injected duplicate, which holds no ownership of its key (see `group.rs`).
    twin: bool,
    /// Kept for putting the message back when the delivery is abandoned.
    envelope: Option<Envelope>,
    _credit: OwnedSemaphorePermit,
}

impl MemorySettle {
    /// The key this delivery's consumer holds, released when it settles.
    fn owned_key(&self) -> Option<u64> {
        (!self.twin).then_some(self.key_hash)
    }

    fn enqueue_new(group: &Group, envelope: Envelope) {
        let key_hash = hash_key(&envelope.key);
        let sequence = group.next_sequence();
        let mut state = lock(&group.state);
        group.enqueue(
            &mut state,
            Message {
                sequence,
                key_hash,
                envelope,
                twin: false,
            },
        );
        group.wake(state);
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.group.settle(self.owned_key(), None);
        Ok(())
    }

    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()> {
        let group = self.group.clone();
        self.group.settle(self.owned_key(), None);
        lock(&group.state).held += 1;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lock(&group.state).held -= 1;
            MemorySettle::enqueue_new(&group, envelope);
        });
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()> {
        MemorySettle::enqueue_new(&self.dead_letters, envelope);
        self.group.settle(self.owned_key(), None);
        Ok(())
    }

    fn abandon(mut self: Box<Self>) {
        let envelope = self.envelope.take().expect("set for every delivery");
        let message = Message {
            sequence: self.sequence,
            key_hash: self.key_hash,
            envelope,
            twin: self.twin,
        };
        self.group.settle(self.owned_key(), Some(message));
    }
}
