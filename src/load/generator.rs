//! The open-loop generator: every request goes out at its intended time, whatever
//! happened to the requests before it.
//!
//! A closed-loop client (send, wait for the answer, send the next) slows down when the
//! service does, so it offers less load exactly when the service struggles and measures
//! only the requests it managed to send — coordinated omission. Here one dispatcher walks
//! the schedule and hands each request to a task of its own at its intended time, so a
//! slow answer never delays the next request. What keeps this honest:
//!
//! - latency is measured from the **intended** time (see [`super::recorder`]);
//! - in-flight requests are bounded by a semaphore; when it is exhausted at a request's
//!   intended time, that request is **dropped** and counted, never queued for later
//!   (queueing it would quietly slow the offered rate down);
//! - when the dispatcher itself falls behind (the machine is saturated), the overdue
//!   requests go out at once, each counted as **late** when it left more than the
//!   lateness threshold after its time, and the send lag is kept in a histogram.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Semaphore, time::Instant};

use super::{order_api::OrderApi, recorder::Recorder};

/// How the generator sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in flight at most.
    pub max_in_flight: usize,
}

/// Sends one request per entry of `intended` (offsets from `start`), records every
/// outcome in `recorder`, and returns once every sent request has ended.
pub async fn run(
    api: Arc<OrderApi>,
    intended: &[Duration],
    start: Instant,
    limits: Limits,
    recorder: Arc<Recorder>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    for (index, &offset) in intended.iter().enumerate() {
        let due = start + offset;
        // Sleep only when the request is not yet due: overdue requests go out at once
        // (the timer's millisecond granularity would otherwise add up to 1 ms to each).
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            recorder.dropped(offset);
            continue;
        };
        recorder.sent(offset, Instant::now().saturating_duration_since(due));
        let api = api.clone();
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let outcome = api.place(index).await;
            recorder.answered(offset, due.elapsed(), outcome);
            drop(permit);
        });
    }
    // Every permit back: every request sent has ended (answered or timed out).
    let all = u32::try_from(limits.max_in_flight).unwrap_or(u32::MAX);
    let _ = in_flight.acquire_many(all).await;
}
