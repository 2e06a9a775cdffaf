//! `spawn_app`: a logging service of its own for each test, started through kit's `testkit`
//! (its own memory broker, its own database, a free port).

use orderflow_kit::testkit;
pub use orderflow_kit::testkit::{Store, TestApp};
use orderflow_logging::{config::LoggingConfig, startup};

/// Starts a logging service on `store`, with its configuration adjusted by `configure`.
pub async fn spawn_app(store: Store, configure: impl FnOnce(&mut LoggingConfig)) -> TestApp {
    let prepared = testkit::prepare("logging", store);
    let mut config = LoggingConfig::new(prepared.config.clone());
    configure(&mut config);
    let application = startup::build(config)
        .await
        .expect("the logging service builds");
    let address = application.address();
    testkit::launch(prepared, address, |stop| {
        tokio::spawn(application.run_until_stopped(stop))
    })
    .await
}
