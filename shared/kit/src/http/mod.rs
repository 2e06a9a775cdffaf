//! HTTP plumbing every service shares, one concept per file:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | [`ApiError`] (every refusal as `{"error": …, "field": …}`), binding and serving a router until shutdown with a tracing span per request, the container [`healthcheck`] |
//! | `health.rs` | `/healthz` and `/readyz`: [`Readiness`], and the probes that make a service not ready while its database or broker is down ([`watch_database`], [`watch_broker`]) |
//! | `sync_handle.rs` | `POST /internal/handle`: a service's consumer handler called over HTTP, its events handed back in the answer (the synchronous wiring) |
//! | `json.rs` | [`JsonBody`], the request-body extractor whose refusals name the field by its JSON path |

mod health;
mod json;
pub mod sync_handle;

pub use health::{
    health_routes, watch_broker, watch_database, Readiness, PROBE_INTERVAL, PROBE_TIMEOUT,
};
pub use json::{parse_json, require_json_content_type, JsonBody};

use std::net::SocketAddr;

use axum::{http::StatusCode, response::IntoResponse, Json, Router};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

/// An error answer: a status and a JSON body `{"error": …, "field": …}` saying what is
/// wrong, never an HTML page or an empty body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong, for a person.
    pub message: String,
    /// Which field, when one is to blame.
    pub field: Option<String>,
}

impl ApiError {
    /// A 4xx/5xx with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
    /// A 422 about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    /// Any status, about one field (a 400 for a bad header, a 409 for a reused key).
    pub fn with_field(
        status: StatusCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    /// A 500 that logs the cause and tells the client only that it failed.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = match self.field {
            Some(field) => serde_json::json!({"error": self.message, "field": field}),
            None => serde_json::json!({"error": self.message}),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Binds `addr` and serves `router` until `shutdown` is cancelled, then lets in-flight
/// requests finish. Returns the bound address through `bound` (useful with port 0).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {addr}: {error}"))
}

/// Serves `router` on `listener` until `shutdown` is cancelled. Every request runs in a
/// tracing span of its own (method, path, status and latency logged at DEBUG), so that
/// whatever a handler logs is tied to the request that caused it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router.layer(TraceLayer::new_for_http()))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// The container healthcheck, `<service>-service healthcheck`: asks this service's own
/// `/readyz` (at `ORDERFLOW_HTTP_ADDR`, or `127.0.0.1:<default_port>`) and returns the
/// process exit status — 0 when ready. Built into every binary so that the runtime image
/// needs no curl.
pub fn healthcheck(default_port: u16) -> i32 {
    use std::io::{Read, Write};
    let configured = crate::config::env_or(
        "ORDERFLOW_HTTP_ADDR",
        SocketAddr::from(([127, 0, 0, 1], default_port)),
    );
    let Ok(mut address) = configured else {
        eprintln!("healthcheck: ORDERFLOW_HTTP_ADDR is not an address");
        return 2;
    };
    if address.ip().is_unspecified() {
        // Listening on every interface: ask over loopback.
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })();
    match answer {
        Ok(response)
            if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") =>
        {
            0
        }
        Ok(response) => {
            eprintln!(
                "healthcheck: {}",
                response.lines().next().unwrap_or("empty answer")
            );
            1
        }
        Err(error) => {
            eprintln!("healthcheck: {address}: {error}");
            1
        }
    }
}

/// Runs [`healthcheck`] and exits when the process was started as
/// `<service>-service healthcheck` (the compose file's healthcheck command); returns
/// otherwise. Call first thing in `main`.
pub fn exit_if_healthcheck(default_port: u16) {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        std::process::exit(healthcheck(default_port));
    }
}
