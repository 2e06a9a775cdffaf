//! Placing orders through the order service's real HTTP API: `orderflow place`, and the
//! demo's first step. One generator, one placer, used by both.
//!
//! ```text
//! orderflow place --url http://127.0.0.1:8080 --orders 200 [--rate 60] [--first 0] [--json]
//! ```
//!
//! Each order carries an `Idempotency-Key` of its own, kept across retries: a request
//! retried after a timeout or a 5xx finds the order the first attempt created instead of
//! creating a second one — the HTTP half of "exactly once".

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use orderflow_kit::retry::RetryPolicy;
use serde::Serialize;

/// How many requests are in flight at once.
const IN_FLIGHT: usize = 32;
/// Attempts per order before giving up (network errors and 5xx only; a 4xx is final).
const ATTEMPTS: u32 = 5;

/// Options of `orderflow place`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The order service's base URL.
    #[arg(
        long,
        env = "ORDERFLOW_ORDER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// How many orders to place.
    #[arg(long, default_value_t = 200)]
    pub orders: usize,
    /// Orders per second at most (default: as fast as 32 requests in flight go).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Index of the first generated order: a second run with `--first 200` continues the
    /// demo's sequence instead of repeating it.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Print one JSON object (with every order id) instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// What `place` to do: `orders` generated orders from index `first`, at most `rate` per s.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How many.
    pub orders: usize,
    /// Index of the first generated order ([`demo_order`]).
    pub first: usize,
    /// Orders per second at most; `None` for as fast as the service answers.
    pub rate_per_s: Option<f64>,
}

impl Plan {
    /// `orders` orders from index 0, as fast as possible.
    pub fn burst(orders: usize) -> Self {
        Plan {
            orders,
            first: 0,
            rate_per_s: None,
        }
    }
}

/// `orderflow place --json` prints this.
#[derive(Serialize)]
struct Placed<'a> {
    placed: usize,
    seconds: f64,
    orders_per_s: f64,
    order_ids: &'a [String],
}

/// Runs `orderflow place`: places the orders, says how long it took.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.orders > 0, "--orders must be at least 1");
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate > 0.0 && rate.is_finite(),
            "--rate must be a positive number"
        );
    }
    let plan = Plan {
        orders: args.orders,
        first: args.first,
        rate_per_s: args.rate,
    };
    let started = Instant::now();
    let ids = place_orders(&reqwest::Client::new(), &args.url, plan).await?;
    let seconds = started.elapsed().as_secs_f64();
    let orders_per_s = ids.len() as f64 / seconds.max(f64::EPSILON);
    if args.json {
        let output = Placed {
            placed: ids.len(),
            seconds: (seconds * 1000.0).round() / 1000.0,
            orders_per_s: (orders_per_s * 10.0).round() / 10.0,
            order_ids: &ids,
        };
        println!("{}", serde_json::to_string(&output)?);
    } else {
        println!(
            "placed {} orders on {} in {seconds:.1} s ({orders_per_s:.0} orders/s)",
            ids.len(),
            args.url
        );
    }
    Ok(())
}

/// The `index`th demo order: a few users, one to three items; every tenth order is over
/// the simulated card limit, so some payments fail by design.
pub fn demo_order(index: usize) -> serde_json::Value {
    let over_the_limit = index % 10 == 9;
    const SKUS: [&str; 4] = ["green-tea-250g", "oolong-100g", "teapot", "cups-x4"];
    let items: Vec<serde_json::Value> = (0..1 + index % 3)
        .map(|item| {
            let sku = SKUS[(index + item) % SKUS.len()];
            serde_json::json!({
                "sku": sku,
                "quantity": 1 + (index + item) % 3,
                "unit_price_cents": if over_the_limit { 1_200_000 } else { 990 + 1_000 * ((index * 7 + item) % 20) as i64 },
            })
        })
        .collect();
    serde_json::json!({
        "user_id": 1 + index % 50,
        "phone": format!("+86138{:08}", index % 100_000_000),
        "items": items,
    })
}

/// Places the orders of `plan` through `POST {order_url}/orders`, 32 at a time, paced to
/// `plan.rate_per_s`; returns the order ids in the order the orders were generated.
/// Fails when an order is refused (4xx), keeps failing after retries, or when the service
/// hands back one order id for two different orders.
pub async fn place_orders(
    client: &reqwest::Client,
    order_url: &str,
    plan: Plan,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{}/orders", order_url.trim_end_matches('/'));
    let started = tokio::time::Instant::now();
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..plan.orders)
        // Pacing: the n-th order is not sent before start + n / rate.
        .then(|n| async move {
            if let Some(rate) = plan.rate_per_s {
                tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate)).await;
            }
            plan.first + n
        })
        .map(|index| place_one(client, &url, index))
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let ids: Vec<String> = results.into_iter().collect::<anyhow::Result<_>>()?;
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    anyhow::ensure!(
        distinct.len() == ids.len(),
        "the order service answered {} distinct order ids for {} orders",
        distinct.len(),
        ids.len()
    );
    Ok(ids)
}

/// One order: POST with its own Idempotency-Key, retried on network errors and 5xx.
async fn place_one(client: &reqwest::Client, url: &str, index: usize) -> anyhow::Result<String> {
    let key = uuid::Uuid::now_v7().to_string();
    place_with_key(client, url, index, &key).await
}

/// The `index`th demo order, POSTed to `url` (`…/orders`) under `key` as its
/// Idempotency-Key, retried a few times on network errors and 5xx. A caller that retries
/// further (`orderflow chaos`, while the order service restarts) passes the same key
/// again, so a first attempt that was stored but never answered is found, not doubled.
pub async fn place_with_key(
    client: &reqwest::Client,
    url: &str,
    index: usize,
    key: &str,
) -> anyhow::Result<String> {
    let body = demo_order(index);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = client
            .post(url)
            .header("Idempotency-Key", key)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await?;
                return body["order_id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("the order service answered without an order_id");
            }
            Ok(response) if response.status().is_client_error() => {
                anyhow::bail!(
                    "order {index} refused: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                )
            }
            failed if attempt < ATTEMPTS => {
                tracing::warn!(
                    ?failed,
                    attempt,
                    "placing an order failed; retrying with the same Idempotency-Key"
                );
                tokio::time::sleep(RetryPolicy::default().backoff(attempt)).await;
            }
            Ok(response) => anyhow::bail!("order {index}: {}", response.status()),
            Err(error) => return Err(error).with_context(|| format!("POST {url}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenth_demo_order_is_over_the_card_limit() {
        let total = |order: &serde_json::Value| -> i64 {
            order["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    item["quantity"].as_i64().unwrap() * item["unit_price_cents"].as_i64().unwrap()
                })
                .sum()
        };
        assert!(total(&demo_order(9)) > 1_000_000);
        assert!(total(&demo_order(3)) < 1_000_000);
    }
}
