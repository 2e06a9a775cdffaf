//! What the points service is made of: it consumes `payment.succeeded` with
//! [`PaymentSucceededHandler`] and serves [`routes`]. Connecting, migrating, binding,
//! serving and stopping are the kit's ([`orderflow_kit::service`]).

use orderflow_events::topology;
pub use orderflow_kit::service::Application;
use orderflow_kit::{http::sync_handle, service::Service};

use crate::{config::PointsConfig, handlers::PaymentSucceededHandler, routes, store};

/// Connects, migrates, binds and subscribes; nothing runs until
/// [`Application::run_until_stopped`].
pub async fn build(config: PointsConfig) -> anyhow::Result<Application> {
    let mut service = Service::start(config.service, &store::MIGRATIONS).await?;
    let handler = PaymentSucceededHandler::new(service.db.clone(), service.relay.clone());
    let options = service.consumer_options();
    // The same handler serves the synchronous wiring's `POST /internal/handle`.
    service.consume(topology::POINTS.topics, handler.clone(), options);
    let router = routes::router(service.api_state()).merge(sync_handle::handle_routes(handler));
    Ok(service.with_routes(router))
}
