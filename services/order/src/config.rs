//! Settings of the order service.
//!
//! The order service needs nothing beyond what every service reads (see
//! [`orderflow_kit::config`]): broker, database, HTTP address, consumer concurrency and
//! attempts. It still has a type of its own so that `orderflow`'s in-process stack and the
//! binary build it the same way as the other services, and so a setting of its own can be
//! added later without changing those call sites.

use orderflow_kit::config::{ConfigError, ServiceConfig};

/// The service name: its consumer group, its log target, its database name.
pub const SERVICE_NAME: &str = "order";

/// Where the HTTP API listens unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// Everything the order service is configured with.
#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// The settings every service has.
    pub service: ServiceConfig,
}

impl OrderConfig {
    /// From already-read common settings (the in-process stack and the tests build these).
    pub fn new(service: ServiceConfig) -> Self {
        OrderConfig { service }
    }

    /// From the environment; a bad value is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(OrderConfig::new(ServiceConfig::from_env(
            SERVICE_NAME,
            DEFAULT_PORT,
        )?))
    }
}
