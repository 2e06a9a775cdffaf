//! One request to the order API: `POST /orders` with one of the demo's orders and an
//! `Idempotency-Key` of its own, ended by its [`Outcome`] — or, with `--get PATH`, a plain
//! `GET` of a trivial endpoint, to measure the generator rather than the service.
//!
//! No retries: a load generator that retried would hide exactly the failures it is there
//! to count. Each request has a timeout; a request that hits it is a timeout, not an error.

use std::time::Duration;

use serde::Deserialize;

use super::recorder::Outcome;
use crate::place::demo_order;

/// The order API of one target.
#[derive(Debug, Clone)]
pub struct OrderApi {
    client: reqwest::Client,
    orders_url: String,
    /// `--get`: the URL fetched instead of placing orders.
    get_url: Option<String>,
    timeout: Duration,
}

/// The part of the 202 answer the generator reads.
#[derive(Deserialize)]
struct Accepted {
    order_id: uuid::Uuid,
}

impl OrderApi {
    /// The API at `base_url` (e.g. `http://127.0.0.1:8080`); requests give up after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Small requests on keep-alive connections: Nagle's delay would add up to 40 ms.
            .tcp_nodelay(true)
            .build()?;
        Ok(OrderApi {
            client,
            orders_url: format!("{}/orders", base_url.trim_end_matches('/')),
            get_url: None,
            timeout,
        })
    }

    /// Requests `GET base_url + path` instead of placing orders; a 2xx counts as accepted
    /// (with the nil id: there is no order).
    pub fn getting(base_url: &str, path: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut api = OrderApi::new(base_url, timeout)?;
        api.get_url = Some(format!(
            "{}/{}",
            base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        ));
        Ok(api)
    }

    /// Where the orders go.
    pub fn orders_url(&self) -> &str {
        &self.orders_url
    }

    /// Places the `index`-th demo order once.
    pub async fn place(&self, index: usize) -> Outcome {
        if let Some(url) = &self.get_url {
            return self.get(url).await;
        }
        let body = serde_json::to_vec(&demo_order(index)).expect("a JSON value serializes");
        let request = self
            .client
            .post(&self.orders_url)
            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(self.timeout);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Outcome::TimedOut,
            Err(_) => return Outcome::Failed,
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) if error.is_timeout() => return Outcome::TimedOut,
            Err(_) => return Outcome::Failed,
        };
        if !status.is_success() {
            return Outcome::Refused(status.as_u16());
        }
        match serde_json::from_slice::<Accepted>(&body) {
            Ok(accepted) => Outcome::Accepted(accepted.order_id),
            Err(_) => Outcome::Refused(status.as_u16()),
        }
    }

    async fn get(&self, url: &str) -> Outcome {
        let response = match self.client.get(url).timeout(self.timeout).send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Outcome::TimedOut,
            Err(_) => return Outcome::Failed,
        };
        let status = response.status();
        match response.bytes().await {
            Ok(_) if status.is_success() => Outcome::Accepted(uuid::Uuid::nil()),
            Ok(_) => Outcome::Refused(status.as_u16()),
            Err(error) if error.is_timeout() => Outcome::TimedOut,
            Err(_) => Outcome::Failed,
        }
    }
}
