//! Wiring: the kit's [`Service`] with the order service's tables, payment consumer and
//! routes. [`Application::build`] does everything that can fail at start-up (database,
//! migrations, broker, port), so a caller learns of a bad setting before anything runs.

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use orderflow_kit::{service::Service, shutdown::CancellationToken};

use crate::{
    config::OrderConfig,
    handlers::{self, PaymentOutcomeHandler},
    routes::{self, ApiState},
    store,
};

/// A built order service, ready to run.
pub struct Application {
    service: Service,
    router: Router,
}

impl Application {
    /// Connects and migrates the database, connects the broker, binds the port and
    /// declares the payment consumer.
    pub async fn build(config: OrderConfig) -> anyhow::Result<Application> {
        let mut service = Service::start(config.service, store::MIGRATIONS).await?;
        let options = service.consumer_options();
        service.consume(
            &handlers::TOPICS,
            Arc::new(PaymentOutcomeHandler::new(service.db.clone())),
            options,
        );
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

    /// Serves HTTP, relays the outbox and consumes payment outcomes until `shutdown` is
    /// cancelled, then stops in order (see [`Service::run`]).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(self.router, shutdown).await
    }
}
