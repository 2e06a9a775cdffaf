//! What the order service is made of: it consumes `payment.succeeded` and
//! `payment.failed` with [`PaymentOutcomeHandler`] and serves [`routes`] (`POST /orders`
//! among them). Connecting, migrating, binding, serving and stopping are the kit's
//! ([`orderflow_kit::service`]).

use std::sync::Arc;

pub use orderflow_events::topology;
use orderflow_kit::service::Application;
use orderflow_kit::service::Service;

use crate::{
    config::OrderConfig,
    handlers::PaymentOutcomeHandler,
    routes::{self, OrderState},
    store,
    wiring::{SyncChain, Wiring},
};

/// Connects, migrates, binds and subscribes; nothing runs until
/// [`Application::run_until_stopped`].
pub async fn build(config: OrderConfig) -> anyhow::Result<Application> {
    let mut service = Service::start(config.service, &store::MIGRATIONS).await?;
    let handler = Arc::new(PaymentOutcomeHandler::new(service.db.clone()));
    let options = service.consumer_options();
    service.consume(topology::ORDER.topics, handler, options);
    let chain = match config.wiring {
        Wiring::Async => None,
        Wiring::Sync(downstream) => {
            tracing::warn!(
                ?downstream,
                "ORDERFLOW_WIRING=sync: POST /orders calls the other services in the request (the load test's baseline, not for production)"
            );
            Some(Arc::new(SyncChain::new(downstream, service.db.clone())?))
        }
    };
    let router = routes::router(OrderState {
        api: service.api_state(),
        chain,
    });
    Ok(service.with_routes(router))
}
