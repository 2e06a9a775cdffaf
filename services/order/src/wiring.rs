//! How the order service reaches the rest of the flow: through the queue (the default), or
//! — the baseline the load test measures the queue against — by calling each service in
//! turn inside `POST /orders`.
//!
//! | `ORDERFLOW_WIRING` | `POST /orders` | answer |
//! | --- | --- | --- |
//! | unset or `async` | order + `order.placed` committed; the relay publishes it; payment, points, SMS and logging catch up on their own | `202` at once |
//! | `sync` | order committed, then over HTTP, one after the other: payment, (its outcome applied to the order), points, SMS, logging | `201` when all of them answered; `502`/`503`/`504` naming the service that did not |
//!
//! `sync` is an experiment, never the default, and no deployment file sets it: it exists
//! so that `orderflow load --compare` can show what the queue buys. An unknown value stops
//! the start.
//!
//! ## The synchronous chain
//!
//! ```text
//! POST /orders ─► store::place inside handing_back ──► the order.placed envelope (row written sent)
//!   payment  POST /internal/handle [order.placed]        ─► payment.succeeded | payment.failed
//!   order    PaymentOutcomeHandler (this service's own consumer handler, in the request)
//!   points   POST /internal/handle [payment.succeeded]   ─► points.awarded        (paid orders)
//!   SMS      POST /internal/handle [payment.succeeded]   ─► sms.sent              (paid orders)
//!   logging  POST /internal/handle [every event above]
//! ```
//!
//! Every step runs the service's *own* consumer handler (see
//! [`orderflow_kit::http::sync_handle`]): the same gateway latencies, the same SMS rate
//! limit, the same idempotency. The events each handler writes to its outbox are handed
//! back in the HTTP answer instead of published ([`orderflow_kit::outbox::handing_back`]:
//! written already sent, so no relay publishes them and the asynchronous flow does not run
//! behind the chain's back), and the order service passes them to the next call.
//!
//! What the chain does not have, on purpose, because a synchronous call chain does not:
//! a queue to wait in and someone to retry. Over the SMS gateway's rate the SMS call is
//! refused (`503`, the gateway's 429 passed on) and so is the order request; with the
//! logging service down every order request fails, though the order is stored and paid.
//! Nothing is rolled back or retried: what was done stays done, and the request says
//! which call failed.

use std::time::Duration;

use axum::http::StatusCode;
use orderflow_broker::Envelope;
use orderflow_events::{topics, Event};
use orderflow_kit::{
    config::{env_or, ConfigError},
    consumer::{Handler, HandlerError},
    db::Db,
    http::sync_handle::{HandleAnswer, HandleRequest, WireEnvelope, HANDLE_PATH},
};

use crate::handlers::PaymentOutcomeHandler;

/// How long one call of the chain may take before the request gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How `POST /orders` reaches the other services.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Wiring {
    /// Through the queue: publish `order.placed` and answer (the default).
    #[default]
    Async,
    /// By calling each service over HTTP inside the request (the baseline).
    Sync(Downstream),
}

/// Where the synchronous chain calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    /// The payment service's base URL.
    pub payment: String,
    /// The points service's base URL.
    pub points: String,
    /// The SMS service's base URL.
    pub sms: String,
    /// The logging service's base URL.
    pub logging: String,
}

impl Wiring {
    /// `ORDERFLOW_WIRING` (`async` unless it says `sync`) and, for `sync`, the other
    /// services' addresses from `ORDERFLOW_{PAYMENT,POINTS,SMS,LOGGING}_URL` (the names
    /// `orderflow reconcile` reads), defaulting to their ports on loopback.
    pub fn from_env() -> Result<Self, ConfigError> {
        let wiring: String = env_or("ORDERFLOW_WIRING", "async".to_owned())?;
        match wiring.as_str() {
            "async" => Ok(Wiring::Async),
            "sync" => Ok(Wiring::Sync(Downstream {
                payment: env_or("ORDERFLOW_PAYMENT_URL", "http://127.0.0.1:8081".to_owned())?,
                points: env_or("ORDERFLOW_POINTS_URL", "http://127.0.0.1:8082".to_owned())?,
                sms: env_or("ORDERFLOW_SMS_URL", "http://127.0.0.1:8083".to_owned())?,
                logging: env_or("ORDERFLOW_LOGGING_URL", "http://127.0.0.1:8084".to_owned())?,
            })),
            _ => Err(ConfigError {
                variable: "ORDERFLOW_WIRING".to_owned(),
                value: wiring,
                reason: "must be async (the default) or sync (the load test's baseline)".to_owned(),
            }),
        }
    }
}

/// Why the chain stopped: which service, and the status the order request answers with.
#[derive(Debug)]
pub struct ChainError {
    /// `502` (unreachable or a bad answer), `503` (the service refused: try later), `504`
    /// (no answer within [`CALL_TIMEOUT`]).
    pub status: StatusCode,
    /// What failed, naming the service.
    pub message: String,
}

/// The synchronous chain: the other services' handlers, called one after the other.
pub struct SyncChain {
    client: reqwest::Client,
    downstream: Downstream,
    /// This service's own consumer handler, applying the payment outcome to the order.
    outcomes: PaymentOutcomeHandler,
}

impl SyncChain {
    /// A chain calling `downstream`, applying payment outcomes to the orders in `db`.
    pub fn new(downstream: Downstream, db: Db) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Small requests on keep-alive connections: Nagle's delay would add up to 40 ms.
            .tcp_nodelay(true)
            .timeout(CALL_TIMEOUT)
            .build()?;
        Ok(SyncChain {
            client,
            downstream,
            outcomes: PaymentOutcomeHandler::new(db),
        })
    }

    /// Runs the chain for one placed order, given its `order.placed` envelope.
    pub async fn run(&self, placed: Envelope) -> Result<(), ChainError> {
        let outcome = self
            .call_for_one("payment", &self.downstream.payment, &placed)
            .await?;
        self.apply_payment_outcome(&outcome).await?;
        let mut journey = vec![placed, outcome.clone()];
        if outcome.topic == topics::PAYMENT_SUCCEEDED {
            journey.push(
                self.call_for_one("points", &self.downstream.points, &outcome)
                    .await?,
            );
            journey.push(
                self.call_for_one("sms", &self.downstream.sms, &outcome)
                    .await?,
            );
        }
        self.call("logging", &self.downstream.logging, &journey)
            .await?;
        Ok(())
    }

    /// The order's status follows its payment, by the same handler the consumer runs.
    async fn apply_payment_outcome(&self, outcome: &Envelope) -> Result<(), ChainError> {
        let internal = |message: String| ChainError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        };
        let event = Event::decode(&outcome.payload)
            .map_err(|error| internal(format!("payment answered an undecodable event: {error}")))?;
        match self.outcomes.handle(event, outcome).await {
            Ok(_) => Ok(()),
            Err(HandlerError::Retry(error) | HandlerError::Reject(error)) => Err(internal(
                format!("applying the payment outcome to the order: {error:#}"),
            )),
        }
    }

    /// Calls `service` with one envelope and returns the one event it handed back.
    async fn call_for_one(
        &self,
        service: &str,
        base: &str,
        envelope: &Envelope,
    ) -> Result<Envelope, ChainError> {
        let mut answer = self
            .call(service, base, std::slice::from_ref(envelope))
            .await?;
        answer
            .results
            .pop()
            .and_then(|mut handled| handled.handed_back.pop())
            .map(Envelope::from)
            .ok_or_else(|| ChainError {
                status: StatusCode::BAD_GATEWAY,
                message: format!(
                    "the {service} service handed no event back for {} (a repeated message?)",
                    envelope.topic
                ),
            })
    }

    /// `POST {base}/internal/handle` with `envelopes`.
    async fn call(
        &self,
        service: &str,
        base: &str,
        envelopes: &[Envelope],
    ) -> Result<HandleAnswer, ChainError> {
        let request = HandleRequest {
            envelopes: envelopes.iter().map(WireEnvelope::from).collect(),
        };
        let url = format!("{}{HANDLE_PATH}", base.trim_end_matches('/'));
        let failed = |status: StatusCode, what: String| ChainError {
            status,
            message: format!("the {service} service {what}"),
        };
        let response = self
            .client
            .post(&url)
            .json(&request)
            .send()
            .await
            .map_err(|error| transport(error, &failed))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let status_out = if status == StatusCode::SERVICE_UNAVAILABLE {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            return Err(failed(status_out, format!("answered {status}: {body}")));
        }
        response
            .json::<HandleAnswer>()
            .await
            .map_err(|error| transport(error, &failed))
    }
}

/// A transport failure as the order request reports it: 504 for a timeout, else 502.
fn transport(
    error: reqwest::Error,
    failed: &impl Fn(StatusCode, String) -> ChainError,
) -> ChainError {
    if error.is_timeout() {
        failed(
            StatusCode::GATEWAY_TIMEOUT,
            format!("did not answer within {CALL_TIMEOUT:?}"),
        )
    } else {
        failed(
            StatusCode::BAD_GATEWAY,
            format!("could not be reached: {error}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset means the queue; only the exact word `sync` selects the baseline; anything
    /// else stops the start naming the variable. (One test: the variable is process-wide.)
    #[test]
    fn the_wiring_is_async_unless_sync_is_asked_for_and_a_bad_value_is_refused() {
        std::env::remove_var("ORDERFLOW_WIRING");
        assert_eq!(Wiring::from_env().unwrap(), Wiring::Async);
        std::env::set_var("ORDERFLOW_WIRING", "synchronous");
        let error = Wiring::from_env().unwrap_err();
        assert_eq!(error.variable, "ORDERFLOW_WIRING");
        std::env::set_var("ORDERFLOW_WIRING", "sync");
        std::env::set_var("ORDERFLOW_LOGGING_URL", "http://logging:8084");
        let Wiring::Sync(downstream) = Wiring::from_env().unwrap() else {
            panic!("sync asked for");
        };
        assert_eq!(downstream.logging, "http://logging:8084");
        assert_eq!(downstream.payment, "http://127.0.0.1:8081");
        std::env::remove_var("ORDERFLOW_WIRING");
        std::env::remove_var("ORDERFLOW_LOGGING_URL");
    }
}
