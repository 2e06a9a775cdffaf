//! The publishing channel's own task: it writes every publish on the channel, in the
//! order they come, and tells each publish what became of *its* messages, matching the
//! server's confirms and returns to them.
//!
//! ## Why one task owns the channel
//!
//! A `mandatory` message that no queue takes comes back as `basic.return`, then the
//! server acks it. The return says nothing about which publish it answers (it has no
//! delivery tag), and one ack frame may confirm several messages (`multiple`). lapin
//! queues the returns it receives and hands the oldest to each confirm it resolves from
//! then on, whoever's message that confirm is for. Taken at face value, one publisher
//! hears "returned" for a message that was stored and the publisher of the returned one
//! hears `Ok`: the contract case `concurrent_publishes_each_get_their_own_answer` saw
//! both on a real RabbitMQ (8 to 16 of 1,200 publishes, eight tasks publishing at once).
//!
//! So a return is matched by what it does carry: the `message_id` property, which is the
//! envelope id. For that, one task per publishing channel
//!
//! 1. sends every message itself, so every confirm lapin could hand a return to is one
//!    it holds (a confirm awaited elsewhere, or dropped, could swallow a return of ours);
//! 2. on each wake-up takes *all* the confirms resolved by then (a "round"), and first
//!    records the returns they carry, by id;
//! 3. then decides each message: **returned** if its id came back. Otherwise its confirm
//!    counts only once it is certain that no return of it is still queued inside lapin:
//!    a return always arrives before its message's ack, and lapin's queue was empty
//!    whenever a confirm came without a return. So a message is decided when its own
//!    confirm carried none, when a confirm of a *later* round carried none, or when
//!    nothing is in flight any more (every ack has come, so every return has been handed
//!    out). Until then it waits, which costs a round at most under steady traffic.
//!
//! A publish that stops waiting (its timeout) only drops its answer; the messages stay
//! accounted for here.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use lapin::{
    message::BasicReturnMessage, options::BasicPublishOptions, types::ShortString, BasicProperties,
    Channel, Confirmation,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// What became of one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Acked and not returned: the broker has it.
    Stored,
    /// Came back as `basic.return`: no queue took it.
    Returned {
        /// AMQP reply code (312 NO_ROUTE: nothing bound to the routing key, or no such
        /// queue for a copy sent through the default exchange).
        code: u16,
        /// The server's text for it.
        text: String,
    },
    /// Nacked: the broker refused responsibility.
    Nacked,
    /// Never sent: the channel was already closed.
    NotSent(String),
    /// Sent, but the channel or connection died before the answer: it may or may not be
    /// stored.
    Unknown(String),
}

/// One message, encoded, ready for `basic.publish`.
pub(super) struct Outgoing {
    /// The envelope id, also its `message_id` property: what a return is matched by.
    pub(super) id: Uuid,
    pub(super) routing_key: ShortString,
    pub(super) properties: BasicProperties,
    pub(super) payload: Bytes,
}

/// One publish: where its messages go and where to answer.
struct Request {
    exchange: ShortString,
    options: BasicPublishOptions,
    messages: Vec<Outgoing>,
    answer: oneshot::Sender<Vec<Outcome>>,
}

/// The handle of one publishing channel's task. Dropping it lets the task finish what
/// it holds and end.
pub(super) struct ConfirmTask {
    requests: mpsc::UnboundedSender<Request>,
}

impl ConfirmTask {
    /// Starts the task that publishes on `channel` (already in confirm mode).
    pub(super) fn start(channel: Channel) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, receiver));
        ConfirmTask { requests }
    }

    /// Publishes `messages` in this order; the answer holds one [`Outcome`] per message,
    /// in the same order, once all of them are decided.
    pub(super) fn publish(
        &self,
        exchange: ShortString,
        options: BasicPublishOptions,
        messages: Vec<Outgoing>,
    ) -> oneshot::Receiver<Vec<Outcome>> {
        let (answer, answered) = oneshot::channel();
        let request = Request {
            exchange,
            options,
            messages,
            answer,
        };
        if let Err(mpsc::error::SendError(request)) = self.requests.send(request) {
            // The task only stops early when the runtime shuts down: nothing was sent.
            let not_sent = Outcome::NotSent("the publishing task has stopped".into());
            let _ = request.answer.send(vec![not_sent; request.messages.len()]);
        }
        answered
    }
}

/// A publish whose answer is not complete yet.
struct Open {
    ids: Vec<Uuid>,
    outcomes: Vec<Option<Outcome>>,
    left: usize,
    answer: oneshot::Sender<Vec<Outcome>>,
}

/// How one message's send and confirm ended, before returns are looked at.
enum Sent {
    /// The server answered: ack or nack, and the return lapin handed over with it, if
    /// any (boxed: returns are rare, and this travels with every message).
    Answered {
        acked: bool,
        carried: Option<Box<BasicReturnMessage>>,
    },
    /// `basic.publish` failed: not sent.
    Refused(String),
    /// Sent; the confirm failed.
    Lost(String),
}

/// A message in flight: which publish and which position it answers.
type InFlight = Pin<Box<dyn Future<Output = (u64, usize, Sent)> + Send>>;

/// A return the server sent: reply code and text.
type Return = (u16, String);

async fn run(channel: Channel, mut requests: mpsc::UnboundedReceiver<Request>) {
    let channel = Arc::new(channel);
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut book = Book::default();
    let mut next_publish = 0u64;
    let mut accepting = true;
    loop {
        tokio::select! {
            request = requests.recv(), if accepting => {
                let Some(request) = request else {
                    // The handle is gone (channel replaced or broker closed); what is in
                    // flight is still answered, then the task ends.
                    accepting = false;
                    continue;
                };
                let publish = next_publish;
                next_publish += 1;
                let mut ready = send(&channel, publish, request, &mut in_flight, &mut book);
                if !ready.is_empty() {
                    // Some were over at once (refused by a closed channel, or sent and
                    // answered before their first poll ended): they are a round too, with
                    // everything else resolved by now.
                    drain_resolved(&mut in_flight, &mut ready);
                    book.round(ready, in_flight.is_empty());
                }
            }
            Some(first) = in_flight.next() => {
                let mut ready = vec![first];
                drain_resolved(&mut in_flight, &mut ready);
                book.round(ready, in_flight.is_empty());
            }
            else => return,
        }
    }
}

/// What the task knows: the publishes not fully answered, the returns not matched yet
/// and the messages waiting for certainty.
#[derive(Default)]
struct Book {
    open: HashMap<u64, Open>,
    /// Returns recorded whose message is not decided yet. Nearly always empty; an id can
    /// be there twice if one envelope was published twice at once.
    returned: HashMap<Uuid, Vec<Return>>,
    /// Messages of earlier rounds whose return might still be queued in lapin.
    unsure: Vec<(u64, usize, Sent)>,
}

impl Book {
    /// One round: the confirms resolved since the last one.
    fn round(&mut self, mut ready: Vec<(u64, usize, Sent)>, nothing_in_flight: bool) {
        // Returns first, whichever confirm they rode on.
        let mut queue_was_empty = false;
        let mut carried_none = Vec::with_capacity(ready.len());
        for (_, _, sent) in &mut ready {
            let none = match sent {
                Sent::Answered { carried, .. } => match carried.take() {
                    Some(message) => {
                        record_return(&mut self.returned, *message);
                        false
                    }
                    None => true,
                },
                _ => false,
            };
            queue_was_empty |= none;
            carried_none.push(none);
        }
        // A confirm without a return in this round: whatever earlier rounds left unsure
        // has had its return handed out by now, if it had one.
        if queue_was_empty || nothing_in_flight {
            for (publish, index, sent) in std::mem::take(&mut self.unsure) {
                self.decide(publish, index, sent);
            }
        }
        for ((publish, index, sent), none) in ready.into_iter().zip(carried_none) {
            let id = self.open.get(&publish).map(|entry| entry.ids[index]);
            let returned = id.is_some_and(|id| self.returned.contains_key(&id));
            let certain = match &sent {
                // Without confirm there is no return to wait for.
                Sent::Refused(_) | Sent::Lost(_) => true,
                Sent::Answered { .. } => none || returned || nothing_in_flight,
            };
            if certain {
                self.decide(publish, index, sent);
            } else {
                self.unsure.push((publish, index, sent));
            }
        }
    }

    /// Decides one message and answers its publish once all its messages are decided.
    fn decide(&mut self, publish: u64, index: usize, sent: Sent) {
        let Some(entry) = self.open.get_mut(&publish) else {
            return;
        };
        let outcome = match take_return(&mut self.returned, entry.ids[index]) {
            Some((code, text)) => Outcome::Returned { code, text },
            None => match sent {
                Sent::Answered { acked: true, .. } => Outcome::Stored,
                Sent::Answered { acked: false, .. } => Outcome::Nacked,
                Sent::Refused(error) => Outcome::NotSent(error),
                Sent::Lost(error) => Outcome::Unknown(error),
            },
        };
        entry.outcomes[index] = Some(outcome);
        entry.left -= 1;
        if entry.left == 0 {
            let done = self.open.remove(&publish).expect("looked up above");
            let outcomes = done.outcomes.into_iter().flatten().collect();
            // The publish may have stopped waiting (its timeout): then nobody listens.
            let _ = done.answer.send(outcomes);
        }
    }
}

/// Sends one publish's messages in order and puts them in flight; returns those that
/// are over already.
fn send(
    channel: &Arc<Channel>,
    publish: u64,
    request: Request,
    in_flight: &mut FuturesUnordered<InFlight>,
    book: &mut Book,
) -> Vec<(u64, usize, Sent)> {
    let Request {
        exchange,
        options,
        messages,
        answer,
    } = request;
    let mut over = Vec::new();
    if messages.is_empty() {
        let _ = answer.send(Vec::new());
        return over;
    }
    let ids: Vec<Uuid> = messages.iter().map(|message| message.id).collect();
    book.open.insert(
        publish,
        Open {
            outcomes: vec![None; ids.len()],
            left: ids.len(),
            ids,
            answer,
        },
    );
    for (index, message) in messages.into_iter().enumerate() {
        let channel = channel.clone();
        let exchange = exchange.clone();
        let mut flight: InFlight = Box::pin(async move {
            let Outgoing {
                routing_key,
                properties,
                payload,
                ..
            } = message;
            let sent = match channel
                .basic_publish(exchange, routing_key, options, &payload, properties)
                .await
            {
                Ok(confirm) => match confirm.await {
                    Ok(Confirmation::Ack(carried)) => Sent::Answered {
                        acked: true,
                        carried: carried.map(Box::new),
                    },
                    Ok(Confirmation::Nack(carried)) => Sent::Answered {
                        acked: false,
                        carried: carried.map(Box::new),
                    },
                    // Only from a channel without confirm mode, which this one is not.
                    Ok(Confirmation::NotRequested) => {
                        Sent::Lost("the channel is not in confirm mode".into())
                    }
                    Err(error) => Sent::Lost(error.to_string()),
                },
                Err(error) => Sent::Refused(error.to_string()),
            };
            (publish, index, sent)
        });
        // Polled once right here, in order: lapin numbers the message for confirms and
        // queues its frames on this first poll, so the batch goes out in its order and
        // nothing waits for one message's write before queueing the next. The real
        // waker comes with the poll `in_flight` gives it.
        let polled = flight
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        match polled {
            Poll::Ready(resolved) => over.push(resolved),
            Poll::Pending => in_flight.push(flight),
        }
    }
    over
}

/// Moves every message already resolved into `ready`.
///
/// `FuturesUnordered` may return `Pending` before it has looked at everything that is
/// ready (it yields after polling each future once, or when a producer is halfway
/// through queueing a wake-up); it then wakes the poller. So this polls with a waker of
/// its own and goes on while that waker fires: when it stops, everything resolved by
/// then has been taken.
fn drain_resolved(in_flight: &mut FuturesUnordered<InFlight>, ready: &mut Vec<(u64, usize, Sent)>) {
    let woken = Arc::new(Flag::default());
    let waker = Waker::from(woken.clone());
    let mut context = Context::from_waker(&waker);
    loop {
        woken.0.store(false, Ordering::SeqCst);
        match in_flight.poll_next_unpin(&mut context) {
            Poll::Ready(Some(resolved)) => ready.push(resolved),
            Poll::Ready(None) => return,
            Poll::Pending if woken.0.load(Ordering::SeqCst) => continue,
            Poll::Pending => return,
        }
    }
}

/// A waker that only remembers that it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn record_return(returned: &mut HashMap<Uuid, Vec<Return>>, message: BasicReturnMessage) {
    let reason = (message.reply_code, message.reply_text.as_str().to_owned());
    match message
        .properties
        .message_id()
        .as_ref()
        .and_then(|id| Uuid::parse_str(id.as_str()).ok())
    {
        Some(id) => returned.entry(id).or_default().push(reason),
        // Every message this task sends carries its envelope id there.
        None => tracing::warn!(
            code = reason.0,
            text = %reason.1,
            "a returned message without an envelope id cannot be matched to its publish"
        ),
    }
}

fn take_return(returned: &mut HashMap<Uuid, Vec<Return>>, id: Uuid) -> Option<Return> {
    let reasons = returned.get_mut(&id)?;
    let reason = reasons.pop();
    if reasons.is_empty() {
        returned.remove(&id);
    }
    reason
}
