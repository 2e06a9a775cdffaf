//! The HTTP routes of the order service.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /orders` | `202 Accepted`, `Location: /orders/{id}`, the order as [`OrderView`]; in the synchronous wiring ([`crate::wiring`]) `201 Created` once every service was called, or the failed call's `502`/`503`/`504` |
//! | `GET /orders/{id}` | `200` with the order, its items and its history; `404` / `400` |
//! | `GET /internal/reconcile` | every order's id, total and status plus the kit's counters |
//!
//! Every error is the kit's [`ApiError`] body, `{"error": "...", "field": "..."}`. A
//! `POST /orders` body is read by the kit's [`JsonBody`] (content type, size, JSON syntax,
//! field types — each refusal naming the field), then checked against the order rules in
//! [`crate::validation`]. `/healthz` and `/readyz` are added by the kit.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
pub use orderflow_kit::service::ApiState;
use orderflow_kit::{
    http::{ApiError, JsonBody},
    outbox::handing_back,
    service,
};

use crate::{
    store::{self, OrderView, PlaceError, Placed},
    validation::{self, OrderRequest, IDEMPOTENCY_KEY_HEADER, MAX_BODY_BYTES},
    wiring::SyncChain,
};

/// What the routes share: the kit's state, and the synchronous chain when the service runs
/// in the synchronous wiring.
#[derive(Clone)]
pub struct OrderState {
    /// The database and the outbox relay.
    pub api: ApiState,
    /// `Some` in the synchronous wiring (`ORDERFLOW_WIRING=sync`).
    pub chain: Option<Arc<SyncChain>>,
}

impl axum::extract::FromRef<OrderState> for ApiState {
    fn from_ref(state: &OrderState) -> ApiState {
        state.api.clone()
    }
}

/// The routes, with the body limit and a JSON 404 for anything else.
pub fn router(state: OrderState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/internal/reconcile", get(reconcile))
        .fallback(unknown_route)
        // axum would otherwise accept 2 MB; an order is a few hundred bytes.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `POST /orders`.
async fn place_order(
    State(state): State<OrderState>,
    headers: HeaderMap,
    // The kit's extractor, not axum's Json: its refusals are JSON and name the field.
    JsonBody(request): JsonBody<OrderRequest>,
) -> Result<Response, ApiError> {
    let key = validation::idempotency_key(headers.get(IDEMPOTENCY_KEY_HEADER))?;
    let order = validation::check(request)?;
    if let Some(chain) = &state.chain {
        return place_synchronously(&state.api, chain, &order, key.as_deref()).await;
    }
    let state = &state.api;
    let placed = store::place(&state.db, &order, key.as_deref())
        .await
        .map_err(place_error)?;
    let (view, replayed) = match placed {
        Placed::Created(view) => {
            state.relay.wake();
            tracing::info!(order_id = %view.order_id, total_cents = view.total_cents, "order placed");
            (view, false)
        }
        Placed::Replayed(view) => {
            tracing::info!(order_id = %view.order_id, "retried request answered with the first order");
            (view, true)
        }
    };
    Ok(accepted(view, replayed))
}

/// `POST /orders` in the synchronous wiring: the order stored (its `order.placed` handed
/// back, not published), then every other service called in turn ([`SyncChain::run`]),
/// then `201` with the order as it is now. A retried request (same key) is answered with
/// the order as stored, the chain not run again.
async fn place_synchronously(
    state: &ApiState,
    chain: &SyncChain,
    order: &validation::NewOrder,
    key: Option<&str>,
) -> Result<Response, ApiError> {
    let (placed, handed_back) = handing_back(store::place(&state.db, order, key)).await;
    let placed = placed.map_err(place_error)?;
    let view = match placed {
        Placed::Replayed(view) => return Ok(accepted(view, true)),
        Placed::Created(view) => view,
    };
    let order_placed = handed_back
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the order was stored without its order.placed"))?;
    if let Err(error) = chain.run(order_placed).await {
        tracing::warn!(order_id = %view.order_id, error = %error.message, "synchronous chain failed");
        return Err(ApiError::new(error.status, error.message));
    }
    let view = store::find(&state.db, view.order_id)
        .await
        .map_err(|error| ApiError::internal(format!("{error:#}")))?
        .unwrap_or(view);
    tracing::info!(order_id = %view.order_id, status = %view.status, "order placed and carried through synchronously");
    let mut response = accepted(view, false);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

fn place_error(error: PlaceError) -> ApiError {
    match error {
        PlaceError::KeyReused => {
            ApiError::with_field(StatusCode::CONFLICT, "Idempotency-Key", error.to_string())
        }
        PlaceError::Database(error) => ApiError::internal(format!("{error:#}")),
    }
}

/// 202 with the order, where to find it, and whether this answers a retry.
fn accepted(view: OrderView, replayed: bool) -> Response {
    let location = HeaderValue::from_str(&format!("/orders/{}", view.order_id))
        .expect("a UUID path is a valid header value");
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `GET /orders/{id}`.
async fn get_order(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = validation::order_id(&id)?;
    store::find(&state.db, order_id)
        .await
        .map_err(|error| ApiError::internal(format!("{error:#}")))?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no order {order_id}")))
}

/// `GET /internal/reconcile`.
async fn reconcile(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = store::reconcile_rows(&state.db).await;
    service::reconcile_answer(&state.db, &state.relay, "orders", rows).await
}

/// Anything else: a JSON 404 rather than an empty body.
async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}
