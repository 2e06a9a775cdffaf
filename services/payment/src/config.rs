//! The payment service's settings: the common ones every service reads
//! ([`ServiceConfig`]) plus those of the simulated gateway.
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `ORDERFLOW_PAYMENT_LATENCY_MS` | how long the gateway takes to answer a charge | `5` |
//! | `ORDERFLOW_PAYMENT_FAILURE_RATE` | share of orders the gateway declines ("card declined"), `0`–`1` | `0` |
//! | `ORDERFLOW_PAYMENT_SEED` | seed of those decisions: one seed, one order id, one answer | `42` |
//! | `ORDERFLOW_PAYMENT_CARD_LIMIT_CENTS` | orders above it are declined ("card limit exceeded") | `1000000` |

use std::time::Duration;

use orderflow_kit::config::{ensure, env_or, ConfigError, ServiceConfig};

use crate::gateway::GatewaySettings;

/// The service name: its consumer group, its log target, its database name.
pub const SERVICE_NAME: &str = "payment";

/// Where the HTTP API listens unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8081;

/// Everything the payment service needs to start.
#[derive(Debug, Clone)]
pub struct PaymentConfig {
    /// Broker, database, HTTP address, consumer settings.
    pub service: ServiceConfig,
    /// How the simulated gateway behaves.
    pub gateway: GatewaySettings,
}

impl PaymentConfig {
    /// The common settings as given, the gateway with its defaults (what `orderflow demo`
    /// uses; change the public fields to taste).
    pub fn new(service: ServiceConfig) -> Self {
        PaymentConfig {
            service,
            gateway: GatewaySettings::default(),
        }
    }

    /// Reads every setting from the environment; a bad value is an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = GatewaySettings::default();
        let latency_ms = env_or(
            "ORDERFLOW_PAYMENT_LATENCY_MS",
            defaults.latency.as_millis() as u64,
        )?;
        let failure_rate = env_or("ORDERFLOW_PAYMENT_FAILURE_RATE", defaults.failure_rate)?;
        let failure_rate = ensure(
            "ORDERFLOW_PAYMENT_FAILURE_RATE",
            failure_rate,
            (0.0..=1.0).contains(&failure_rate),
            "must be between 0 and 1",
        )?;
        let card_limit_cents = env_or(
            "ORDERFLOW_PAYMENT_CARD_LIMIT_CENTS",
            defaults.card_limit_cents,
        )?;
        let card_limit_cents = ensure(
            "ORDERFLOW_PAYMENT_CARD_LIMIT_CENTS",
            card_limit_cents,
            card_limit_cents > 0,
            "must be a positive number of cents",
        )?;
        Ok(PaymentConfig {
            service: ServiceConfig::from_env(SERVICE_NAME, DEFAULT_PORT)?,
            gateway: GatewaySettings {
                latency: Duration::from_millis(latency_ms),
                failure_rate,
                seed: env_or("ORDERFLOW_PAYMENT_SEED", defaults.seed)?,
                card_limit_cents,
            },
        })
    }
}
