//! `POST /internal/handle`: a service's consumer handler, called over HTTP — the far end of
//! the synchronous wiring (`ORDERFLOW_WIRING=sync` on the order service), the baseline
//! `orderflow load --compare` measures the queue against.
//!
//! ```text
//! POST /internal/handle  {"envelopes": [envelope, …]}
//!   for each, in order:  decode ─► handler.handle(event, envelope) inside handing_back
//!   200 {"results": [{"outcome": "done"|"duplicate"|"ignored", "handed_back": [envelope, …]}]}
//!   503 the handler said Retry (the SMS gateway's rate limit, a database hiccup)
//!   422 the handler said Reject, or a payload does not decode
//! ```
//!
//! The handler is the service's own [`Handler`], the one its consumer loop runs: same
//! gateway latency, same idempotency, same SMS rate limit — no second implementation of
//! the business logic. Each call runs inside [`handing_back`], so the events the handler
//! writes to its outbox come back in the answer (written sent; no relay publishes them)
//! instead of going to the broker, and the caller passes them to the next service.
//!
//! What a synchronous chain cannot borrow from the queue: nobody retries for the caller
//! and nothing paces the calls. A `Retry` is answered `503` at once — the SMS gateway's
//! 429 reaches the caller as a refusal, as it would from a real provider called inline —
//! and the caller decides (the order service fails the request). A repeated envelope is
//! answered `duplicate` with nothing handed back: the first answer is not replayed.
//!
//! The route is served in both wirings (it is internal, like `/internal/reconcile`); in
//! the asynchronous one nobody calls it.

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use chrono::{DateTime, Utc};
use orderflow_broker::Envelope;
use orderflow_events::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, JsonBody};
use crate::{
    consumer::{Handler, HandlerError, Outcome},
    outbox::handing_back,
};

/// Where the route is served.
pub const HANDLE_PATH: &str = "/internal/handle";

/// An envelope as JSON: the payload, JSON already, as its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEnvelope {
    /// The message id (deduplication key).
    pub id: Uuid,
    /// The topic it would have been published on.
    pub topic: String,
    /// The ordering key.
    pub key: String,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// The encoded event, as UTF-8 text.
    pub payload: String,
    /// When it was created.
    pub published_at: DateTime<Utc>,
}

impl From<&Envelope> for WireEnvelope {
    fn from(envelope: &Envelope) -> Self {
        WireEnvelope {
            id: envelope.id,
            topic: envelope.topic.clone(),
            key: envelope.key.clone(),
            headers: envelope.headers.clone(),
            payload: String::from_utf8_lossy(&envelope.payload).into_owned(),
            published_at: envelope.published_at,
        }
    }
}

impl From<WireEnvelope> for Envelope {
    fn from(wire: WireEnvelope) -> Self {
        Envelope {
            id: wire.id,
            topic: wire.topic,
            key: wire.key,
            headers: wire.headers,
            payload: wire.payload.into_bytes().into(),
            published_at: wire.published_at,
        }
    }
}

/// The request: envelopes handled one after the other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandleRequest {
    /// What to handle, in order.
    pub envelopes: Vec<WireEnvelope>,
}

/// What the handler did with one envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handled {
    /// `done`, `duplicate` or `ignored`.
    pub outcome: String,
    /// The events it would have published, for the caller to pass on.
    pub handed_back: Vec<WireEnvelope>,
}

/// The answer: one result per envelope, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandleAnswer {
    /// One per envelope of the request.
    pub results: Vec<Handled>,
}

/// The route, running `handler` on what it is given.
pub fn handle_routes(handler: Arc<dyn Handler>) -> Router {
    Router::new()
        .route(HANDLE_PATH, post(handle))
        .with_state(handler)
}

async fn handle(
    State(handler): State<Arc<dyn Handler>>,
    JsonBody(request): JsonBody<HandleRequest>,
) -> Result<Json<HandleAnswer>, ApiError> {
    let mut results = Vec::with_capacity(request.envelopes.len());
    for wire in request.envelopes {
        let envelope = Envelope::from(wire);
        let event = Event::decode(&envelope.payload).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{}: undecodable payload: {error}", envelope.id),
            )
        })?;
        let (handled, handed_back) = handing_back(handler.handle(event, &envelope)).await;
        let outcome = match handled {
            Ok(Outcome::Done) => "done",
            Ok(Outcome::Duplicate) => "duplicate",
            Ok(Outcome::Ignored) => "ignored",
            Err(HandlerError::Retry(error)) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{} on {}: {error:#}", envelope.id, envelope.topic),
                ))
            }
            Err(HandlerError::Reject(error)) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{} on {}: {error:#}", envelope.id, envelope.topic),
                ))
            }
        };
        results.push(Handled {
            outcome: outcome.to_owned(),
            handed_back: handed_back.iter().map(WireEnvelope::from).collect(),
        });
    }
    Ok(Json(HandleAnswer { results }))
}
