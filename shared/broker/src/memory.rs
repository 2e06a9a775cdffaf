//! The embedded broker (placeholder until its helper lands it).
use crate::{BrokerError, Result};
/// The embedded broker.
pub struct MemoryBroker;
impl MemoryBroker {
    /// Parses `memory://…`.
    pub fn from_url(url: &str) -> Result<Self> {
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
impl Publisher for MemoryBroker {
    async fn publish(&self, _envelope: Envelope) -> Result<()> {
        Err(BrokerError::Closed)
    }
    async fn publish_all(&self, _envelopes: Vec<Envelope>) -> Result<()> {
        Err(BrokerError::Closed)
    }
}
#[async_trait::async_trait]
impl Subscriber for MemoryBroker {
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
impl Broker for MemoryBroker {
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
