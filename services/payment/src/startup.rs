//! What the payment service is made of: it consumes `order.placed` with
//! [`OrderPlacedHandler`], which charges through the simulated [`Gateway`], and serves
//! [`routes`]. Connecting, migrating, binding, serving and stopping are the kit's
//! ([`orderflow_kit::service`]).

use orderflow_events::topology;
pub use orderflow_kit::service::Application;
use orderflow_kit::{http::sync_handle, service::Service};

use crate::{
    config::PaymentConfig,
    gateway::Gateway,
    handlers::OrderPlacedHandler,
    routes::{self, ApiState},
    store,
};

/// Connects, migrates, binds and subscribes; nothing runs until
/// [`Application::run_until_stopped`].
pub async fn build(config: PaymentConfig) -> anyhow::Result<Application> {
    let mut service = Service::start(config.service, &store::MIGRATIONS).await?;
    let gateway = Gateway::new(config.gateway, service.db.clone());
    let handler =
        OrderPlacedHandler::new(service.db.clone(), service.relay.clone(), gateway.clone());
    let options = service.consumer_options();
    // The same handler serves the synchronous wiring's `POST /internal/handle`.
    service.consume(topology::PAYMENT.topics, handler.clone(), options);
    let router = routes::router(ApiState {
        db: service.db.clone(),
        relay: service.relay.clone(),
        gateway,
    })
    .merge(sync_handle::handle_routes(handler));
    Ok(service.with_routes(router))
}
