//! Settings of the order service.
//!
//! What every service reads (see [`orderflow_kit::config`]): broker, database, HTTP
//! address, consumer concurrency and attempts; and one setting of its own,
//! `ORDERFLOW_WIRING` ([`crate::wiring`]): `async` (the default) or `sync`, the load
//! test's baseline that calls the other services inside `POST /orders`.

use orderflow_kit::config::{ConfigError, ServiceConfig};

use crate::wiring::{Downstream, Wiring};

/// The service name: its consumer group, its log target, its database name.
pub const SERVICE_NAME: &str = "order";

/// Where the HTTP API listens unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// Everything the order service is configured with.
#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// The settings every service has.
    pub service: ServiceConfig,
    /// Through the queue (the default) or by calling the other services in the request.
    pub wiring: Wiring,
}

impl OrderConfig {
    /// From already-read common settings (the in-process stack and the tests build these).
    pub fn new(service: ServiceConfig) -> Self {
        OrderConfig {
            service,
            wiring: Wiring::Async,
        }
    }

    /// The synchronous baseline: `POST /orders` calls `downstream` in turn.
    pub fn with_sync_wiring(self, downstream: Downstream) -> Self {
        OrderConfig {
            wiring: Wiring::Sync(downstream),
            ..self
        }
    }

    /// From the environment; a bad value is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(OrderConfig {
            service: ServiceConfig::from_env(SERVICE_NAME, DEFAULT_PORT)?,
            wiring: Wiring::from_env()?,
        })
    }
}
