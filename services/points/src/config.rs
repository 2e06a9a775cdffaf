//! The points service's settings: only the common ones ([`ServiceConfig`]); the rule
//! "one point per whole yuan" is business logic, not a knob (see [`crate::handlers`]).

use orderflow_kit::config::{ConfigError, ServiceConfig};

/// The service name: its consumer group, its log target, its database name.
pub const SERVICE_NAME: &str = "points";

/// Where the HTTP API listens unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8082;

/// Everything the points service needs to start.
#[derive(Debug, Clone)]
pub struct PointsConfig {
    /// Broker, database, HTTP address, consumer settings.
    pub service: ServiceConfig,
}

impl PointsConfig {
    /// The settings as given (what `orderflow demo` uses).
    pub fn new(service: ServiceConfig) -> Self {
        PointsConfig { service }
    }

    /// Reads every setting from the environment; a bad value is an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(PointsConfig::new(ServiceConfig::from_env(
            SERVICE_NAME,
            DEFAULT_PORT,
        )?))
    }
}
