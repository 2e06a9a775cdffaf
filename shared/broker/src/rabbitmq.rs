//! The RabbitMQ backend (placeholder until its helper lands it).
use crate::{BrokerError, Result};
/// The RabbitMQ backend.
pub struct RabbitBroker;
/// Closes the server-side connections whose client-provided name is `name` (test helper).
pub async fn close_connections_for_test(_name: &str) -> Result<usize> {
    Ok(0)
}
impl RabbitBroker {
    /// The connection name the server shows.
    pub fn connection_name(&self) -> &str {
        ""
    }
    /// Connects.
    pub async fn connect(url: &str) -> Result<Self> {
        Err(BrokerError::InvalidUrl {
            url: url.into(),
            reason: "not yet".into(),
        })
    }
}
use crate::{
    Backend, Broker, Capabilities, Deliveries, Envelope, Publisher, Subscriber, Subscription,
};
#[async_trait::async_trait]
impl Publisher for RabbitBroker {
    async fn publish(&self, _envelope: Envelope) -> Result<()> {
        Err(BrokerError::Closed)
    }
    async fn publish_all(&self, _envelopes: Vec<Envelope>) -> Result<()> {
        Err(BrokerError::Closed)
    }
}
#[async_trait::async_trait]
impl Subscriber for RabbitBroker {
    async fn declare(&self, _subscription: &Subscription) -> Result<()> {
        Err(BrokerError::Closed)
    }
    async fn subscribe(&self, _subscription: Subscription) -> Result<Deliveries> {
        Err(BrokerError::Closed)
    }
    async fn subscribe_dead_letters(&self, _group: &str) -> Result<Deliveries> {
        Err(BrokerError::Closed)
    }
    async fn backlog(&self, _subscription: &Subscription) -> Result<u64> {
        Err(BrokerError::Closed)
    }
}
#[async_trait::async_trait]
impl Broker for RabbitBroker {
    fn backend(&self) -> Backend {
        Backend::Memory
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            broker_restart: false,
            fault_injection: false,
        }
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
