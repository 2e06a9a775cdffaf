//! The logging service's settings: only the common ones ([`ServiceConfig`]). It takes
//! every topic there is ([`orderflow_events::topics::ALL`]), so there is nothing to choose.

use orderflow_kit::config::{ConfigError, ServiceConfig};

/// The service name: its consumer group, its log target, its database name.
pub const SERVICE_NAME: &str = "logging";

/// Where the HTTP API listens unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8084;

/// Everything the logging service needs to start.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// Broker, database, HTTP address, consumer settings.
    pub service: ServiceConfig,
}

impl LoggingConfig {
    /// The settings as given (what `orderflow demo` uses).
    pub fn new(service: ServiceConfig) -> Self {
        LoggingConfig { service }
    }

    /// Reads every setting from the environment; a bad value is an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(LoggingConfig::new(ServiceConfig::from_env(
            SERVICE_NAME,
            DEFAULT_PORT,
        )?))
    }
}
