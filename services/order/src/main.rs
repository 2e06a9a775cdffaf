//! `order-service`: the order service as a process of its own, configured only through
//! environment variables (see `orderflow_kit::config`). Stops gracefully on Ctrl-C or
//! SIGTERM.

use anyhow::Context;
use orderflow_order::{config::OrderConfig, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `order-service healthcheck`: the container healthcheck asks /readyz and exits.
    orderflow_kit::http::exit_if_healthcheck(orderflow_order::config::DEFAULT_PORT);
    orderflow_kit::telemetry::init();
    // A bad setting stops the start before anything connects anywhere, with one line that
    // names the variable (not an error chain with a backtrace: the fix is in the setting,
    // not in the code).
    let config = orderflow_kit::config::or_exit("order-service", OrderConfig::from_env());
    let application = startup::build(config)
        .await
        .context("starting the order service")?;
    tracing::info!(address = %application.address(), "order service listening");
    application
        .run_until_stopped(orderflow_kit::shutdown::on_signal())
        .await
}
