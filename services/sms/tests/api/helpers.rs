//! `spawn_app`: an SMS service of its own for each test, started through kit's `testkit`
//! (its own memory broker, its own database, a free port).

use orderflow_kit::testkit;
pub use orderflow_kit::testkit::{drain, Store, TestApp, PATIENCE};
use orderflow_sms::{config::SmsConfig, startup};

/// Starts an SMS service on `store`, with its configuration adjusted by `configure`.
pub async fn spawn_app(store: Store, configure: impl FnOnce(&mut SmsConfig)) -> TestApp {
    let prepared = testkit::prepare("sms", store);
    let mut config = SmsConfig::new(prepared.config.clone());
    configure(&mut config);
    let application = startup::build(config)
        .await
        .expect("the SMS service builds");
    let address = application.address();
    testkit::launch(prepared, address, |stop| {
        tokio::spawn(application.run_until_stopped(stop))
    })
    .await
}
