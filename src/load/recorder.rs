//! What the generator saw, per second and in total: requests offered, sent, dropped,
//! late, and how each one was answered and how long that took.
//!
//! Which second a figure belongs to:
//!
//! - *offered, sent, dropped, late* and the *latency* percentiles — the second the request
//!   was **meant** to go out (its intended time), so a stall shows up in the second whose
//!   requests suffered it;
//! - *accepted, errors, timeouts* — the second the answer **arrived**, so "accepted/s" is
//!   what the API really took in each second (it can exceed the offered rate after a stall,
//!   as the backed-up requests are answered together).
//!
//! Latency is always measured from the intended time, never from when the request was
//! actually sent: a generator that fell behind, or a request queued behind a stalled
//! connection, is charged to the service's latency (coordinated omission corrected).

use std::{sync::Mutex, time::Duration};

use uuid::Uuid;

use super::{latency::LatencyHistogram, schedule::Profile};

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with the order id the service assigned.
    Accepted(Uuid),
    /// An HTTP answer that is not 2xx (or a 2xx without an order id), with its status.
    Refused(u16),
    /// No HTTP answer: the connection failed or broke.
    Failed,
    /// No answer within the request timeout.
    TimedOut,
}

/// One second of the run.
#[derive(Debug, Clone, Default)]
pub struct Second {
    /// Requests scheduled in this second (sent + dropped).
    pub offered: u64,
    /// Of which sent.
    pub sent: u64,
    /// Of which not sent: the in-flight limit was reached at their intended time.
    pub dropped: u64,
    /// Of the sent, how many went out later than the lateness threshold.
    pub late: u64,
    /// 2xx answers that arrived in this second.
    pub accepted: u64,
    /// Non-2xx answers and failed connections that arrived in this second.
    pub errors: u64,
    /// Requests that timed out in this second.
    pub timeouts: u64,
    /// Latency (from the intended time) of the requests scheduled in this second that
    /// got an answer or timed out.
    pub latency: LatencyHistogram,
}

/// Everything recorded, once the generator is done.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Per second, from second 0.
    pub seconds: Vec<Second>,
    /// Latency of every answered (or timed-out) request.
    pub latency: LatencyHistogram,
    /// The same, for requests scheduled outside the burst.
    pub latency_base: LatencyHistogram,
    /// The same, for requests scheduled inside the burst.
    pub latency_burst: LatencyHistogram,
    /// How late each request was sent relative to its intended time.
    pub send_lag: LatencyHistogram,
    /// Orders accepted, with their intended send time (from the start of the run).
    pub accepted: Vec<(Uuid, Duration)>,
}

impl Recorded {
    /// Sum of one counter over every second.
    pub fn total(&self, counter: impl Fn(&Second) -> u64) -> u64 {
        self.seconds.iter().map(counter).sum()
    }
}

/// Shared by the generator's request tasks; a mutex suffices at tens of thousands of
/// records per second, and keeps the figures of one request together.
#[derive(Debug)]
pub struct Recorder {
    profile: Profile,
    late_after: Duration,
    inner: Mutex<Recorded>,
}

impl Recorder {
    /// A recorder for a run of `profile`; a request sent more than `late_after` after its
    /// intended time counts as late.
    pub fn new(profile: Profile, late_after: Duration) -> Self {
        Recorder {
            profile,
            late_after,
            inner: Mutex::new(Recorded::default()),
        }
    }

    fn with_second(recorded: &mut Recorded, at: Duration, update: impl FnOnce(&mut Second)) {
        let index = at.as_secs() as usize;
        if recorded.seconds.len() <= index {
            recorded.seconds.resize_with(index + 1, Second::default);
        }
        update(&mut recorded.seconds[index]);
    }

    /// A request due at `intended` could not be sent: too many in flight.
    pub fn dropped(&self, intended: Duration) {
        let mut recorded = self.inner.lock().expect("recorder lock");
        Self::with_second(&mut recorded, intended, |second| {
            second.offered += 1;
            second.dropped += 1;
        });
    }

    /// A request due at `intended` went out `lag` after it.
    pub fn sent(&self, intended: Duration, lag: Duration) {
        let late = lag > self.late_after;
        let mut recorded = self.inner.lock().expect("recorder lock");
        recorded.send_lag.record(lag);
        Self::with_second(&mut recorded, intended, |second| {
            second.offered += 1;
            second.sent += 1;
            second.late += u64::from(late);
        });
    }

    /// The request due at `intended` ended with `outcome`, `latency` after `intended`.
    pub fn answered(&self, intended: Duration, latency: Duration, outcome: Outcome) {
        let in_burst = self.profile.in_burst(intended);
        let mut recorded = self.inner.lock().expect("recorder lock");
        recorded.latency.record(latency);
        if in_burst {
            recorded.latency_burst.record(latency);
        } else {
            recorded.latency_base.record(latency);
        }
        Self::with_second(&mut recorded, intended, |second| {
            second.latency.record(latency)
        });
        Self::with_second(&mut recorded, intended + latency, |second| match outcome {
            Outcome::Accepted(_) => second.accepted += 1,
            Outcome::Refused(_) | Outcome::Failed => second.errors += 1,
            Outcome::TimedOut => second.timeouts += 1,
        });
        if let Outcome::Accepted(order_id) = outcome {
            recorded.accepted.push((order_id, intended));
        }
    }

    /// The orders accepted so far, with their intended send times.
    pub fn accepted(&self) -> Vec<(Uuid, Duration)> {
        self.inner.lock().expect("recorder lock").accepted.clone()
    }

    /// Everything recorded, taken out (the recorder starts over empty).
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut *self.inner.lock().expect("recorder lock"))
    }
}
