//! The SMS service's HTTP API.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /sms?order_id=…` | the texts sent about that order (`[]` or one); without `order_id`, the latest 100 |
//! | `POST /internal/handle` | the synchronous wiring's call: the consumer handler run on the envelopes given, its events handed back ([`orderflow_kit::http::sync_handle`]) |
//! | `GET /internal/reconcile` | `{"messages": [{order_id, instance}], "texts": [{order_id, texts}], "common": {…}}` for `orderflow reconcile`: the service's records, and the gateway's texts dispatched per order from its own books |

use axum::{
    extract::{Query, State},
    routing::get,
    Json, Router,
};
pub use orderflow_kit::service::ApiState;
use orderflow_kit::{http::ApiError, service};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    gateway::SmsGateway,
    store::{self, SmsRecord},
};

/// The routes, ready to be served.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/sms", get(list_sms))
        .route("/internal/reconcile", get(reconcile))
        .with_state(state)
}

/// `GET /sms` parameters. A string, parsed by hand, so a bad id gets a JSON error naming
/// the field rather than axum's plain-text rejection.
#[derive(Debug, Deserialize)]
pub struct SmsQuery {
    /// Only texts about this order.
    pub order_id: Option<String>,
}

async fn list_sms(
    State(state): State<ApiState>,
    Query(query): Query<SmsQuery>,
) -> Result<Json<Vec<SmsRecord>>, ApiError> {
    let order_id = query
        .order_id
        .filter(|id| !id.is_empty())
        .map(|id| id.parse::<Uuid>())
        .transpose()
        .map_err(|error| ApiError::invalid("order_id", format!("not a UUID: {error}")))?;
    let records = store::list(&state.db, order_id)
        .await
        .map_err(|error| ApiError::internal(format!("{error:#}")))?;
    Ok(Json(records))
}

/// `GET /internal/reconcile`: `{"messages": [...], "texts": [...], "common": {...}}`.
/// The gateway's texts are listed per order apart from the service's records, so that a
/// second text — which `sms_messages`, one row per order, cannot hold — and a text about an
/// order the service has no record of are reported too.
async fn reconcile(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let internal = |error: anyhow::Error| ApiError::internal(format!("{error:#}"));
    let texts = SmsGateway::dispatched(&state.db).await.map_err(internal)?;
    let rows = store::reconcile_rows(&state.db).await;
    let Json(mut answer) =
        service::reconcile_answer(&state.db, &state.relay, "messages", rows).await?;
    answer["texts"] = serde_json::to_value(texts).map_err(|error| internal(error.into()))?;
    Ok(Json(answer))
}
