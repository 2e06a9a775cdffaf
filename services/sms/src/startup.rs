//! What the SMS service is made of: it consumes `payment.succeeded` with
//! [`PaymentSucceededHandler`], paced to the gateway's rate, and serves [`routes`].
//! Connecting, migrating, binding, serving and stopping are the kit's
//! ([`orderflow_kit::service`]).

use std::sync::Arc;

use orderflow_events::topology;
pub use orderflow_kit::service::Application;
use orderflow_kit::{consumer::ConsumerOptions, service::Service};

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
    service.consume(topology::SMS.topics, handler, options);
    let router = routes::router(service.api_state());
    Ok(service.with_routes(router))
}
