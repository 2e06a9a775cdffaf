//! The ledger of one fault run, Jepsen style: what the client did, what the system says it
//! did, and the difference — as a table for people and as JSON for scripts and tests.
//!
//! | line | counted from |
//! | --- | --- |
//! | sent | orders the client tried to place |
//! | accepted | orders the order API answered with an order id (retries under one `Idempotency-Key` count once) |
//! | settled | stored orders in an end state (`paid` or `payment_failed`) |
//! | lost | accepted orders the order service does not store, plus every expected effect that is absent (no end state, no payment, no points, no SMS, an event not logged) |
//! | doubled | effects beyond the one expected, per the reconciliation — a second charge or text counted in the payment and SMS gateways' own books, more points than the rule gives, an event logged twice |
//! | orphans | effects for orders the order service does not have |
//! | duplicates absorbed | redeliveries the idempotent consumers recognised and acked without an effect |
//! | redeliveries | deliveries the services saw that may have been handed out before: retries, and what the broker marks as possibly delivered already (`orderflow_kit::consumer::counters::REDELIVERIES`; on Kafka every record already in a partition when it was assigned counts, so this over-counts after a rebalance). The duplicates absorbed are the redeliveries of work already done |
//! | dead letters | messages the services dead-lettered; with poison in the stream at least one per poison message and receiving group. More is possible and is not a loss: a dead letter whose original could not be acked (the broker killed or cut off in between) is delivered again and dead-lettered again — at-least-once holds for the dead-letter queue too. A real message dead-lettered by mistake would show as lost (its effect missing) |
//! | time to recover | from the end of the fault until every accepted order had settled with every effect |
//!
//! A run *passes* when lost, doubled and orphans are zero and the dead letters are exactly the
//! poison the suite published (each poison message is one dead letter per group that
//! receives its topic).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::reconcile::{Report, Snapshot};

/// One run's ledger.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ledger {
    /// The scenario's name (`kill-consumer`, …).
    pub scenario: String,
    /// `rabbitmq`, `kafka` or `memory`.
    pub backend: String,
    /// What was done to the system, in order, with the offset from the start in ms.
    pub faults: Vec<String>,
    /// Orders the client tried to place.
    pub sent: u64,
    /// Orders the API accepted.
    pub accepted: u64,
    /// Orders the order service stores.
    pub stored: u64,
    /// Stored orders in an end state.
    pub settled: u64,
    /// Accepted orders not stored, plus expected effects that are absent.
    pub lost: u64,
    /// Of `lost`: accepted orders the order service does not have at all.
    pub accepted_not_stored: u64,
    /// Effects beyond the one expected.
    pub doubled: u64,
    /// Effects for orders nobody placed.
    pub orphans: u64,
    /// Redeliveries recognised and ignored by the idempotent consumers.
    pub duplicates_absorbed: u64,
    /// Deliveries that may have been handed out before, as the services count them.
    pub redeliveries: u64,
    /// Messages the services dead-lettered.
    pub dead_letters: u64,
    /// Malformed messages the suite published straight to the topics.
    pub poison_published: u64,
    /// Dead letters those should produce: one per group receiving each one's topic.
    pub dead_letters_expected: u64,
    /// Fault end → everything settled, in ms (`None` when it never settled).
    pub time_to_recover_ms: Option<u64>,
    /// Missing effects per stage, for the reader who wants to know where.
    pub missing_by_stage: BTreeMap<String, u64>,
    /// Doubled effects per stage.
    pub doubled_by_stage: BTreeMap<String, u64>,
    /// lost = 0, doubled = 0, orphans = 0 and dead letters = expected.
    pub passed: bool,
    /// Where the run's logs were kept (failed runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// What the run itself observed, beside the services' reports.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The scenario's name.
    pub scenario: String,
    /// The backend's name.
    pub backend: String,
    /// The fault timeline.
    pub faults: Vec<String>,
    /// Orders the client tried to place.
    pub sent: u64,
    /// The ids of the orders the API accepted.
    pub accepted: Vec<String>,
    /// Poison messages published.
    pub poison_published: u64,
    /// Dead letters they should produce.
    pub dead_letters_expected: u64,
    /// Fault end → settled, when it settled.
    pub time_to_recover_ms: Option<u64>,
}

impl Ledger {
    /// Puts what the client saw next to what the services report.
    pub fn new(observed: Observed, report: &Report, snapshot: &Snapshot) -> Ledger {
        let stored: HashSet<&str> = snapshot
            .orders
            .iter()
            .map(|order| order.order_id.as_str())
            .collect();
        let accepted_not_stored = observed
            .accepted
            .iter()
            .filter(|id| !stored.contains(id.as_str()))
            .count() as u64;
        let per_stage = |counts: &BTreeMap<crate::reconcile::Stage, u64>| {
            counts
                .iter()
                .map(|(stage, count)| (stage.name().to_owned(), *count))
                .collect::<BTreeMap<_, _>>()
        };
        let lost = accepted_not_stored + report.missing_total();
        let doubled = report.doubled_total();
        let orphans = report.orphans_total();
        let dead_letters = report.dead_lettered;
        let passed = lost == 0
            && doubled == 0
            && orphans == 0
            // At least the poison; a repeat is at-least-once on the dead-letter queue (see
            // the table above), a real message dead-lettered would be counted as lost.
            && dead_letters >= observed.dead_letters_expected;
        Ledger {
            scenario: observed.scenario,
            backend: observed.backend,
            faults: observed.faults,
            sent: observed.sent,
            accepted: observed.accepted.len() as u64,
            stored: report.placed,
            settled: report.paid + report.payment_failed,
            lost,
            accepted_not_stored,
            doubled,
            orphans,
            duplicates_absorbed: report.duplicates_ignored,
            redeliveries: report.redeliveries,
            dead_letters,
            poison_published: observed.poison_published,
            dead_letters_expected: observed.dead_letters_expected,
            time_to_recover_ms: observed.time_to_recover_ms,
            missing_by_stage: per_stage(&report.missing),
            doubled_by_stage: per_stage(&report.doubled),
            passed,
            logs: None,
        }
    }

    /// The table people read.
    pub fn render(&self) -> String {
        let mut out = format!("chaos {} on {}\n", self.scenario, self.backend);
        for fault in &self.faults {
            out.push_str(&format!("  fault  {fault}\n"));
        }
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("  {label:<34} {value:>10}\n"));
        };
        line("orders sent", self.sent.to_string());
        line("orders accepted", self.accepted.to_string());
        line("orders stored", self.stored.to_string());
        line("orders settled", self.settled.to_string());
        line("LOST", self.lost.to_string());
        line(
            "  accepted, never stored",
            self.accepted_not_stored.to_string(),
        );
        for (stage, count) in self.missing_by_stage.iter().filter(|(_, n)| **n > 0) {
            line(&format!("  {stage} effect missing"), count.to_string());
        }
        line("DOUBLED", self.doubled.to_string());
        for (stage, count) in self.doubled_by_stage.iter().filter(|(_, n)| **n > 0) {
            line(&format!("  {stage} effect doubled"), count.to_string());
        }
        line("orphans", self.orphans.to_string());
        line("duplicates absorbed", self.duplicates_absorbed.to_string());
        line("redeliveries", self.redeliveries.to_string());
        line(
            "dead letters / expected",
            format!("{} / {}", self.dead_letters, self.dead_letters_expected),
        );
        line("poison published", self.poison_published.to_string());
        line(
            "time to recover",
            self.time_to_recover_ms.map_or("never".to_owned(), |ms| {
                format!("{:.1} s", ms as f64 / 1000.0)
            }),
        );
        out.push_str(if self.passed {
            "  PASSED: nothing lost, nothing doubled\n"
        } else {
            "  FAILED: see LOST / DOUBLED / dead letters above\n"
        });
        if let Some(logs) = &self.logs {
            out.push_str(&format!("  logs kept in {logs}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(accepted: &[&str]) -> Observed {
        Observed {
            scenario: "test".into(),
            backend: "memory".into(),
            sent: accepted.len() as u64,
            accepted: accepted.iter().map(|id| (*id).to_owned()).collect(),
            ..Observed::default()
        }
    }

    #[test]
    fn an_accepted_order_the_order_service_does_not_store_is_lost() {
        let report = Report {
            placed: 0,
            ..Report::default()
        };
        let ledger = Ledger::new(observed(&["o-1"]), &report, &Snapshot::default());
        assert_eq!(ledger.accepted_not_stored, 1);
        assert_eq!(ledger.lost, 1);
        assert!(!ledger.passed);
        assert!(ledger.render().contains("FAILED"), "{}", ledger.render());
    }

    #[test]
    fn a_doubled_effect_or_a_dead_letter_beyond_the_poison_fails_the_run() {
        let doubled = Report {
            doubled: [(crate::reconcile::Stage::ALL[0], 1)].into_iter().collect(),
            ..Report::default()
        };
        let ledger = Ledger::new(observed(&[]), &doubled, &Snapshot::default());
        assert_eq!(ledger.doubled, 1);
        assert!(!ledger.passed);

        // Fewer dead letters than the poison: a poison message got through somewhere.
        let too_few = Report {
            dead_lettered: 1,
            ..Report::default()
        };
        let mut expecting_two = observed(&[]);
        expecting_two.dead_letters_expected = 2;
        let ledger = Ledger::new(expecting_two.clone(), &too_few, &Snapshot::default());
        assert!(!ledger.passed);
        // More is a dead letter delivered again after its ack was lost: still a pass.
        let repeated = Report {
            dead_lettered: 3,
            redeliveries: 7,
            ..Report::default()
        };
        let ledger = Ledger::new(expecting_two, &repeated, &Snapshot::default());
        assert!(ledger.passed);
        let json = serde_json::to_value(&ledger).unwrap();
        assert_eq!(json["dead_letters"], 3);
        assert_eq!(json["redeliveries"], 7);
    }
}
