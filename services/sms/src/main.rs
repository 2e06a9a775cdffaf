//! `sms-service`: the SMS service as its own process.
//!
//! ```text
//! ORDERFLOW_BROKER=amqp://guest:guest@127.0.0.1:5672/%2f \
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/sms \
//! ORDERFLOW_SMS_RATE_PER_S=20 ORDERFLOW_INSTANCE=sms-2 \
//!     cargo run -p orderflow-sms --bin sms-service
//! ```
//!
//! Every setting comes from the environment (see `orderflow_sms::config`); a bad value stops
//! the start with a message naming the variable. Ctrl-C or SIGTERM stops it gracefully.

use anyhow::Context;
use orderflow_kit::{config, shutdown, telemetry};
use orderflow_sms::{config::SmsConfig, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `sms-service healthcheck`: the container healthcheck asks /readyz and exits.
    orderflow_kit::http::exit_if_healthcheck(orderflow_sms::config::DEFAULT_PORT);
    telemetry::init();
    // A bad setting stops the start before anything connects, with one line naming the
    // variable: the fix is in the setting, not in the code, so no error chain or backtrace.
    let config = config::or_exit("sms-service", SmsConfig::from_env());
    let application = startup::build(config)
        .await
        .context("starting the SMS service")?;
    application.run_until_stopped(shutdown::on_signal()).await
}
