//! `GET /metrics` on every service, after orders flowed through the in-process stack.
//!
//! The five services run in this one process, so they share one metrics registry (see
//! `orderflow_kit::metrics`): every scrape shows all five services' series, told apart by
//! their `service` and `group` labels. What only a service's own `/metrics` does is read
//! its gauges at scrape time — its group's backlog and its outbox — so each service is
//! scraped and its own gauges looked for in its own answer.
//!
//! One test in this binary, on purpose: the counters are the process's, and a second
//! stack running beside it would add to them.

use std::time::Duration;

use orderflow::{
    place::{place_orders, Plan},
    reconcile::{wait_until_settled, Settle},
    stack::{InProcessStack, StackOptions},
};
use orderflow_kit::metrics::{
    names::{self, outcome},
    scraped::{self, Sample},
    CONTENT_TYPE,
};

const ORDERS: usize = 12;
/// Texts a second: slow enough that a burst of paid orders makes the SMS consumer wait
/// for its rate limit, quick enough that a dozen take a few seconds.
const SMS_RATE_PER_S: f64 = 4.0;

async fn scrape(client: &reqwest::Client, base: &str) -> Vec<Sample> {
    let response = client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{base}/metrics: {error}"));
    assert_eq!(response.status(), 200, "{base}/metrics");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        CONTENT_TYPE,
        "{base}/metrics"
    );
    let text = response.text().await.unwrap();
    // Histograms, not summaries: the explicit buckets are configured.
    assert!(
        text.contains(&format!("# TYPE {} histogram", names::HANDLER_DURATION)),
        "{text}"
    );
    scraped::parse(&text).unwrap_or_else(|error| panic!("{base}/metrics: {error}"))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    scraped::sum(samples, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_answers_metrics_with_its_work_counted() {
    let stack = InProcessStack::start_with_sms_rate(
        StackOptions {
            broker_url: format!("memory://metrics-{}", uuid::Uuid::now_v7().simple()),
            postgres: None,
        },
        Some(SMS_RATE_PER_S),
    )
    .await
    .expect("the five services start");
    let endpoints = stack.endpoints();
    let client = reqwest::Client::new();
    place_orders(&client, &endpoints.order, Plan::burst(ORDERS))
        .await
        .expect("orders accepted");
    let report = wait_until_settled(
        &client,
        &endpoints,
        &Settle {
            orders: ORDERS,
            deadline: Duration::from_secs(120),
            stalled_after: Some(Duration::from_secs(20)),
            progress: false,
        },
    )
    .await
    .expect("reconciliation readable");
    assert!(report.is_exact(), "{}", report.render());
    assert!(
        report.paid > 0 && report.payment_failed > 0,
        "{}",
        report.render()
    );

    let services = [
        ("order", &endpoints.order),
        ("payment", &endpoints.payment),
        ("points", &endpoints.points),
        ("sms", &endpoints.sms),
        ("logging", &endpoints.logging),
    ];
    for (service, base) in services {
        let samples = scrape(&client, base).await;
        // Its gauges, read by its own scrape: everything settled, so nothing waits.
        assert_eq!(
            value(&samples, names::BACKLOG, &[("group", service)]),
            0.0,
            "{service}: backlog"
        );
        assert_eq!(
            value(&samples, names::OUTBOX_PENDING, &[("service", service)]),
            0.0,
            "{service}: outbox"
        );
        // Its consumer loop: every delivery handled and acked, none retried.
        let deliveries = |outcome: &str| {
            value(
                &samples,
                names::DELIVERIES,
                &[("group", service), ("outcome", outcome)],
            )
        };
        let consumed = deliveries(outcome::CONSUMED);
        assert!(consumed > 0.0, "{service}: nothing consumed");
        assert_eq!(deliveries(outcome::ACKED), consumed, "{service}: acked");
        let handler_calls = value(
            &samples,
            &format!("{}_count", names::HANDLER_DURATION),
            &[("group", service)],
        );
        assert_eq!(
            handler_calls, consumed,
            "{service}: one handler call per delivery"
        );
        assert_eq!(
            value(
                &samples,
                &format!("{}_bucket", names::HANDLER_DURATION),
                &[("group", service), ("le", "+Inf")]
            ),
            handler_calls
        );
        // Its HTTP routes, by template: the stack's readiness wait and reconciliation.
        for route in ["/readyz", "/internal/reconcile"] {
            assert!(
                value(
                    &samples,
                    names::HTTP_REQUESTS,
                    &[
                        ("service", service),
                        ("route", route),
                        ("method", "GET"),
                        ("status", "200")
                    ]
                ) > 0.0,
                "{service}: GET {route} not counted"
            );
        }
    }

    let samples = scrape(&client, &endpoints.order).await;
    // Every order: one POST /orders answered 202.
    let labels = [
        ("service", "order"),
        ("route", "/orders"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(
        value(&samples, names::HTTP_REQUESTS, &labels),
        ORDERS as f64
    );
    assert_eq!(
        value(
            &samples,
            &format!("{}_count", names::HTTP_REQUEST_DURATION),
            &[("service", "order"), ("route", "/orders")]
        ),
        ORDERS as f64
    );
    // Two groups see the paid orders: points and SMS each consumed one per paid order.
    for group in ["points", "sms"] {
        assert_eq!(
            value(
                &samples,
                names::DELIVERIES,
                &[("group", group), ("outcome", outcome::CONSUMED)]
            ),
            report.paid as f64,
            "{group}"
        );
    }
    // The SMS consumer is paced to the gateway: a burst of paid orders waited for it.
    let waits = value(
        &samples,
        names::GATEWAY_RATE_LIMIT_WAITS,
        &[("group", "sms")],
    );
    assert!(
        waits > 0.0,
        "the SMS consumer never waited for its rate limit"
    );
    let waited = value(
        &samples,
        &format!("{}_sum", names::GATEWAY_RATE_LIMIT_WAIT),
        &[("group", "sms")],
    );
    assert!(waited > 0.0, "{waits} waits of no time at all");
    // The pacing keeps the gateway from refusing anything.
    assert_eq!(scraped::sum(&samples, names::GATEWAY_REFUSALS, &[]), None);

    stack.stop().await.expect("graceful stop");
}
