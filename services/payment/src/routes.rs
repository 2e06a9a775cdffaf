//! The payment service's HTTP API.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /payments/{order_id}` | the order's payment and how often the gateway charged it; 404 if none yet |
//! | `POST /internal/handle` | the synchronous wiring's call: the consumer handler run on the envelopes given, its events handed back ([`orderflow_kit::http::sync_handle`]) |
//! | `GET /internal/reconcile` | `{"payments": [{order_id, outcome}], "charges": [{order_id, charges}], "common": {…}}` for `orderflow reconcile`: the service's payments, and the gateway's charges made per order from its own books |

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::get,
    Json, Router,
};
use orderflow_kit::{db::Db, http::ApiError, outbox::Relay, service};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    gateway::Gateway,
    store::{self, Payment},
};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The service's database.
    pub db: Db,
    /// Its outbox relay (for the pending count).
    pub relay: Relay,
    /// The gateway (for its charge count).
    pub gateway: Gateway,
}

/// The routes, ready to be served.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/payments/{order_id}", get(get_payment))
        .route("/internal/reconcile", get(reconcile))
        .with_state(state)
}

/// A payment as `GET /payments/{order_id}` shows it.
#[derive(Debug, Serialize)]
pub struct PaymentView {
    /// The stored payment.
    #[serde(flatten)]
    pub payment: Payment,
    /// How many times the gateway charged the order (must be 1 for a paid order).
    pub charges: i64,
}

async fn get_payment(
    State(state): State<ApiState>,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    let order_id: Uuid = order_id
        .parse()
        .map_err(|error| ApiError::invalid("order_id", format!("not a UUID: {error}")))?;
    let payment = store::find(&state.db, order_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no payment for order {order_id} (yet)"),
            )
        })?;
    let charges = state
        .gateway
        .charges(order_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(PaymentView { payment, charges }))
}

/// `GET /internal/reconcile`: `{"payments": [...], "charges": [...], "common": {...}}`.
/// The charges are listed per order apart from the payments, so that a charge for an
/// order with no payment row (or no order at all) is reported too.
async fn reconcile(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let internal = |error: anyhow::Error| ApiError::internal(format!("{error:#}"));
    let charges = Gateway::charges_made(&state.db).await.map_err(internal)?;
    let Json(mut answer) = service::reconcile_answer(
        &state.db,
        &state.relay,
        "payments",
        store::reconcile_rows(&state.db).await,
    )
    .await?;
    answer["charges"] = serde_json::to_value(charges).map_err(|error| internal(error.into()))?;
    Ok(Json(answer))
}
