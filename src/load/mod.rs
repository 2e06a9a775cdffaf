//! `orderflow load`: an open-loop load test of the order API, with the journey behind it
//! measured stage by stage and the backlog of every consumer group sampled.
//!
//! ```text
//! orderflow load [--rate 20] [--duration 30s] [--burst 10x:10s@10s] [--arrivals uniform|poisson]
//!                [--seed 1] [--target http://127.0.0.1:8080 [--broker URL] [--logging-url URL]]
//!                [--wiring async|sync | --compare] [--logging-down 20s@10s] [--sms-rate 100000]
//!                [--get /healthz] [--json] [--out DIR]
//! ```
//!
//! Without `--target` the five services run in this process on the embedded broker (no
//! set-up), as in `orderflow demo`; `--broker amqp://…` or `kafka://…` puts that stack on a
//! real broker. With `--target` the orders go to running services; `--broker` (their
//! broker) adds the stages and backlogs, `--logging-url` the *logged* stage.
//!
//! The map, in the order a request meets it:
//!
//! | file | what |
//! | --- | --- |
//! | `args.rs` | the command line |
//! | `schedule.rs` | the load profile and arrivals → every request's intended send time |
//! | `generator.rs` | the open-loop dispatcher: on time, bounded in flight, drops and lateness counted |
//! | `order_api.rs` | one `POST /orders` and its outcome |
//! | `recorder.rs` | counts and latencies per second, from the intended time |
//! | `latency.rs` | HdrHistogram and the percentiles read from it |
//! | `observer.rs` | a consumer group of the run's own: when each order reached each stage |
//! | `logged.rs` | the *logged* stage, asked of the logging service |
//! | `stages.rs` | the stages and every order's journey through them |
//! | `backlog.rs` | every group's backlog, sampled through the broker abstraction |
//! | `outage.rs` | `--logging-down`: the logging service stopped and started again mid-run |
//! | `outage_chart.rs` | `logging-down.svg`: the API and the log's backlog through the outage |
//! | `cleanup.rs` | the observer's group removed after the run (RabbitMQ keeps queues) |
//! | `load_average.rs` | the machine's load average at the start, for every caption |
//! | `run.rs` | one run: target up, observer declared, load sent, flow drained, report built |
//! | `series.rs` | the per-second series, `series.csv` and `series.json` |
//! | `report.rs` | the report `--json` prints, and the table |
//! | `charts.rs` | the SVG charts: peak shaving, latency over time |
//! | `wiring.rs` | `--wiring`: the in-process order service through the queue or calling the others in the request |
//! | `compare.rs` | `--compare`: both wirings under one load, side by side (table, JSON) |
//! | `compare_chart.rs` | `compare.svg`: the side-by-side bar chart |

mod args;
pub mod backlog;
pub mod charts;
pub mod cleanup;
pub mod compare;
pub mod compare_chart;
pub mod generator;
pub mod latency;
pub mod load_average;
pub mod logged;
pub mod observer;
pub mod order_api;
pub mod outage;
pub mod outage_chart;
pub mod recorder;
pub mod report;
mod run;
pub mod schedule;
pub mod series;
pub mod stages;
pub mod wiring;

pub use args::Args;
pub use compare::CompareReport;
pub use report::LoadReport;
pub use run::{measure, run};
