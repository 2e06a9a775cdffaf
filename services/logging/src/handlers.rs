//! What the logging service does with any event: store it once.
//!
//! ```text
//! any topic ─► INSERT event ON CONFLICT (message_id) DO NOTHING
//!                 1 row ──► Done
//!                 0 rows ─► Duplicate (the broker delivered this message before)
//! ```
//!
//! One statement, so no transaction and no separate claim: the event row is the claim
//! (see [`crate::store`]).

use std::sync::Arc;

use anyhow::anyhow;
use async_trait::async_trait;
use orderflow_broker::Envelope;
use orderflow_events::Event;
use orderflow_kit::{
    consumer::{Handler, HandlerError, Outcome},
    db::Db,
};

use crate::store::{self, LoggedEvent};

/// Stores every event it is given, once per message id.
pub struct EventLogHandler {
    db: Db,
}

impl EventLogHandler {
    /// A handler storing into `db`.
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(EventLogHandler { db })
    }
}

#[async_trait]
impl Handler for EventLogHandler {
    async fn handle(&self, event: Event, envelope: &Envelope) -> Result<Outcome, HandlerError> {
        // The consumer loop decoded the payload, so it is JSON; parse it as such to store
        // and serve it as a document rather than as opaque bytes.
        let payload: serde_json::Value = serde_json::from_slice(&envelope.payload)
            .map_err(|error| HandlerError::Reject(anyhow!("payload is not JSON: {error}")))?;
        let logged = LoggedEvent {
            message_id: envelope.id,
            order_id: event.order_id(),
            event_type: event.kind().name().to_owned(),
            topic: envelope.topic.clone(),
            published_at: envelope.published_at,
            headers: serde_json::to_value(&envelope.headers)
                .map_err(|error| HandlerError::Reject(error.into()))?,
            payload,
            logged_at: chrono::Utc::now(),
        };
        if store::insert(&self.db, &logged).await? {
            tracing::debug!(event_type = %logged.event_type, "event logged");
            Ok(Outcome::Done)
        } else {
            Ok(Outcome::Duplicate)
        }
    }
}
