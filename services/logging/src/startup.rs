//! What the logging service is made of: it consumes every topic with [`EventLogHandler`]
//! and serves [`routes`]. Connecting, migrating, binding, serving and stopping are the
//! kit's ([`orderflow_kit::service`]).

use orderflow_events::topology;
pub use orderflow_kit::service::Application;
use orderflow_kit::{http::sync_handle, service::Service};

use crate::{config::LoggingConfig, handlers::EventLogHandler, routes, store};

/// Connects, migrates, binds and subscribes; nothing runs until
/// [`Application::run_until_stopped`].
pub async fn build(config: LoggingConfig) -> anyhow::Result<Application> {
    let mut service = Service::start(config.service, &store::MIGRATIONS).await?;
    let handler = EventLogHandler::new(service.db.clone());
    let options = service.consumer_options();
    // Every topic, in a group of its own: the log gets a copy of each message without
    // taking any from the services that act on them.
    service.consume(topology::LOGGING.topics, handler.clone(), options);
    // The same handler serves the synchronous wiring's `POST /internal/handle`.
    let router = routes::router(service.api_state()).merge(sync_handle::handle_routes(handler));
    Ok(service.with_routes(router))
}
