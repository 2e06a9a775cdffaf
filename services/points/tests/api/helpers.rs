//! `spawn_app`: a points service of its own for each test, started through kit's `testkit`
//! (its own memory broker, its own database, a free port).

use orderflow_kit::testkit;
pub use orderflow_kit::testkit::{drain, Store, TestApp, PATIENCE};
use orderflow_points::{config::PointsConfig, startup};

/// Starts a points service on `store`, with its configuration adjusted by `configure`.
pub async fn spawn_app(store: Store, configure: impl FnOnce(&mut PointsConfig)) -> TestApp {
    let prepared = testkit::prepare("points", store);
    let mut config = PointsConfig::new(prepared.config.clone());
    configure(&mut config);
    let application = startup::build(config)
        .await
        .expect("the points service builds");
    let address = application.address();
    testkit::launch(prepared, address, |stop| {
        tokio::spawn(application.run_until_stopped(stop))
    })
    .await
}
