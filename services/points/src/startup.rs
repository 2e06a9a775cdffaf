//! Building and running the points service.
//!
//! [`Application::build`] does everything that can fail at start-up — database connected
//! and migrated, broker connected, port bound — so a caller (the binary, `orderflow demo`,
//! a test) learns of a bad setting before anything runs; [`Application::run_until_stopped`]
//! then serves and consumes until the token is cancelled.

use std::net::SocketAddr;

use axum::Router;
use orderflow_events::topics;
use orderflow_kit::{service::Service, shutdown::CancellationToken};

use crate::{
    config::PointsConfig,
    handlers::PaymentSucceededHandler,
    routes::{self, ApiState},
    store,
};

/// A built, not yet running, points service.
pub struct Application {
    service: Service,
    router: Router,
}

impl Application {
    /// Connects, migrates, binds and subscribes.
    pub async fn build(config: PointsConfig) -> anyhow::Result<Application> {
        let mut service = Service::start(config.service, store::MIGRATIONS).await?;
        let handler = PaymentSucceededHandler::new(service.db.clone(), service.relay.clone());
        let options = service.consumer_options();
        service.consume(&[topics::PAYMENT_SUCCEEDED], handler, options);
        let router = routes::router(ApiState {
            db: service.db.clone(),
            relay: service.relay.clone(),
        });
        Ok(Application { service, router })
    }

    /// Where the HTTP API listens (the real port when port 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.service.address()
    }

    /// Serves and consumes until `shutdown` is cancelled, then stops gracefully.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(self.router, shutdown).await
    }
}
