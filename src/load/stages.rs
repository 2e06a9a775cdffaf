//! The stages of an order's journey and when each order reached each one.
//!
//! ```text
//! placed ──> paid ──> points ──┐
//!       └──> failed  ──> sms ──┴──> logged
//! ```
//!
//! An order is *settled* once it reached its end: declined (`failed`), or paid with its
//! points awarded and its SMS sent — and, when the logging service is watched, once every
//! one of its events is in the log. [`Journeys`] keeps the first time each order was seen
//! at each stage (later sightings of the same stage are redeliveries, counted apart), as
//! offsets from the start of the run.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use orderflow_events::EventKind;
use serde::Serialize;
use uuid::Uuid;

/// A stage of the journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `order.placed` was published.
    Placed,
    /// `payment.succeeded` was published.
    Paid,
    /// `payment.failed` was published.
    Failed,
    /// `points.awarded` was published.
    Points,
    /// The SMS gateway accepted the text (the `sent_at` of `sms.sent`; see `observer.rs`).
    Sms,
    /// Every event of the order is stored by the logging service.
    Logged,
}

impl Stage {
    /// Every stage, in journey order.
    pub const ALL: [Stage; 6] = [
        Stage::Placed,
        Stage::Paid,
        Stage::Failed,
        Stage::Points,
        Stage::Sms,
        Stage::Logged,
    ];

    /// Lowercase name, as in the JSON and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Placed => "placed",
            Stage::Paid => "paid",
            Stage::Failed => "failed",
            Stage::Points => "points",
            Stage::Sms => "sms",
            Stage::Logged => "logged",
        }
    }

    /// The stage an event marks.
    pub fn of_event(kind: EventKind) -> Stage {
        match kind {
            EventKind::OrderPlaced => Stage::Placed,
            EventKind::PaymentSucceeded => Stage::Paid,
            EventKind::PaymentFailed => Stage::Failed,
            EventKind::PointsAwarded => Stage::Points,
            EventKind::SmsSent => Stage::Sms,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// When one order reached each stage (from the start of the run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Journey {
    reached: [Option<Duration>; 6],
}

impl Journey {
    /// When the order reached `stage`, if it did.
    pub fn at(&self, stage: Stage) -> Option<Duration> {
        self.reached[stage.index()]
    }

    /// Whether every event the order will ever publish has been seen: declined, or paid
    /// with points and SMS.
    pub fn events_complete(&self) -> bool {
        let seen = |stage| self.at(stage).is_some();
        seen(Stage::Placed)
            && (seen(Stage::Failed)
                || (seen(Stage::Paid) && seen(Stage::Points) && seen(Stage::Sms)))
    }

    /// The event types the logging service must hold once the order is complete.
    pub fn expected_log(&self) -> &'static [EventKind] {
        if self.at(Stage::Failed).is_some() {
            &[EventKind::OrderPlaced, EventKind::PaymentFailed]
        } else {
            &[
                EventKind::OrderPlaced,
                EventKind::PaymentSucceeded,
                EventKind::PointsAwarded,
                EventKind::SmsSent,
            ]
        }
    }

    /// Reached its end; `with_logging`: and is fully logged.
    pub fn settled(&self, with_logging: bool) -> bool {
        self.events_complete() && (!with_logging || self.at(Stage::Logged).is_some())
    }
}

/// Every order's journey, shared by the observer, the log checker and the report.
#[derive(Debug, Default)]
pub struct Journeys {
    inner: Mutex<JourneysInner>,
}

#[derive(Debug, Default, Clone)]
struct JourneysInner {
    orders: HashMap<Uuid, Journey>,
    /// Sightings of a stage an order had already reached (redeliveries, republishes).
    repeats: [u64; 6],
}

/// What [`Journeys::reach`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// The order reached this stage for the first time.
    pub first: bool,
    /// With it, every event of the order has now been seen.
    pub events_complete: bool,
}

impl Journeys {
    /// Records that `order_id` reached `stage` at `at`.
    pub fn reach(&self, order_id: Uuid, stage: Stage, at: Duration) -> Reached {
        let mut guard = self.inner.lock().expect("journeys lock");
        let inner = &mut *guard;
        let journey = inner.orders.entry(order_id).or_default();
        if journey.at(stage).is_some() {
            inner.repeats[stage.index()] += 1;
            return Reached {
                first: false,
                events_complete: false,
            };
        }
        let was_complete = journey.events_complete();
        journey.reached[stage.index()] = Some(at);
        Reached {
            first: true,
            events_complete: !was_complete && journey.events_complete(),
        }
    }

    /// One order's journey so far.
    pub fn get(&self, order_id: &Uuid) -> Option<Journey> {
        self.inner
            .lock()
            .expect("journeys lock")
            .orders
            .get(order_id)
            .copied()
    }

    /// How many of `orders` are settled.
    pub fn settled_among(&self, orders: &[(Uuid, Duration)], with_logging: bool) -> usize {
        let inner = self.inner.lock().expect("journeys lock");
        orders
            .iter()
            .filter(|(order_id, _)| {
                inner
                    .orders
                    .get(order_id)
                    .is_some_and(|journey| journey.settled(with_logging))
            })
            .count()
    }

    /// Every journey, and the repeats per stage.
    pub fn snapshot(&self) -> (HashMap<Uuid, Journey>, [u64; 6]) {
        let inner = self.inner.lock().expect("journeys lock");
        (inner.orders.clone(), inner.repeats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_complete_once_declined_or_paid_with_points_and_sms() {
        let journeys = Journeys::default();
        let (paid, declined) = (Uuid::now_v7(), Uuid::now_v7());
        let at = Duration::from_millis;
        assert!(journeys.reach(paid, Stage::Placed, at(1)).first);
        assert!(!journeys.reach(paid, Stage::Placed, at(2)).first);
        journeys.reach(paid, Stage::Paid, at(3));
        assert!(!journeys.reach(paid, Stage::Sms, at(4)).events_complete);
        assert!(journeys.reach(paid, Stage::Points, at(5)).events_complete);
        journeys.reach(declined, Stage::Placed, at(1));
        assert!(
            journeys
                .reach(declined, Stage::Failed, at(2))
                .events_complete
        );
        let journey = journeys.get(&paid).unwrap();
        assert_eq!(journey.at(Stage::Placed), Some(at(1)));
        assert!(journey.settled(false) && !journey.settled(true));
        assert_eq!(journey.expected_log().len(), 4);
        assert_eq!(journeys.get(&declined).unwrap().expected_log().len(), 2);
        let (_, repeats) = journeys.snapshot();
        assert_eq!(repeats[Stage::Placed as usize], 1);
    }
}
