//! `spawn_app`: a payment service of its own for each test, started through kit's `testkit`
//! (its own memory broker, its own database, a free port).

use std::time::Duration;

use orderflow_kit::testkit;
pub use orderflow_kit::testkit::{drain, Store, TestApp, PATIENCE};
use orderflow_payment::{config::PaymentConfig, startup};

/// Starts a payment service on `store`, with its configuration adjusted by `configure`.
pub async fn spawn_app(store: Store, configure: impl FnOnce(&mut PaymentConfig)) -> TestApp {
    let prepared = testkit::prepare("payment", store);
    let mut config = PaymentConfig::new(prepared.config.clone());
    config.gateway.latency = Duration::from_millis(1);
    configure(&mut config);
    let application = startup::build(config)
        .await
        .expect("the payment service builds");
    let address = application.address();
    testkit::launch(prepared, address, |stop| {
        tokio::spawn(application.run_until_stopped(stop))
    })
    .await
}
