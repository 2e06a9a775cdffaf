//! [`Delivery`]: one message handed to a consumer, to be acked, retried or dead-lettered;
//! [`Deliveries`]: the stream of them for one consumer, and [`Intake`], the backend's end
//! of that stream.
//!
//! The header bookkeeping of retries and dead letters (attempt count, reason, who
//! dead-lettered) happens here, once; a backend only implements [`Settle`], the transport
//! part.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use futures::Stream;
use orderflow_events::{headers, Envelope};
use tokio::sync::mpsc;

use crate::Result;

/// How a backend settles one delivery. Exactly one method is called, once.
#[async_trait]
pub trait Settle: Send + Sync {
    /// The handler's effect is durable: forget the message (RabbitMQ `basic.ack`, Kafka
    /// offset commit, memory: remove from the unacked set).
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Deliver `envelope` (the same id, its attempt header already raised) to the group
    /// again after `delay`, then forget the original.
    async fn retry(self: Box<Self>, envelope: Envelope, delay: Duration) -> Result<()>;
    /// Move `envelope` (the reason headers already set) to the group's dead-letter queue,
    /// then forget the original.
    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<()>;
    /// The delivery was dropped without being settled: make sure it is delivered again
    /// (requeue now, or leave it unacked so the broker redelivers it). Must not block.
    fn abandon(self: Box<Self>);
}

/// One message delivered to one consumer of a group.
///
/// Settle it with [`ack`](Delivery::ack), [`retry`](Delivery::retry) or
/// [`dead_letter`](Delivery::dead_letter). Dropping it unsettled counts as a failure: the
/// message is delivered again.
pub struct Delivery {
    envelope: Envelope,
    group: String,
    /// The backend's word that this message may have been handed to a consumer before
    /// (see [`Delivery::redelivered`]).
    redelivered: bool,
    settle: Option<Box<dyn Settle>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Delivery")
            .field("group", &self.group)
            .field("redelivered", &self.redelivered)
            .field("envelope", &self.envelope)
            .finish()
    }
}

impl Delivery {
    /// Wraps a received envelope (backends call this).
    pub fn new(envelope: Envelope, group: impl Into<String>, settle: Box<dyn Settle>) -> Self {
        Delivery {
            envelope,
            group: group.into(),
            redelivered: false,
            settle: Some(settle),
        }
    }

    /// Marks the delivery as possibly handed out before (backends call this; see
    /// [`Delivery::redelivered`]).
    pub fn with_redelivered(mut self, redelivered: bool) -> Self {
        self.redelivered = redelivered;
        self
    }

    /// True when this message may have been handed to a consumer of the group before and
    /// not settled there — that consumer may have crashed or hung on it. RabbitMQ: the
    /// server's `redelivered` flag. Kafka: a record fetched after a partition assignment
    /// that an earlier owner may already have fetched (below the partition's end at the
    /// time), or one handed back in process. Memory: a message put back after being
    /// handed out. A copy made by [`retry`](Delivery::retry) is a new delivery, not a
    /// redelivered one: its attempt count says what it went through.
    ///
    /// False means "certainly the first time", so a consumer can keep bookkeeping about
    /// crashes (the kit's crash count) off the path of first deliveries.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The message.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The consumer group it was delivered to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// 1 on the first delivery, raised by each [`retry`](Delivery::retry).
    pub fn attempt(&self) -> u32 {
        self.envelope.attempt()
    }

    fn take_settle(&mut self) -> Box<dyn Settle> {
        self.settle
            .take()
            .expect("a delivery is settled once: ack, retry and dead_letter consume it")
    }

    /// The effect of handling this message is durable; do not deliver it again.
    pub async fn ack(mut self) -> Result<()> {
        self.take_settle().ack().await
    }

    /// Deliver this message to the group again after `delay`, with the attempt count
    /// raised by one. The envelope id stays the same.
    pub async fn retry(mut self, delay: Duration) -> Result<()> {
        let mut envelope = self.envelope.clone();
        envelope
            .headers
            .insert(headers::ATTEMPT.into(), (self.attempt() + 1).to_string());
        self.take_settle().retry(envelope, delay).await
    }

    /// Give up on this message: move it to `<group>.dlq` with `reason` in the
    /// [`headers::DEAD_LETTER_REASON`] header, and go on with the next one.
    pub async fn dead_letter(mut self, reason: &str) -> Result<()> {
        let mut envelope = self.envelope.clone();
        envelope
            .headers
            .insert(headers::DEAD_LETTER_REASON.into(), reason.to_owned());
        envelope
            .headers
            .insert(headers::DEAD_LETTERED_BY.into(), self.group.clone());
        envelope
            .headers
            .insert(headers::MESSAGE_TOPIC.into(), envelope.topic.clone());
        self.take_settle().dead_letter(envelope).await
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            settle.abandon();
        }
    }
}

/// The backend's end of a [`Deliveries`]: told when to stop taking messages from the
/// broker, and dropped (which stops the consumer) when the [`Deliveries`] is.
pub trait Intake: Send + Sync {
    /// Stop taking new messages from the broker, but keep the consumer open so that the
    /// deliveries already handed out can still be settled: RabbitMQ cancels the consumer
    /// (`basic.cancel`) and keeps its channel, Kafka stops polling and stays in the group,
    /// memory stops taking from the group queue. What the backend took before is still
    /// handed over; then the stream ends ([`Deliveries::next`] returns `None`). Called at
    /// most once; must not block.
    fn stop_intake(&self);
}

/// The deliveries of one consumer, in the order the broker handed them over.
///
/// Backends feed it through a bounded channel (its capacity is the subscription's
/// prefetch). Dropping it drops the backend's [`Intake`], which stops the consumer:
/// whatever it had not settled is delivered again to the group.
///
/// A graceful stop is two steps: [`stop_intake`](Deliveries::stop_intake), then take
/// and settle what is still handed over until `next` returns `None`, then drop it.
pub struct Deliveries {
    receiver: mpsc::Receiver<Delivery>,
    intake: Box<dyn Intake>,
    /// Set by `stop_intake`, so a second call does nothing.
    intake_stopped: bool,
}

impl Deliveries {
    /// Wraps a backend's channel; `intake` is told to stop by [`Deliveries::stop_intake`]
    /// and dropped when the consumer is dropped.
    pub fn new(receiver: mpsc::Receiver<Delivery>, intake: Box<dyn Intake>) -> Self {
        Deliveries {
            receiver,
            intake,
            intake_stopped: false,
        }
    }

    /// Stops taking new messages from the broker while keeping the consumer open for
    /// settling (see [`Intake::stop_intake`]); `next` returns what was taken already, then
    /// `None`.
    pub fn stop_intake(&mut self) {
        if !self.intake_stopped {
            self.intake_stopped = true;
            self.intake.stop_intake();
        }
    }

    /// The next delivery; `None` once the subscription has ended (broker closed).
    pub async fn next(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// The next delivery if one arrives within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Delivery> {
        tokio::time::timeout(timeout, self.receiver.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Stream for Deliveries {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.receiver.poll_recv(context)
    }
}
