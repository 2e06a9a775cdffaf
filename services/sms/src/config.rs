//! The SMS service's settings: the common ones every service reads ([`ServiceConfig`])
//! plus these:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `ORDERFLOW_SMS_LATENCY_MS` | how long the gateway takes to accept a text | `10` |
//! | `ORDERFLOW_SMS_RATE_PER_S` | texts per second the gateway accepts; the consumer is paced to it | `50` |
//! | `ORDERFLOW_INSTANCE` | this copy's name, recorded on every text it sends | `$HOSTNAME`, else `sms-1` |

use std::time::Duration;

use orderflow_kit::config::{ensure, env_or, ConfigError, ServiceConfig};

use crate::gateway::SmsGatewaySettings;

/// The service name: its consumer group, its log target, its database name.
pub const SERVICE_NAME: &str = "sms";

/// Where the HTTP API listens unless `ORDERFLOW_HTTP_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8083;

/// The instance name when neither `ORDERFLOW_INSTANCE` nor a hostname is known.
pub const DEFAULT_INSTANCE: &str = "sms-1";

/// Everything the SMS service needs to start.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// Broker, database, HTTP address, consumer settings.
    pub service: ServiceConfig,
    /// How the fake gateway behaves.
    pub gateway: SmsGatewaySettings,
    /// Which copy of the service this is (recorded on each text, so scaled copies can be
    /// told apart in reconciliation).
    pub instance: String,
}

impl SmsConfig {
    /// The common settings as given, the gateway with its defaults, instance `sms-1` (what
    /// `orderflow demo` uses; change the public fields to taste).
    pub fn new(service: ServiceConfig) -> Self {
        SmsConfig {
            service,
            gateway: SmsGatewaySettings::default(),
            instance: DEFAULT_INSTANCE.to_owned(),
        }
    }

    /// Reads every setting from the environment; a bad value is an error naming its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = SmsGatewaySettings::default();
        let latency_ms = env_or(
            "ORDERFLOW_SMS_LATENCY_MS",
            defaults.latency.as_millis() as u64,
        )?;
        let rate_per_s = env_or("ORDERFLOW_SMS_RATE_PER_S", defaults.rate_per_s)?;
        let rate_per_s = ensure(
            "ORDERFLOW_SMS_RATE_PER_S",
            rate_per_s,
            rate_per_s.is_finite() && rate_per_s > 0.0,
            "must be a positive number of texts per second",
        )?;
        Ok(SmsConfig {
            service: ServiceConfig::from_env(SERVICE_NAME, DEFAULT_PORT)?,
            gateway: SmsGatewaySettings {
                latency: Duration::from_millis(latency_ms),
                rate_per_s,
            },
            instance: env_or("ORDERFLOW_INSTANCE", default_instance())?,
        })
    }
}

/// The hostname — in a container, the container id, which is what tells
/// `--scale sms=3` copies apart — or [`DEFAULT_INSTANCE`].
fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_INSTANCE.to_owned())
}
