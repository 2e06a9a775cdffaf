//! Configuration from environment variables.
//!
//! Every service reads the same names, so one `.env`, one compose file and one
//! `scripts/up.sh` configure them all:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `ORDERFLOW_BROKER` | broker URL (`memory://`, `amqp://…`, `kafka://…`) | `memory://` |
//! | `DATABASE_URL` | the service's own database (`postgres://…` or `sqlite://…`) | `sqlite://data/<service>.db` |
//! | `ORDERFLOW_HTTP_ADDR` | where the HTTP API listens | `127.0.0.1:<service port>` |
//! | `ORDERFLOW_CONSUMER_CONCURRENCY` | handlers running at once per consumer | `16` |
//! | `ORDERFLOW_MAX_ATTEMPTS` | deliveries before a message is dead-lettered | `5` |
//! | `ORDERFLOW_HANDLER_TIMEOUT` | seconds one handler call may take before it is cancelled and counts as a failed attempt | `30` |
//! | `ORDERFLOW_MAX_CRASHES` | times a message may crash or hang its consumer (handed out, never settled) before it is dead-lettered | `3` |
//! | `ORDERFLOW_SHUTDOWN_TIMEOUT` | seconds a graceful stop may take before the process gives up on unfinished work (it is delivered again) and exits | `10` |
//! | `ORDERFLOW_LOG_FORMAT` | `pretty` or `json` | `pretty` |
//! | `ORDERFLOW_PUBLISH_TIMEOUT` | how long the outbox relay waits for the broker's confirms before it tries the rows again | `5s` |
//! | `ORDERFLOW_RETENTION` | how long sent outbox rows and processed message ids are kept; must outlast the longest time a duplicate can still arrive, or a very late one is applied again | `7d` |
//!
//! Durations are a whole number and a unit: `500ms`, `5s`, `10m`, `2h`, `7d`
//! ([`DurationSetting`]).
//!
//! Services add their own (`ORDERFLOW_PAYMENT_FAILURE_RATE`, …) through [`env_or`].

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

/// The outbox relay's wait for confirms unless `ORDERFLOW_PUBLISH_TIMEOUT` says otherwise:
/// a confirmed batch takes milliseconds, so this only bounds a broker that stopped
/// answering. The relay lease lasts twice this.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sent outbox rows and processed ids are kept unless `ORDERFLOW_RETENTION` says
/// otherwise: a week outlasts any redelivery orderflow's brokers make.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3_600);

/// A duration setting: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl FromStr for DurationSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        // A bare number is seconds, fractions allowed (`2.5`): the form the timeouts were
        // first documented in.
        if let Ok(seconds) = text.parse::<f64>() {
            return if seconds.is_finite() && (0.0..1e9).contains(&seconds) {
                Ok(DurationSetting(Duration::from_secs_f64(seconds)))
            } else {
                Err("a number of seconds between 0 and 1e9".to_owned())
            };
        }
        let number: u64 = number
            .parse()
            .map_err(|_| "a whole number and a unit, like 500ms, 5s, 10m, 2h or 7d".to_owned())?;
        let unit_ms: u64 = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(format!("unknown unit `{other}` (ms, s, m, h or d)")),
        };
        number
            .checked_mul(unit_ms)
            .map(|ms| DurationSetting(Duration::from_millis(ms)))
            .ok_or_else(|| "too long".to_owned())
    }
}

impl Display for DurationSetting {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}ms", self.0.as_millis())
    }
}

/// A setting that could not be read; names the variable, the value and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: String,
    /// What it held.
    pub value: String,
    /// Why that is not acceptable.
    pub reason: String,
}

/// Reads `variable` and parses it, or returns `default` when it is unset or empty.
pub fn env_or<T>(variable: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|error: T::Err| ConfigError {
                variable: variable.to_owned(),
                value,
                reason: error.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Unwraps a configuration result, or prints the one-line reason and exits with status 2.
/// For a service's `main`: a bad setting is an operator's mistake, not a crash worth a
/// backtrace.
pub fn or_exit<T>(service: &str, result: Result<T, ConfigError>) -> T {
    result.unwrap_or_else(|error| {
        eprintln!("{service}: bad configuration: {error}");
        std::process::exit(2)
    })
}

/// Checks a value read by [`env_or`] against a rule, naming the variable if it fails.
pub fn ensure<T: Display>(
    variable: &str,
    value: T,
    valid: bool,
    rule: &str,
) -> Result<T, ConfigError> {
    if valid {
        Ok(value)
    } else {
        Err(ConfigError {
            variable: variable.to_owned(),
            value: value.to_string(),
            reason: rule.to_owned(),
        })
    }
}

/// What every service needs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service name: the consumer group and the log target.
    pub name: String,
    /// `ORDERFLOW_BROKER`.
    pub broker_url: String,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `ORDERFLOW_HTTP_ADDR`.
    pub http_addr: SocketAddr,
    /// `ORDERFLOW_CONSUMER_CONCURRENCY`.
    pub concurrency: usize,
    /// `ORDERFLOW_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `ORDERFLOW_PUBLISH_TIMEOUT`.
    pub publish_timeout: Duration,
    /// `ORDERFLOW_RETENTION`.
    pub retention: Duration,
    /// `ORDERFLOW_HANDLER_TIMEOUT`.
    pub handler_timeout: Duration,
    /// `ORDERFLOW_MAX_CRASHES`.
    pub max_crashes: u32,
    /// `ORDERFLOW_SHUTDOWN_TIMEOUT`: the bound of a graceful stop, from the signal to
    /// `run_until_stopped` returning.
    pub shutdown_timeout: Duration,
}

impl ServiceConfig {
    /// A configuration with every knob at its default, for code that starts services in
    /// process (the demo's stack, tests): listening on a free loopback port.
    pub fn with_defaults(name: &str, broker_url: &str, database_url: String) -> Self {
        ServiceConfig {
            name: name.to_owned(),
            broker_url: broker_url.to_owned(),
            database_url,
            // Port 0: the OS picks a free one; the caller reads it back.
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            concurrency: 16,
            max_attempts: 5,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            retention: DEFAULT_RETENTION,
            handler_timeout: crate::consumer::DEFAULT_HANDLER_TIMEOUT,
            max_crashes: crate::consumer::crashes::DEFAULT_MAX_CRASHES,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Reads the common settings for service `name`, whose HTTP API listens on
    /// `default_port` unless `ORDERFLOW_HTTP_ADDR` says otherwise.
    pub fn from_env(name: &str, default_port: u16) -> Result<Self, ConfigError> {
        let broker_url: String = env_or("ORDERFLOW_BROKER", "memory://".to_owned())?;
        let broker_url = ensure(
            "ORDERFLOW_BROKER",
            broker_url.clone(),
            ["memory://", "amqp://", "amqps://", "kafka://"]
                .iter()
                .any(|scheme| broker_url.starts_with(scheme)),
            "must start with memory://, amqp:// or kafka://",
        )?;
        let database_url: String = env_or("DATABASE_URL", format!("sqlite://data/{name}.db"))?;
        let database_url = ensure(
            "DATABASE_URL",
            database_url.clone(),
            crate::db::Dialect::of(&database_url).is_some(),
            "must start with postgres:// or sqlite:",
        )?;
        let concurrency = env_or("ORDERFLOW_CONSUMER_CONCURRENCY", 16usize)?;
        let max_attempts = env_or("ORDERFLOW_MAX_ATTEMPTS", 5u32)?;
        let publish_timeout = duration("ORDERFLOW_PUBLISH_TIMEOUT", DEFAULT_PUBLISH_TIMEOUT)?;
        let retention = duration("ORDERFLOW_RETENTION", DEFAULT_RETENTION)?;
        let shutdown_timeout = duration("ORDERFLOW_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)?;
        let handler_timeout = duration(
            "ORDERFLOW_HANDLER_TIMEOUT",
            crate::consumer::DEFAULT_HANDLER_TIMEOUT,
        )?;
        let max_crashes = env_or(
            "ORDERFLOW_MAX_CRASHES",
            crate::consumer::crashes::DEFAULT_MAX_CRASHES,
        )?;
        Ok(ServiceConfig {
            name: name.to_owned(),
            broker_url,
            database_url,
            http_addr: env_or(
                "ORDERFLOW_HTTP_ADDR",
                SocketAddr::from(([127, 0, 0, 1], default_port)),
            )?,
            concurrency: ensure(
                "ORDERFLOW_CONSUMER_CONCURRENCY",
                concurrency,
                concurrency >= 1,
                "must be at least 1",
            )?,
            max_attempts: ensure(
                "ORDERFLOW_MAX_ATTEMPTS",
                max_attempts,
                max_attempts >= 1,
                "must be at least 1",
            )?,
            publish_timeout,
            retention,
            handler_timeout,
            max_crashes: ensure(
                "ORDERFLOW_MAX_CRASHES",
                max_crashes,
                max_crashes >= 1,
                "must be at least 1",
            )?,
            shutdown_timeout,
        })
    }
}

/// The default of `ORDERFLOW_SHUTDOWN_TIMEOUT`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A duration setting longer than zero (`500ms`, `5s`, `7d`, or plain seconds such as
/// `2.5`), or `default` when unset.
pub fn duration(variable: &str, default: Duration) -> Result<Duration, ConfigError> {
    let value = env_or(variable, DurationSetting(default))?;
    ensure(variable, value, !value.0.is_zero(), "must be longer than 0").map(|value| value.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_the_variable() {
        std::env::set_var("ORDERFLOW_TEST_NUMBER", "twelve");
        let error = env_or("ORDERFLOW_TEST_NUMBER", 1u32).unwrap_err();
        assert_eq!(error.variable, "ORDERFLOW_TEST_NUMBER");
        assert!(
            error
                .to_string()
                .contains("invalid ORDERFLOW_TEST_NUMBER=\"twelve\""),
            "{error}"
        );
        assert_eq!(env_or("ORDERFLOW_TEST_UNSET", 7u32).unwrap(), 7);
    }

    #[test]
    fn durations_are_a_number_and_a_unit() {
        let parse = |text: &str| text.parse::<DurationSetting>().map(|setting| setting.0);
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("7d"), Ok(DEFAULT_RETENTION));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse("7 weeks").unwrap_err().contains("unknown unit"));
        assert!(parse("soon").unwrap_err().contains("whole number"));
        assert!(parse("-1").unwrap_err().contains("seconds between"));
    }

    #[test]
    fn a_zero_duration_is_refused_with_the_variable_named() {
        std::env::set_var("ORDERFLOW_TEST_DURATION_ZERO", "0s");
        let error = duration("ORDERFLOW_TEST_DURATION_ZERO", Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.variable, "ORDERFLOW_TEST_DURATION_ZERO");
        std::env::set_var("ORDERFLOW_TEST_DURATION_FRACTION", "2.5");
        assert_eq!(
            duration("ORDERFLOW_TEST_DURATION_FRACTION", Duration::from_secs(1)).unwrap(),
            Duration::from_millis(2500)
        );
    }
}
