//! HTTP plumbing every service shares: `/healthz`, `/readyz`, JSON errors, a JSON body
//! extractor whose refusals name the field, a tracing span per request, and serving a
//! router until shutdown.
//!
//! Readiness is more than "started": a service whose database or broker connection is down
//! cannot do its work, so `/readyz` answers 503 then, and a load balancer or compose
//! healthcheck stops counting on it until the probes pass again ([`watch_database`],
//! [`watch_broker`]).

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Json, Router,
};
use orderflow_broker::{Broker, Subscription};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::db::Db;

/// How often the database and the broker are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A probe that has not answered in this long counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the service can do its work: started (migrated, subscribed) and every
/// dependency's last probe passed. Starts not ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug, Default)]
struct ReadinessState {
    started: AtomicBool,
    /// The dependencies whose last probe failed, with the error it gave.
    down: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    /// Marks the service started (or stopping).
    pub fn set(&self, ready: bool) {
        self.0.started.store(ready, Ordering::SeqCst);
    }

    /// Started, and nothing it depends on is down?
    pub fn is_ready(&self) -> bool {
        self.0.started.load(Ordering::SeqCst) && self.down().is_empty()
    }

    /// Records the outcome of one probe of `dependency`.
    pub fn report(&self, dependency: &'static str, outcome: Result<(), String>) {
        let mut down = self.0.down.lock().expect("never poisoned");
        match outcome {
            Ok(()) => {
                if down.remove(dependency).is_some() {
                    tracing::info!(dependency, "reachable again: ready");
                }
            }
            Err(error) => {
                if down.insert(dependency, error.clone()).is_none() {
                    tracing::warn!(dependency, %error, "unreachable: not ready");
                }
            }
        }
    }

    /// The dependencies down now, with their errors.
    pub fn down(&self) -> BTreeMap<&'static str, String> {
        self.0.down.lock().expect("never poisoned").clone()
    }

    /// Runs `probe` every `interval` until `shutdown`, recording each outcome under
    /// `dependency`; a probe slower than [`PROBE_TIMEOUT`] counts as failed.
    pub fn probe_every<F, Fut>(
        &self,
        dependency: &'static str,
        interval: Duration,
        shutdown: CancellationToken,
        mut probe: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let readiness = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(format!("{error:#}")),
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                };
                readiness.report(dependency, outcome);
            }
        })
    }
}

/// Probes the database with `SELECT 1` every `interval`: "database" is down while it fails.
pub fn watch_database(
    readiness: &Readiness,
    db: Db,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    readiness.probe_every("database", interval, shutdown, move || {
        let db = db.clone();
        async move {
            sqlx::query("SELECT 1").execute(db.pool()).await?;
            Ok(())
        }
    })
}

/// Probes the broker every `interval` with the cheapest round trip that proves the
/// service's own consumer group is reachable: its backlog (a passive queue declare on
/// RabbitMQ, watermarks and committed offsets on Kafka). "broker" is down while it fails.
pub fn watch_broker(
    readiness: &Readiness,
    broker: Arc<dyn Broker>,
    subscription: Subscription,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    readiness.probe_every("broker", interval, shutdown, move || {
        let broker = broker.clone();
        let subscription = subscription.clone();
        async move {
            broker.backlog(&subscription).await?;
            Ok(())
        }
    })
}

/// `/healthz` (the process answers) and `/readyz` (it can do its work: 503 until it has
/// started, and while a dependency is down).
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let down = readiness.down();
    if !readiness.0.started.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
    } else if !down.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "down": down})),
        )
    } else {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    }
}

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

/// A JSON request body as `T`, or an [`ApiError`] that says what is wrong — the same JSON
/// error body as every other answer, where axum's own `Json` answers in plain text. The
/// refusals, in the order they are checked:
///
/// | problem | status | `field` |
/// | --- | --- | --- |
/// | `Content-Type` not `application/json` (or `application/*+json`) | 415 | — |
/// | body over the route's `DefaultBodyLimit` | 413 | — |
/// | empty, not JSON, truncated, or anything after the value | 400 | — |
/// | a field missing, unknown (`deny_unknown_fields`) or of the wrong type | 422 | its JSON path, e.g. `items[1].quantity` |
/// | the body not of `T`'s shape at all (an array for an object) | 422 | where it went wrong, if anywhere |
///
/// Rules serde cannot express (a range, a relation between fields) are the handler's.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_json_content_type(request.headers())?;
        let body =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body is larger than this route accepts",
                    ),
                    status => ApiError::new(
                        status,
                        format!("could not read the request body: {rejection}"),
                    ),
                })?;
        parse_json(&body).map(JsonBody)
    }
}

/// 415 unless `Content-Type` says JSON (`application/json`, `application/problem+json`, …;
/// parameters such as `charset` and letter case do not matter).
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ))
    }
}

/// `body` as `T`, or the 400 / 422 [`JsonBody`] describes, naming the field to blame.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request body is empty: expected a JSON value",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // serde_path_to_error tracks where the deserializer was when it failed, which is
    // the JSON path a client can act on (`items[2].quantity`).
    let value: T = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| describe_json_error(error.path().to_string(), error.into_inner()))?;
    // Anything after the value (`{…} {…}`) is malformed, not ignored.
    deserializer
        .end()
        .map_err(|error| describe_json_error(String::new(), error))?;
    Ok(value)
}

/// serde_json's error at `path`, as a status and the field it is about.
fn describe_json_error(path: String, error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = error.to_string();
    // serde_json appends " at line L column C": useful for a syntax error, noise for a
    // field that is already named.
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |position| &text[..position]);
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid JSON: {text}"),
        ),
        Category::Data => {
            // The root is "." on the path; a field directly in it has no parent.
            let parent = if path == "." { String::new() } else { path };
            let child = |name: &str| {
                if parent.is_empty() {
                    name.to_owned()
                } else {
                    format!("{parent}.{name}")
                }
            };
            // serde names a missing or unknown field only inside its message, in
            // backticks; the path points at the object that lacks (or has) it.
            if let Some(name) = backticked_after(message, "missing field `") {
                ApiError::invalid(child(name), format!("`{name}` is required"))
            } else if let Some(name) = backticked_after(message, "unknown field `") {
                // serde_path_to_error already puts the unknown key on the path.
                let field = if parent.ends_with(name) {
                    parent.clone()
                } else {
                    child(name)
                };
                ApiError::invalid(field, message)
            } else if parent.is_empty() {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("request body has the wrong shape: {message}"),
                )
            } else {
                ApiError::invalid(parent, message)
            }
        }
    }
}

/// `name` from a message starting with `prefix` followed by `name` and a backtick.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only through Debug: the tests are about what fails
    struct Order {
        user_id: u64,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: i64,
    }

    #[track_caller]
    fn refused(body: &str) -> ApiError {
        parse_json::<Order>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_well_formed_body_parses() {
        let order: Order =
            parse_json(br#"{"user_id": 7, "items": [{"sku": "tea", "quantity": 2}]}"#).unwrap();
        assert_eq!((order.user_id, order.items[0].quantity), (7, 2));
    }

    #[test]
    fn malformed_json_is_400_without_a_field() {
        for body in [
            r#"{"user_id": 1,"#,
            "not json",
            r#"{"user_id": 1, "items": []} {}"#,
            "",
            "  ",
        ] {
            let error = refused(body);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body:?}: {error:?}");
            assert_eq!(error.field, None, "{body:?}");
        }
    }

    #[test]
    fn missing_unknown_and_mistyped_fields_are_named_by_path() {
        let cases = [
            (r#"{"items": []}"#, "user_id"),
            (
                r#"{"user_id": 1, "items": [{"sku": "tea"}]}"#,
                "items[0].quantity",
            ),
            (r#"{"user_id": 1, "items": [], "coupon": "FREE"}"#, "coupon"),
            (
                r#"{"user_id": 1, "items": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 1, "colour": "red"}]}"#,
                "items[1].colour",
            ),
            (
                r#"{"user_id": 1, "items": [{"sku": "tea", "quantity": "two"}]}"#,
                "items[0].quantity",
            ),
            (r#"{"user_id": -5, "items": []}"#, "user_id"),
        ];
        for (body, field) in cases {
            let error = refused(body);
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(error.field.as_deref(), Some(field), "{body}: {error:?}");
            assert!(!error.message.is_empty());
        }
        // An array where an object was expected: the wrong shape, still a 422.
        let error = refused("[1, 2]");
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(require_json_content_type(&headers).is_err());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            require_json_content_type(&headers).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        for json in [
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(json));
            assert!(require_json_content_type(&headers).is_ok(), "{json}");
        }
    }

    #[tokio::test]
    async fn the_extractor_checks_type_then_size_then_json() {
        use axum::{extract::DefaultBodyLimit, routing::post};
        use raw_http::call;
        let router = Router::new()
            .route(
                "/",
                post(|JsonBody(order): JsonBody<Order>| async move { order.user_id.to_string() }),
            )
            .layer(DefaultBodyLimit::max(64));
        let good = r#"{"user_id": 7, "items": []}"#;
        let (status, _) = call(&router, "application/json", good).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(&router, "text/plain", good).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body["error"].is_string(), "{body}");
        let padded = format!("{good}{}", " ".repeat(100));
        let (status, body) = call(&router, "application/json", &padded).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.get("field").is_none(), "{body}");
        let (status, body) = call(&router, "application/json", r#"{"items": []}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["field"], "user_id");
    }

    /// One request over a real socket, as raw HTTP/1.0, to a router served for it.
    mod raw_http {
        use axum::{http::StatusCode, Router};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        pub async fn call(
            router: &Router,
            content_type: &str,
            body: &str,
        ) -> (StatusCode, serde_json::Value) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let router = router.clone();
            let server = tokio::spawn(async move { axum::serve(listener, router).await });
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let request = format!(
                "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            server.abort();
            let status: u16 = response
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .expect("a status line");
            let (_, body) = response.split_once("\r\n\r\n").unwrap_or_default();
            let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
            (StatusCode::from_u16(status).unwrap(), json)
        }
    }

    /// `GET /readyz` over a real socket: the status code and the body.
    async fn get_readyz(address: SocketAddr) -> (u16, serde_json::Value) {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let status = response[9..12].parse().unwrap();
            let body = response.split_once("\r\n\r\n").unwrap().1;
            (status, serde_json::from_str(body).unwrap())
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn readyz_is_503_while_the_database_is_down() {
        let dir = std::env::temp_dir().join(format!("orderflow-readyz-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(&format!("sqlite://{}/ready.db", dir.display()))
            .await
            .unwrap();
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            health_routes(readiness.clone()),
            shutdown.clone(),
        ));

        assert_eq!(get_readyz(address).await.0, 503, "not started yet");
        readiness.set(true);
        let probe = watch_database(
            &readiness,
            db.clone(),
            Duration::from_millis(20),
            shutdown.clone(),
        );
        assert_eq!(
            get_readyz(address).await,
            (200, serde_json::json!({"status": "ready"}))
        );

        // The database goes away: the next probe fails, and /readyz says so.
        db.pool().close().await;
        crate::wait::until(
            "readiness to notice the database is down",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async { (!readiness.is_ready()).then_some(()) },
        )
        .await
        .unwrap();
        let (status, body) = get_readyz(address).await;
        assert_eq!(status, 503);
        assert_eq!(body["status"], "not ready");
        assert!(body["down"]["database"].is_string(), "{body}");

        shutdown.cancel();
        probe.await.unwrap();
        server.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
