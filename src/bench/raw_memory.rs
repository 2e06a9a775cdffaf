//! Raw-client pipeline for the memory benchmark (placeholder until its helper writes it).
use super::Rates;

/// Publishes then consumes `messages` messages of `payload_bytes` through the raw client.
pub async fn run(_url: &str, _messages: usize, _payload_bytes: usize) -> anyhow::Result<Rates> {
    anyhow::bail!("raw memory pipeline not written yet")
}
