//! The connection: [`RabbitBroker::connect`], the state every part shares ([`Shared`],
//! [`Live`]), and the supervisor task that notices a lost connection and reconnects with
//! backoff.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use async_trait::async_trait;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::{publish::PublishChannel, BACKEND, REPLY_SUCCESS};
use crate::{Backend, Broker, BrokerError, Capabilities, Result};

/// How often the supervisor looks at the connection's state when nobody nudges it.
pub(super) const SUPERVISOR_TICK: Duration = Duration::from_millis(200);
/// How long one attempt to connect (TCP, AMQP handshake, channel, declarations) may take:
/// a peer that accepts nothing must not stall the reconnect loop forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The RabbitMQ backend: one connection (re-established after failures), one publishing
/// channel in confirm mode, one channel per consumer.
pub struct RabbitBroker {
    /// Everything the broker's tasks need as well; the handle only adds the trait impls.
    pub(super) shared: Arc<Shared>,
}

/// State shared by the broker handle, the supervisor, the consumer tasks and the settle
/// handles of deliveries in flight.
pub(super) struct Shared {
    /// Kept (credentials included) because every reconnect dials it again.
    url: String,
    /// The URL without credentials, for error messages.
    address: String,
    /// `orderflow-<uuid>`, sent with every connection this handle opens, so the server
    /// (management UI, `rabbitmqctl`, [`close_connections_for_test`]) shows one name for
    /// this client across reconnects, and no other client has it.
    ///
    /// [`close_connections_for_test`]: super::close_connections_for_test
    connection_name: String,
    /// The current connection; `None` while reconnecting or after `close`. A `watch`
    /// rather than a lock: readers take a cheap `Arc` clone, and a consumer task that
    /// lost its channel can await the *next* connection (`changed()`) instead of polling.
    pub(super) live: watch::Sender<Option<Arc<Live>>>,
    /// Set once by `close`. A `watch` too, so that it can be read in passing
    /// ([`Shared::is_shut_down`]) and awaited as one arm of a `select!`.
    pub(super) shutdown: watch::Sender<bool>,
    /// Wakes the supervisor early when someone saw the connection fail. `notify_one`
    /// keeps a permit when the supervisor is not waiting (it may be busy reconnecting),
    /// so a nudge is never lost; at worst the supervisor looks once more than needed.
    pub(super) nudge: Arc<Notify>,
    /// How many connections this handle has established; each [`Live`] takes the next
    /// number as its [`Live::generation`].
    generation: AtomicU64,
}

/// One established connection and its publishing channel. Replaced as a whole on
/// reconnect: channels die with their connection, so nothing of an old `Live` is reused.
pub(super) struct Live {
    /// 1 for the first connection, 2 after the first reconnect, and so on: tells the
    /// connections of one handle apart in the logs ("re-established", "consumer resumed"),
    /// where the connection name stays the same. Nothing else reads it.
    pub(super) generation: u64,
    /// Opens the consumer and declaration channels; its status says whether this `Live`
    /// is still the one to use.
    pub(super) connection: Connection,
    /// The one channel in confirm mode that every publish goes through (events, retry
    /// copies, dead letters), with its confirm task.
    pub(super) publishing: PublishChannel,
}

impl RabbitBroker {
    /// Connects to `url` (`amqp://user:pass@host:5672/%2f`), opens the publishing channel
    /// in confirm mode, declares the two exchanges and starts the reconnecting supervisor.
    pub async fn connect(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|error| BrokerError::InvalidUrl {
            url: redact(url),
            reason: error.to_string(),
        })?;
        let address = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5672)
        );
        let (live, _) = watch::channel(None);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            address,
            connection_name: format!("orderflow-{}", Uuid::now_v7()),
            live,
            shutdown,
            nudge: Arc::new(Notify::new()),
            generation: AtomicU64::new(0),
        });
        let first = shared
            .open()
            .await
            .map_err(|error| shared.connect_error(error))?;
        // A failed first connection fails `connect` (the caller decides whether to try
        // again); from here on, a lost connection is the supervisor's to repair.
        shared.live.send_replace(Some(Arc::new(first)));
        tokio::spawn(supervise(Arc::downgrade(&shared)));
        Ok(RabbitBroker { shared })
    }

    /// The client-provided connection name the server shows (`orderflow-<uuid>`), kept
    /// across reconnections.
    pub fn connection_name(&self) -> &str {
        &self.shared.connection_name
    }
}

impl Shared {
    /// Opens a connection and its publishing channel, and declares the exchanges.
    async fn open(&self) -> std::result::Result<Live, String> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.open_once()).await {
            Ok(opened) => opened.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
    }

    async fn open_once(&self) -> lapin::Result<Live> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let connection = Connection::connect(&self.url, properties).await?;
        let publishing = PublishChannel::open(&connection).await?;
        // Counted only once the connection is usable, so generations have no gaps.
        Ok(Live {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            connection,
            publishing,
        })
    }

    fn connect_error(&self, detail: impl ToString) -> BrokerError {
        BrokerError::Connect {
            backend: BACKEND,
            address: self.address.clone(),
            detail: detail.to_string(),
        }
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The live connection, or why there is none.
    pub(super) fn current(&self) -> Result<Arc<Live>> {
        if self.is_shut_down() {
            return Err(BrokerError::Closed);
        }
        self.live
            .borrow()
            .clone()
            .ok_or_else(|| BrokerError::Connect {
                backend: BACKEND,
                address: self.address.clone(),
                detail: "connection lost, reconnecting".into(),
            })
    }

    /// [`Shared::current`] for declaring, consuming and counting: `Closed` stays `Closed`,
    /// anything else is wrapped into the operation's own error.
    pub(super) fn current_or(&self, wrap: impl FnOnce(String) -> BrokerError) -> Result<Arc<Live>> {
        self.current().map_err(|error| match error {
            BrokerError::Closed => BrokerError::Closed,
            other => wrap(other.to_string()),
        })
    }

    /// A lapin call failed: if the connection is the reason, have the supervisor look now
    /// instead of at its next tick.
    pub(super) fn saw_failure(&self, live: &Live) {
        if !live.connection.status().connected() {
            self.nudge.notify_one();
        }
    }
}

/// Watches the connection; when it is gone, reconnects with backoff and publishes the new
/// one. Holds only a weak reference so that the broker, its consumers and settle handles
/// decide how long the connection lives.
async fn supervise(shared: Weak<Shared>) {
    let (mut shutdown, nudge) = match shared.upgrade() {
        Some(shared) => (shared.shutdown.subscribe(), shared.nudge.clone()),
        None => return,
    };
    loop {
        tokio::select! {
            // `close` was called: the connection is closed by `close` itself.
            _ = shutdown.wait_for(|closed| *closed) => return,
            // Nobody reported anything: look anyway, a connection can die quietly.
            _ = tokio::time::sleep(SUPERVISOR_TICK) => {}
            // A publisher, consumer or settle handle saw a lapin call fail on a dead
            // connection (`Shared::saw_failure`): look now.
            _ = nudge.notified() => {}
        }
        // Strong only while looking: between looks the supervisor must not keep the
        // broker alive. Gone means every handle, consumer and delivery was dropped.
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let alive = strong
            .live
            .borrow()
            .as_ref()
            .is_some_and(|live| live.connection.status().connected());
        if alive || strong.is_shut_down() {
            continue;
        }
        // Withdraw the dead connection first: from now on callers get "reconnecting"
        // errors at once instead of failing on its closed channels.
        strong.live.send_replace(None);
        tracing::warn!(
            connection = %strong.connection_name,
            address = %strong.address,
            "RabbitMQ connection lost; reconnecting"
        );
        drop(strong);
        let mut attempt = 0;
        loop {
            // Upgraded per attempt: once the broker and everything using it are dropped,
            // there is nothing left to reconnect for.
            let Some(strong) = shared.upgrade() else {
                return;
            };
            if strong.is_shut_down() {
                return;
            }
            attempt += 1;
            // Bounded by CONNECT_TIMEOUT, so a peer that accepts and then says nothing
            // cannot hold the supervisor here.
            match strong.open().await {
                Ok(live) => {
                    tracing::info!(
                        connection = %strong.connection_name,
                        generation = live.generation,
                        attempt,
                        "RabbitMQ connection re-established"
                    );
                    // `close` ran while this connection was being opened: `close` saw no
                    // connection to close, so this one is closed here, not published.
                    if strong.is_shut_down() {
                        let _ = live.connection.close(REPLY_SUCCESS, "OK".into()).await;
                        return;
                    }
                    // Publishing wakes every consumer task waiting in `next_live`; each
                    // re-declares its queue and consumes again on this connection.
                    strong.live.send_replace(Some(Arc::new(live)));
                    break;
                }
                Err(error) => {
                    let delay = reconnect_backoff(attempt);
                    tracing::warn!(
                        connection = %strong.connection_name,
                        %error,
                        attempt,
                        retry_in = ?delay,
                        "reconnecting to RabbitMQ failed"
                    );
                    drop(strong);
                    tokio::select! {
                        // `close` during the pause: stop trying.
                        _ = shutdown.wait_for(|closed| *closed) => return,
                        // The pause is over: try again.
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// 100 ms doubling, capped at 5 s.
pub(super) fn reconnect_backoff(attempt: u32) -> Duration {
    let millis = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    Duration::from_millis(millis.min(5_000))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    fn backend(&self) -> Backend {
        Backend::RabbitMq
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            broker_restart: true,
            fault_injection: false,
            refuses_unroutable: true,
        }
    }

    /// Stops the supervisor and the consumers, closes the publishing channel and the
    /// connection. Unacked deliveries go back to their queues.
    async fn close(&self) -> Result<()> {
        // The flag first: the supervisor and the consumer tasks stop before the
        // connection goes, so none of them takes its loss for an outage to repair.
        self.shared.shutdown.send_replace(true);
        let Some(live) = self.shared.live.send_replace(None) else {
            return Ok(());
        };
        let publisher = &live.publishing.channel;
        if publisher.status().connected() {
            let _ = publisher.close(REPLY_SUCCESS, "OK".into()).await;
        }
        if live.connection.status().connected() {
            // lapin reports a consumer channel that was closing at the same moment as an
            // error of the whole close; the connection is closed (or dropped with `live`)
            // either way, and nothing is left for the caller to do about it.
            if let Err(error) = live.connection.close(REPLY_SUCCESS, "OK".into()).await {
                tracing::debug!(%error, "closing the RabbitMQ connection");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        rabbitmq::close_connections_for_test, Envelope, Publisher, Subscriber, Subscription,
    };

    /// Against a real RabbitMQ: the connection is cut twice while a publisher and a
    /// consumer are busy; every message still arrives on the same `Deliveries` (some twice:
    /// deliveries in flight when the channel died come again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_publisher_and_consumer_survive_two_cuts() {
        let Ok(url) = std::env::var("ORDERFLOW_AMQP_URL") else {
            println!("ORDERFLOW_AMQP_URL not set; skipped");
            return;
        };
        let broker = Arc::new(RabbitBroker::connect(&url).await.unwrap());
        let run = Uuid::now_v7().simple();
        let topic = format!("cut-{run}");
        let mut deliveries = broker
            .subscribe(Subscription::new(format!("cut-{run}"), [&topic]).with_prefetch(16))
            .await
            .unwrap();
        let sent: Vec<Envelope> = (0..2_000)
            .map(|index| Envelope::new(&topic, format!("k{}", index % 7), index.to_string()))
            .collect();
        let expected: std::collections::HashSet<Uuid> = sent.iter().map(|e| e.id).collect();
        let publisher = {
            let broker = broker.clone();
            tokio::spawn(async move {
                for batch in sent.chunks(50) {
                    // Publishing again after an error is safe: ids are stable.
                    while broker.publish_all(batch.to_vec()).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        };
        let mut received = std::collections::HashSet::new();
        let (mut cuts, mut stale_acks_refused) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !expected.is_subset(&received) {
            let delivery = tokio::time::timeout_at(deadline, deliveries.next())
                .await
                .unwrap_or_else(|_| panic!("{} of 2000 after 90 s", received.len()))
                .expect("the subscription survives");
            received.insert(delivery.envelope().id);
            if (cuts == 0 && received.len() >= 400) || (cuts == 1 && received.len() >= 1_200) {
                cuts += 1;
                let closed = close_connections_for_test(broker.connection_name())
                    .await
                    .unwrap();
                assert_eq!(closed, 1, "cut {cuts}");
                // Held across the cut: its channel is gone, so the ack must say so.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let error = delivery.ack().await.unwrap_err();
                assert!(matches!(error, BrokerError::Settle { .. }), "{error:?}");
                stale_acks_refused += 1;
            } else {
                let _ = delivery.ack().await;
            }
        }
        assert_eq!((cuts, stale_acks_refused), (2, 2));
        publisher.await.unwrap();
        broker.close().await.unwrap();
    }
}
