//! The logging service's HTTP API.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /events?order_id=…` | that order's journey: its events in publish order, with headers, payloads and when each was stored (`logged_at`) |
//! | `POST /internal/handle` | the synchronous wiring's call: the consumer handler run on the envelopes given, its events handed back ([`orderflow_kit::http::sync_handle`]) |
//! | `GET /internal/reconcile` | `{"events": [{order_id, event_type, count}], "common": {…}}` for `orderflow reconcile` |

use axum::{
    extract::{Query, State},
    routing::get,
    Json, Router,
};
pub use orderflow_kit::service::ApiState;
use orderflow_kit::{http::ApiError, service};
use serde::Deserialize;
use uuid::Uuid;

use crate::store::{self, LoggedEvent};

/// The routes, ready to be served.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/events", get(journey))
        .route("/internal/reconcile", get(reconcile))
        .with_state(state)
}

/// `GET /events` parameters. A string, parsed by hand, so a bad id gets a JSON error naming
/// the field rather than axum's plain-text rejection.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The order whose journey to show.
    pub order_id: Option<String>,
}

async fn journey(
    State(state): State<ApiState>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<LoggedEvent>>, ApiError> {
    let order_id: Uuid = query
        .order_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::invalid("order_id", "order_id is required"))?
        .parse()
        .map_err(|error| ApiError::invalid("order_id", format!("not a UUID: {error}")))?;
    let events = store::journey(&state.db, order_id)
        .await
        .map_err(|error| ApiError::internal(format!("{error:#}")))?;
    Ok(Json(events))
}

/// `GET /internal/reconcile`: `{"events": [...], "common": {...}}`.
async fn reconcile(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = store::reconcile_rows(&state.db).await;
    service::reconcile_answer(&state.db, &state.relay, "events", rows).await
}
