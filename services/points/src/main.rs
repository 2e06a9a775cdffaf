//! `points-service`: the points service as its own process.
//!
//! ```text
//! ORDERFLOW_BROKER=amqp://guest:guest@127.0.0.1:5672/%2f \
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/points \
//!     cargo run -p orderflow-points --bin points-service
//! ```
//!
//! Every setting comes from the environment (see `orderflow_kit::config`); a bad value stops
//! the start with a message naming the variable. Ctrl-C or SIGTERM stops it gracefully.

use anyhow::Context;
use orderflow_kit::{config, shutdown, telemetry};
use orderflow_points::{config::PointsConfig, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `points-service healthcheck`: the container healthcheck asks /readyz and exits.
    orderflow_kit::http::exit_if_healthcheck(orderflow_points::config::DEFAULT_PORT);
    telemetry::init();
    // A bad setting stops the start before anything connects, with one line naming the
    // variable: the fix is in the setting, not in the code, so no error chain or backtrace.
    let config = config::or_exit("points-service", PointsConfig::from_env());
    let application = startup::build(config)
        .await
        .context("starting the points service")?;
    application.run_until_stopped(shutdown::on_signal()).await
}
