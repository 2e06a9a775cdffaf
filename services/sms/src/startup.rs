//! What the SMS service is made of: it consumes `payment.succeeded` with
//! [`PaymentSucceededHandler`], paced to the gateway's rate, and serves [`routes`].
//! Connecting, migrating, binding, serving and stopping are the kit's
//! ([`orderflow_kit::service`]).

use std::sync::Arc;

use orderflow_events::topology;
pub use orderflow_kit::service::Application;
use orderflow_kit::{consumer::ConsumerOptions, http::sync_handle, service::Service};

use crate::{
    config::SmsConfig, gateway::SmsGateway, handlers::PaymentSucceededHandler, routes, store,
};

/// Connects, migrates, binds and subscribes; nothing runs until
/// [`Application::run_until_stopped`].
pub async fn build(config: SmsConfig) -> anyhow::Result<Application> {
    let mut service = Service::start(config.service, &store::MIGRATIONS).await?;
    let rate_per_s = config.gateway.rate_per_s;
    let gateway = Arc::new(SmsGateway::new(config.gateway, service.db.clone()));
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
    service.consume(topology::SMS.topics, handler.clone(), options);
    // The same handler serves the synchronous wiring's `POST /internal/handle`. No pacing
    // there: a synchronous caller has no queue to wait in, so over the gateway's rate its
    // request is refused (503), as a real provider's 429 would refuse it.
    let router = routes::router(service.api_state()).merge(sync_handle::handle_routes(handler));
    Ok(service.with_routes(router))
}
