//! HTTP requests counted and timed: [`track_requests`], a middleware around every route
//! of a service.
//!
//! The `route` label is the route *template* axum matched (`/orders/{id}`), read from
//! [`MatchedPath`]; a path no route matched is counted as `unmatched`. Labelling by the
//! raw path instead would make a new series for every order id.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
    Router,
};

use super::names::{self, label};

/// `router` with every request it answers counted in
/// [`names::HTTP_REQUESTS`] and timed in [`names::HTTP_REQUEST_DURATION`], labelled
/// `service`. Apply it last: a layer wraps only the routes added before it.
pub fn track_requests(router: Router, service: &str) -> Router {
    router.layer(middleware::from_fn_with_state(
        Arc::<str>::from(service),
        track,
    ))
}

async fn track(State(service): State<Arc<str>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // `Router::layer` wraps each route, so the matched template is known here already.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(names::UNMATCHED_ROUTE.to_owned(), |path| {
            path.as_str().to_owned()
        });
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        names::HTTP_REQUESTS,
        label::SERVICE => service.to_string(),
        label::ROUTE => route.clone(),
        label::METHOD => method,
        label::STATUS => status,
    )
    .increment(1);
    // The time to the answer's head: a streamed body would go on after it, and none of
    // the services' answers is streamed.
    metrics::histogram!(
        names::HTTP_REQUEST_DURATION,
        label::SERVICE => service.to_string(),
        label::ROUTE => route,
    )
    .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{
        http::{bind, serve},
        metrics::{install, scraped},
    };

    /// `GET path` over a real socket; the status code.
    async fn get_status(address: SocketAddr, path: &'static str) -> u16 {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response[9..12].parse().unwrap()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_unknown_paths_as_one_route() {
        let handle = install();
        // A service name of the test's own: the registry is the whole test binary's.
        let service = format!("requests-test-{}", uuid::Uuid::now_v7().simple());
        let router = Router::new().route("/orders/{id}", get(|| async { "an order" }));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            track_requests(router, &service),
            shutdown.clone(),
        ));

        assert_eq!(get_status(address, "/orders/1").await, 200);
        assert_eq!(get_status(address, "/orders/2").await, 200);
        assert_eq!(get_status(address, "/no/such/path").await, 404);
        shutdown.cancel();
        server.await.unwrap().unwrap();

        let samples = scraped::parse(&handle.render()).unwrap();
        let count = |route: &str, status: &str| {
            scraped::sum(
                &samples,
                names::HTTP_REQUESTS,
                &[
                    ("service", &service),
                    ("route", route),
                    ("method", "GET"),
                    ("status", status),
                ],
            )
        };
        assert_eq!(count("/orders/{id}", "200"), Some(2.0));
        assert_eq!(count(names::UNMATCHED_ROUTE, "404"), Some(1.0));
        assert!(
            !samples.iter().any(|sample| sample
                .labels
                .values()
                .any(|value| value.starts_with("/orders/1"))),
            "a raw path became a label value"
        );
        // A histogram with the explicit buckets, not a summary: one `le` per bucket.
        let duration = |suffix: &str, extra: &[(&str, &str)]| {
            let mut labels = vec![("service", service.as_str()), ("route", "/orders/{id}")];
            labels.extend_from_slice(extra);
            scraped::sum(
                &samples,
                &format!("{}{suffix}", names::HTTP_REQUEST_DURATION),
                &labels,
            )
        };
        assert_eq!(duration("_count", &[]), Some(2.0));
        assert_eq!(duration("_bucket", &[("le", "+Inf")]), Some(2.0));
        assert!(duration("_bucket", &[("le", "30")]).is_some());
        let buckets = samples
            .iter()
            .filter(|sample| {
                sample.name == format!("{}_bucket", names::HTTP_REQUEST_DURATION)
                    && sample.labels.get("service") == Some(&service)
                    && sample.labels.get("route").map(String::as_str) == Some("/orders/{id}")
            })
            .count();
        assert_eq!(
            buckets,
            names::DURATION_BUCKETS.len() + 1,
            "every bucket and +Inf"
        );
    }
}
