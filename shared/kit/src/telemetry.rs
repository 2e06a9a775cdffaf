//! Tracing set-up: human-readable by default, JSON lines when `ORDERFLOW_LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with `default_filter` when `RUST_LOG` is unset (the demo keeps the
/// services quiet so its own output stays readable).
pub fn init_with_default(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("ORDERFLOW_LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _already_set = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
