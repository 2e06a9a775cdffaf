//! Building and running the SMS service.
//!
//! [`Application::build`] does everything that can fail at start-up — database connected
//! and migrated, broker connected, port bound — so a caller (the binary, `orderflow demo`,
//! a test) learns of a bad setting before anything runs; [`Application::run_until_stopped`]
//! then serves and consumes until the token is cancelled.

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use orderflow_events::topics;
use orderflow_kit::{consumer::ConsumerOptions, service::Service, shutdown::CancellationToken};

use crate::{
    config::SmsConfig,
    gateway::SmsGateway,
    handlers::PaymentSucceededHandler,
    routes::{self, ApiState},
    store,
};

/// A built, not yet running, SMS service.
pub struct Application {
    service: Service,
    router: Router,
}

impl Application {
    /// Connects, migrates, binds and subscribes.
    pub async fn build(config: SmsConfig) -> anyhow::Result<Application> {
        let mut service = Service::start(config.service, store::MIGRATIONS).await?;
        let rate_per_s = config.gateway.rate_per_s;
        let gateway = Arc::new(SmsGateway::new(config.gateway));
        let handler = PaymentSucceededHandler::new(
            service.db.clone(),
            service.relay.clone(),
            gateway,
            config.instance,
        );
        // Peak shaving: the consumer starts handlers no faster than the gateway accepts
        // texts, so a burst of payments waits in the queue instead of being refused.
        let options = ConsumerOptions {
            rate_per_s: Some(rate_per_s),
            ..service.consumer_options()
        };
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
