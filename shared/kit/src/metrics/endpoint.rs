//! `GET /metrics`: the scrape-time gauges read ([`Sampled`]), then the process's registry
//! rendered in the Prometheus text format.

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};

use super::{recorder, Sampled};

/// The content type of the Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` route, reading `sampled` at every scrape.
pub fn metrics_routes(sampled: Sampled) -> Router {
    // Installed here too, so a router built without `Service::start` (a test's) still
    // has a registry to render.
    recorder::install();
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(sampled)
}

async fn scrape(State(sampled): State<Sampled>) -> impl IntoResponse {
    sampled.sample().await;
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        recorder::install().render(),
    )
}
