//! `orderflow load`, in short runs: the schedule is kept or its lateness reported, latency
//! counts from the intended send time, every accepted order is counted at every stage,
//! the JSON has every field, and `--out` writes the series and charts (well-formed SVG).
//!
//! ```text
//! cargo test -p orderflow --test load
//! ```
//!
//! The generator tests aim it at a small axum server of their own (an order API that
//! answers at once, or stalls on purpose); the journey tests run the real five services in
//! process on the embedded broker. No assertion is about speed: each checks counts, or a
//! lower bound that a deliberate stall forces.

#[path = "support/rabbitmqctl.rs"]
mod rabbitmqctl;
#[path = "support/svg.rs"]
mod svg;
use rabbitmqctl::rabbitmqctl;

use svg::svg_text;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use clap::Parser;
use orderflow::load::{self, stages::Stage, LoadReport};

/// How the test order API behaves.
#[derive(Default)]
struct Behaviour {
    /// Requests received.
    received: AtomicU64,
    /// Once this many requests were received, the next one holds every request for
    /// `stall` (all of them queue on one lock, as behind a stalled database).
    stall_after: Option<u64>,
    stall: Duration,
    stalled: AtomicBool,
    lock: tokio::sync::Mutex<()>,
}

async fn place(State(behaviour): State<Arc<Behaviour>>) -> (StatusCode, Json<serde_json::Value>) {
    let number = behaviour.received.fetch_add(1, Ordering::SeqCst);
    let _serialised = behaviour.lock.lock().await;
    if behaviour.stall_after.is_some_and(|after| number >= after)
        && !behaviour.stalled.swap(true, Ordering::SeqCst)
    {
        tokio::time::sleep(behaviour.stall).await;
    }
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "order_id": uuid::Uuid::now_v7() })),
    )
}

/// Serves `POST /orders` on a free loopback port; returns its base URL.
async fn order_api(behaviour: Arc<Behaviour>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/orders", post(place))
        .with_state(behaviour);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// `orderflow load` options from words, as on the command line, with no broker from the
/// environment (the generator tests watch none).
fn args(words: &[&str]) -> load::Args {
    let mut args =
        load::Args::try_parse_from(std::iter::once("load").chain(words.iter().copied())).unwrap();
    if args.target.is_some() {
        args.broker = None;
    }
    args
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orderflow-load-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// One thread for the generator and the server: blocking it stalls the dispatcher itself,
// the way a saturated machine would.
#[tokio::test(flavor = "current_thread")]
async fn a_dispatcher_that_falls_behind_reports_its_lateness_and_still_sends_everything() {
    let url = order_api(Arc::new(Behaviour::default())).await;
    // 0.7 s in (the run's clock starts 0.2 s after the call), the thread is blocked for
    // 500 ms: the ~25 requests due meanwhile cannot leave on time.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        std::thread::sleep(Duration::from_millis(500));
    });
    let report = load::measure(&args(&[
        "--target",
        &url,
        "--rate",
        "50",
        "--duration",
        "2s",
        "--late-after",
        "10ms",
    ]))
    .await
    .unwrap();
    let totals = report.totals;
    assert_eq!(totals.offered, 100, "{totals:?}");
    assert_eq!(
        totals.sent, 100,
        "late requests are sent, not skipped: {totals:?}"
    );
    assert_eq!(totals.dropped, 0, "{totals:?}");
    assert_eq!(totals.accepted, 100, "{totals:?}");
    assert!(
        totals.late >= 15,
        "the stall made requests late: {totals:?}"
    );
    assert!(
        report.send_lag_ms.max_ms >= 400.0,
        "the send lag shows the stall: {:?}",
        report.send_lag_ms
    );
    // Latency counts from the intended time: the late requests were answered at once
    // once sent, yet their latency holds the time they waited to be sent. The ~20 due in
    // the first 400 ms of the block waited 100 ms or more: over a tenth of the 100.
    let (latency, lag) = (report.latency_ms, report.send_lag_ms);
    assert!(latency.p90_ms >= 100.0, "{latency:?}");
    // Each latency is its send lag plus the answer's time, so no percentile of the
    // latency can be below the same percentile of the lag.
    assert!(
        latency.p50_ms >= lag.p50_ms
            && latency.p90_ms >= lag.p90_ms
            && latency.p99_ms >= lag.p99_ms,
        "latency {latency:?} below send lag {lag:?}"
    );
    let late_in_series: u64 = report.series.iter().map(|second| second.late).sum();
    assert_eq!(late_in_series, totals.late);
}

#[tokio::test]
async fn a_stalled_endpoint_shows_in_the_tail_latency() {
    let behaviour = Arc::new(Behaviour {
        stall_after: Some(60),
        stall: Duration::from_millis(600),
        ..Behaviour::default()
    });
    let url = order_api(behaviour.clone()).await;
    let report = load::measure(&args(&[
        "--target",
        &url,
        "--rate",
        "100",
        "--duration",
        "2s",
    ]))
    .await
    .unwrap();
    assert_eq!(report.totals.accepted, 200, "{:?}", report.totals);
    assert_eq!(behaviour.received.load(Ordering::SeqCst), 200);
    // ~60 requests are due during the 600 ms stall; each waits from its intended time
    // until the stall ends. The request that stalled waited 600 ms itself.
    let latency = report.latency_ms;
    assert!(latency.max_ms >= 600.0, "{latency:?}");
    assert!(latency.p99_ms >= 400.0, "{latency:?}");
    assert!(
        latency.p90_ms >= 100.0,
        "a quarter of the requests waited: {latency:?}"
    );
    assert!(latency.p50_ms < latency.p99_ms, "{latency:?}");
    // The stall is in the seconds whose requests suffered it, not smeared over the run.
    let worst = report
        .series
        .iter()
        .max_by(|a, b| a.latency_ms.max_ms.total_cmp(&b.latency_ms.max_ms))
        .unwrap();
    assert!(worst.latency_ms.max_ms >= 600.0, "{worst:?}");
}

#[tokio::test]
async fn requests_due_while_the_in_flight_limit_is_reached_are_dropped_and_counted() {
    let behaviour = Arc::new(Behaviour {
        stall_after: Some(10),
        stall: Duration::from_millis(500),
        ..Behaviour::default()
    });
    let url = order_api(behaviour.clone()).await;
    let report = load::measure(&args(&[
        "--target",
        &url,
        "--rate",
        "100",
        "--duration",
        "2s",
        "--max-in-flight",
        "4",
    ]))
    .await
    .unwrap();
    let totals = report.totals;
    assert_eq!(totals.offered, 200, "{totals:?}");
    assert_eq!(totals.sent + totals.dropped, totals.offered, "{totals:?}");
    // During the 500 ms stall four requests are out and ~46 more fall due.
    assert!(totals.dropped >= 30, "{totals:?}");
    assert_eq!(
        behaviour.received.load(Ordering::SeqCst),
        totals.sent,
        "the server saw exactly the requests counted as sent"
    );
    assert_eq!(totals.accepted, totals.sent, "{totals:?}");
}

/// Every stage's count, from the report.
fn orders_at(report: &LoadReport, stage: Stage) -> u64 {
    report
        .stages
        .iter()
        .find(|summary| summary.stage == stage)
        .map_or_else(
            || panic!("no {stage:?} in {:?}", report.stages),
            |s| s.orders,
        )
}

/// Checks a run of `orders` demo orders: every accepted order reached every stage, the
/// per-second series add up, every group was sampled.
fn assert_every_stage_counted(report: &LoadReport, orders: u64) {
    let accepted = report.totals.accepted;
    assert_eq!(accepted, orders, "{:?}", report.totals);
    assert_eq!(report.settled, Some(accepted), "{}", report.render());
    // Every tenth demo order is over the card limit.
    let (paid, failed) = (
        orders_at(report, Stage::Paid),
        orders_at(report, Stage::Failed),
    );
    assert_eq!(
        (paid, failed),
        (orders - orders / 10, orders / 10),
        "{}",
        report.render()
    );
    assert_eq!(orders_at(report, Stage::Placed), accepted);
    assert_eq!(orders_at(report, Stage::Points), paid);
    assert_eq!(orders_at(report, Stage::Sms), paid);
    assert_eq!(orders_at(report, Stage::Logged), accepted);
    assert_eq!(report.other_orders, 0);
    // The per-second series add up to the totals.
    for stage in Stage::ALL {
        let per_second: u64 = report
            .series
            .iter()
            .map(|second| second.stages[&stage])
            .sum();
        assert_eq!(per_second, orders_at(report, stage), "{stage:?}");
    }
    let accepted_per_second: u64 = report.series.iter().map(|second| second.accepted).sum();
    assert_eq!(accepted_per_second, accepted);
    // Each stage comes after the one before it, measured from the intended send time.
    let p50 = |stage| {
        report
            .stages
            .iter()
            .find(|summary| summary.stage == stage)
            .unwrap()
            .latency_ms
            .p50_ms
    };
    assert!(p50(Stage::Placed) <= p50(Stage::Paid));
    assert!(p50(Stage::Paid) <= p50(Stage::Sms));
    // Every group was sampled.
    let groups: Vec<&str> = report
        .backlog
        .iter()
        .map(|group| group.group.as_str())
        .collect();
    assert_eq!(
        groups,
        [
            "order",
            "payment",
            "points",
            "sms",
            "logging",
            "load-observer"
        ]
    );
    for group in &report.backlog {
        assert!(group.peak.is_some(), "{group:?}");
    }
}

#[tokio::test]
async fn every_accepted_order_is_counted_at_every_stage_of_the_in_process_stack() {
    let mut args = args(&["--rate", "50", "--duration", "2s", "--drain", "60s"]);
    args.broker = None;
    args.postgres = None;
    let report = load::measure(&args).await.unwrap();
    assert_every_stage_counted(&report, 100);
}

#[tokio::test]
async fn texts_go_out_no_faster_than_the_gateway_limit_while_the_queue_holds_the_rest() {
    // 30 orders/s for 2 s against a gateway taking 10 texts/s: the texts must take about
    // six seconds, the queue holding what the gateway cannot take yet.
    let limit = 10;
    let mut args = args(&[
        "--rate",
        "30",
        "--duration",
        "2s",
        "--sms-rate",
        &limit.to_string(),
        "--drain",
        "60s",
    ]);
    args.broker = None;
    args.postgres = None;
    let report = load::measure(&args).await.unwrap();
    assert_every_stage_counted(&report, 60);
    let per_second: Vec<u64> = report
        .series
        .iter()
        .map(|row| row.stages.get(&Stage::Sms).copied().unwrap_or(0))
        .collect();
    // Handlers start one every 1/limit s, so a second of the gateway's clock holds
    // `limit` texts, one more when a second's first start falls right on its edge.
    assert!(
        per_second.iter().all(|&texts| texts <= limit + 1),
        "texts per second above the gateway's limit of {limit}: {per_second:?}"
    );
    assert!(
        per_second.iter().filter(|&&texts| texts > 0).count() >= 4,
        "the texts were not spread over the seconds the limit needs: {per_second:?}"
    );
}

#[tokio::test]
async fn on_rabbitmq_every_stage_is_counted_and_the_observer_queue_is_removed_after() {
    let Some(base) = orderflow_kit::testenv::require("ORDERFLOW_AMQP_URL", "RabbitMQ") else {
        return;
    };
    // A virtual host of the test's own: the services' group queues are nobody else's.
    let vhost = format!("orderflow-load-{}", uuid::Uuid::now_v7().simple());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    let mut args = args(&["--rate", "20", "--duration", "2s", "--drain", "90s"]);
    args.broker = Some(format!("{server}/{vhost}"));
    args.postgres = None;
    let report = load::measure(&args).await;
    let queues = rabbitmqctl(&["list_queues", "-p", &vhost, "name"]);
    rabbitmqctl(&["delete_vhost", &vhost]);
    let report = report.unwrap();
    assert_every_stage_counted(&report, 40);
    let observer = report.observer_group.as_deref().unwrap();
    assert!(
        queues.lines().any(|line| line.trim() == "payment"),
        "{queues}"
    );
    assert!(
        !queues.lines().any(|line| line.trim().starts_with(observer)),
        "the observer's queues were left behind: {queues}"
    );
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn the_command_prints_json_with_every_field_and_writes_the_series_and_charts() {
    let out = scratch_dir();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "load",
            "--rate",
            "20",
            "--duration",
            "3s",
            "--burst",
            "3x:1s@1s",
        ])
        .args(["--drain", "60s", "--json", "--out"])
        .arg(&out)
        .env_remove("ORDERFLOW_BROKER")
        .env_remove("ORDERFLOW_DEMO_POSTGRES")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        keys(&report),
        [
            "backlog",
            "elapsed_s",
            "latency_base_ms",
            "latency_burst_ms",
            "latency_ms",
            "logging_outage",
            "observer_group",
            "other_orders",
            "send_lag_ms",
            "series",
            "settled",
            "setup",
            "stages",
            "totals",
            "unreadable"
        ]
    );
    let percentiles = ["count", "max_ms", "p50_ms", "p90_ms", "p99_9_ms", "p99_ms"];
    for field in [
        "latency_ms",
        "latency_base_ms",
        "latency_burst_ms",
        "send_lag_ms",
    ] {
        assert_eq!(keys(&report[field]), percentiles, "{field}");
    }
    assert_eq!(
        keys(&report["totals"]),
        [
            "accepted",
            "accepted_per_s",
            "dropped",
            "errors",
            "late",
            "offered",
            "offered_per_s",
            "sent",
            "timeouts"
        ]
    );
    assert_eq!(
        keys(&report["setup"]),
        [
            "arrivals",
            "backend",
            "broker",
            "late_after_ms",
            "load_average",
            "logging_down",
            "machine",
            "max_in_flight",
            "profile",
            "seed",
            "sms_limit_per_s",
            "target",
            "timeout_ms"
        ]
    );
    // The load average at the start, as /proc/loadavg gave it (this is Linux).
    let load_average = &report["setup"]["load_average"];
    assert_eq!(keys(load_average), ["fifteen_min", "five_min", "one_min"]);
    for field in ["one_min", "five_min", "fifteen_min"] {
        assert!(
            load_average[field].as_f64().is_some_and(|load| load >= 0.0),
            "{load_average}"
        );
    }
    assert_eq!(
        keys(&report["setup"]["profile"]),
        ["burst", "duration_s", "rate_per_s"]
    );
    assert_eq!(
        keys(&report["setup"]["profile"]["burst"]),
        ["length_s", "multiplier", "start_s"]
    );
    // 20/s for 3 s with the second second at 60/s: 100 orders.
    assert_eq!(report["totals"]["offered"], 100);
    assert_eq!(report["settled"], report["totals"]["accepted"]);
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| {
            assert_eq!(keys(stage), ["latency_ms", "orders", "repeats", "stage"]);
            stage["stage"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        stages,
        ["placed", "paid", "failed", "points", "sms", "logged"]
    );
    for group in report["backlog"].as_array().unwrap() {
        assert_eq!(keys(group), ["group", "last", "peak"]);
    }
    let series = report["series"].as_array().unwrap();
    assert!(series.len() >= 3, "{series:?}");
    assert_eq!(
        keys(&series[0]),
        [
            "accepted",
            "backlog",
            "dropped",
            "errors",
            "late",
            "latency_ms",
            "offered",
            "second",
            "sent",
            "stages",
            "timeouts"
        ]
    );
    assert_eq!(
        keys(&series[0]["stages"]),
        ["failed", "logged", "paid", "placed", "points", "sms"]
    );
    assert_eq!(series[1]["offered"], 60, "the burst second");

    // --out: the series as CSV (a header and one line per second) and JSON, the report.
    let csv = std::fs::read_to_string(out.join("series.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), series.len() + 1, "{csv}");
    assert!(
        lines[0].starts_with("second,offered,sent,dropped,late,accepted"),
        "{csv}"
    );
    assert!(
        lines[0].contains("sms_per_s") && lines[0].contains("backlog_sms"),
        "{csv}"
    );
    let columns = lines[0].split(',').count();
    assert!(
        lines.iter().all(|line| line.split(',').count() == columns),
        "{csv}"
    );
    let series_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("series.json")).unwrap()).unwrap();
    assert_eq!(&series_file, &report["series"]);
    let report_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report_file["totals"], report["totals"]);

    // The charts: well-formed SVG, each with its title, axis labels, legend and set-up.
    let peak_shaving = svg_text(&out.join("peak-shaving.svg"));
    for expected in [
        "Peak shaving: offered load, orders accepted, SMS sent and the SMS backlog",
        "time since the start of the run (s)",
        "orders/s and texts/s",
        "SMS backlog, messages waiting",
        "offered load",
        "orders accepted by the API",
        "SMS sent (texts/s)",
        "SMS gateway limit (50 texts/s)",
        "burst (1–2 s)",
        "Set-up: in-process stack on memory; 20 orders/s uniform for 3 s",
    ] {
        assert!(
            peak_shaving.iter().any(|text| text.contains(expected)),
            "no `{expected}` in the peak-shaving chart: {peak_shaving:?}"
        );
    }
    // The caption, on one line or two, states the load average at the start.
    let caption = peak_shaving
        .iter()
        .skip_while(|text| !text.contains("Set-up:"))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let stated = format!(
        "load average {:.2} / {:.2} / {:.2} (1 / 5 / 15 min) at the start",
        load_average["one_min"].as_f64().unwrap(),
        load_average["five_min"].as_f64().unwrap(),
        load_average["fifteen_min"].as_f64().unwrap()
    );
    assert!(caption.contains(&stated), "no `{stated}` in `{caption}`");
    let latency = svg_text(&out.join("latency.svg"));
    for expected in [
        "latency (ms, log scale)",
        "p50",
        "p99.9",
        "max (dashed)",
        "Set-up:",
        "load average",
    ] {
        assert!(
            latency.iter().any(|text| text.contains(expected)),
            "no `{expected}` in the latency chart: {latency:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Not a test of speed (nothing here asserts one): a measuring run, started by hand, that
/// prints what the generator sustains against an endpoint that answers at once.
///
/// ```text
/// ORDERFLOW_LOAD_RATE=20000 cargo test --release -p orderflow --test load generator_capacity -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measuring run: start it by hand with --ignored --nocapture"]
async fn generator_capacity_against_a_trivial_endpoint() {
    let rate = std::env::var("ORDERFLOW_LOAD_RATE").unwrap_or_else(|_| "20000".into());
    let url = order_api(Arc::new(Behaviour::default())).await;
    let report = load::measure(&args(&[
        "--target",
        &url,
        "--rate",
        &rate,
        "--duration",
        "10s",
    ]))
    .await
    .unwrap();
    let totals = report.totals;
    assert_eq!(totals.sent + totals.dropped, totals.offered, "{totals:?}");
    println!("{}", report.render());
}

/// `--get PATH`: the generator fetches a trivial endpoint instead of placing orders (its
/// own ceiling is measured so); every scheduled request reaches the server as a GET of
/// that path, and no order is posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sends_every_scheduled_request_to_the_trivial_endpoint() {
    let gets = Arc::new(AtomicU64::new(0));
    let counted = gets.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
        .route("/orders", post(|| async { StatusCode::IM_A_TEAPOT }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let report = load::measure(&args(&[
        "--target",
        &format!("http://{address}"),
        "--get",
        "/healthz",
        "--rate",
        "200",
        "--duration",
        "1s",
    ]))
    .await
    .unwrap();
    assert_eq!(report.totals.offered, 200, "{:?}", report.totals);
    assert_eq!(report.totals.accepted, 200, "{:?}", report.totals);
    assert_eq!(
        report.totals.errors, 0,
        "no POST /orders: {:?}",
        report.totals
    );
    assert_eq!(gets.load(Ordering::SeqCst), 200);
    assert!(report.stages.is_empty(), "nothing watched");
}
