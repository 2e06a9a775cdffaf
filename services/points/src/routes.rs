//! The points service's HTTP API.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /users/{id}/points` | `{user_id, balance, ledger: [{order_id, points, awarded_at}]}` (balance 0 for a user with no points) |
//! | `POST /internal/handle` | the synchronous wiring's call: the consumer handler run on the envelopes given, its events handed back ([`orderflow_kit::http::sync_handle`]) |
//! | `GET /internal/reconcile` | `{"ledger": [{order_id, points}], "common": {…}}` for `orderflow reconcile` |

use axum::{
    extract::{Path, State},
    routing::get,
    Json, Router,
};
pub use orderflow_kit::service::ApiState;
use orderflow_kit::{http::ApiError, service};
use serde::Serialize;

use crate::store::{self, LedgerEntry};

/// The routes, ready to be served.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/users/{user_id}/points", get(points_of_user))
        .route("/internal/reconcile", get(reconcile))
        .with_state(state)
}

/// A user's points.
#[derive(Debug, Serialize)]
pub struct UserPoints {
    /// The user.
    pub user_id: u64,
    /// The sum of the ledger.
    pub balance: i64,
    /// Every award, oldest first.
    pub ledger: Vec<LedgerEntry>,
}

async fn points_of_user(
    State(state): State<ApiState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserPoints>, ApiError> {
    let invalid = || ApiError::invalid("user_id", format!("{user_id:?} is not a user id"));
    let id: u64 = user_id.parse().map_err(|_| invalid())?;
    let stored_id = i64::try_from(id).map_err(|_| invalid())?;
    let ledger = store::ledger_of(&state.db, stored_id)
        .await
        .map_err(|error| ApiError::internal(format!("{error:#}")))?;
    // Summed from the rows returned, so the balance always agrees with the ledger shown.
    let balance = ledger.iter().map(|entry| entry.points).sum();
    Ok(Json(UserPoints {
        user_id: id,
        balance,
        ledger,
    }))
}

/// `GET /internal/reconcile`: `{"ledger": [...], "common": {...}}`.
async fn reconcile(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = store::reconcile_rows(&state.db).await;
    service::reconcile_answer(&state.db, &state.relay, "ledger", rows).await
}
