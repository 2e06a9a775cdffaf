//! Staging an outage in tests: close this client's connections on the server side, as
//! a broker restart or a network cut would, or have the server close only its
//! publishing channel.

use lapin::{options::ExchangeDeclareOptions, types::FieldTable, ExchangeKind};

use super::{RabbitBroker, BACKEND};
use crate::{BrokerError, Result};

impl RabbitBroker {
    /// Test helper: makes the server close this handle's publishing channel while the
    /// connection stays up, the way any channel-level error does (here a passive
    /// declare of an exchange that does not exist: `404 NOT_FOUND` closes the channel).
    #[doc(hidden)]
    pub async fn break_publisher_channel_for_test(&self) -> Result<()> {
        let live = self.shared.current()?;
        let channel = live.publishing_channel();
        let missing = format!("orderflow.missing-{}", uuid::Uuid::now_v7().simple());
        let declared = channel
            .exchange_declare(
                missing.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Err(_) if !channel.status().connected() => Ok(()),
            other => Err(BrokerError::Connect {
                backend: BACKEND,
                address: "the publishing channel".into(),
                detail: format!("the channel did not close: {other:?}"),
            }),
        }
    }
}

/// Closes the server-side connections whose client-provided name is `name` (test helper
/// for contract point 7): `rabbitmqctl list_connections pid client_properties`, then
/// `rabbitmqctl close_connection <pid> "orderflow test: staged outage"` for each match.
/// Returns how many were closed.
pub async fn close_connections_for_test(name: &str) -> Result<usize> {
    let failed = |detail: String| BrokerError::Connect {
        backend: BACKEND,
        address: "rabbitmqctl".into(),
        detail,
    };
    let listing = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .map_err(|error| failed(format!("cannot run rabbitmqctl: {error}")))?;
    if !listing.status.success() {
        return Err(failed(format!(
            "rabbitmqctl list_connections failed: {}",
            String::from_utf8_lossy(&listing.stderr).trim()
        )));
    }
    let listing = String::from_utf8_lossy(&listing.stdout);
    // One line per connection: the pid, a tab, client_properties as an Erlang term in
    // which the name is a quoted string: `…{"connection_name","orderflow-…"}…` (3.10;
    // `user_provided_name` as a column only exists from 3.11 on). The name holds a UUID,
    // so a quoted match cannot hit another connection.
    let quoted = format!("\"{name}\"");
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains("connection_name") && line.contains(&quoted))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let mut closed = 0;
    for pid in pids {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "orderflow test: staged outage"])
            .output()
            .await
            .map_err(|error| failed(format!("cannot run rabbitmqctl: {error}")))?;
        if output.status.success() {
            closed += 1;
        } else {
            return Err(failed(format!(
                "rabbitmqctl close_connection {pid} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(closed)
}
