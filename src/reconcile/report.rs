//! The verdict of a reconciliation, and the table a person reads.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Stage;

/// The verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Orders the order service stores.
    pub placed: u64,
    /// Of which paid.
    pub paid: u64,
    /// Of which declined.
    pub payment_failed: u64,
    /// Ledger rows.
    pub points_awarded: u64,
    /// Sum of points in the ledger.
    pub points_total: i64,
    /// What the points rule gives, summed over paid orders.
    pub points_expected: i64,
    /// Charges the payment gateway made, from its own books.
    pub charges_made: u64,
    /// SMS rows (the SMS service's record, one per order at most).
    pub sms_sent: u64,
    /// Texts the SMS gateway dispatched, from its own books (not unique per order).
    pub texts_dispatched: u64,
    /// SMS rows per sending instance.
    pub sms_by_instance: BTreeMap<String, u64>,
    /// Events stored by the logging service.
    pub events_logged: u64,
    /// Redeliveries recognised and ignored, all services.
    pub duplicates_ignored: u64,
    /// Deliveries the services saw that may have been handed out before, all services.
    pub redeliveries: u64,
    /// Messages dead-lettered, all services.
    pub dead_lettered: u64,
    /// Expected effects that are absent, per stage.
    pub missing: BTreeMap<Stage, u64>,
    /// Effects beyond the one expected, per stage (counted at the gateways for payment
    /// and SMS).
    pub doubled: BTreeMap<Stage, u64>,
    /// Effects for orders the order service does not have, per stage.
    pub orphans: BTreeMap<Stage, u64>,
    /// Wall time of the run that produced this (demo), if measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

impl Report {
    /// Nothing missing, nothing doubled, no orphan effect.
    pub fn is_exact(&self) -> bool {
        self.missing_total() == 0 && self.doubled_total() == 0 && self.orphans_total() == 0
    }

    /// How many expected effects are still absent, all stages.
    pub fn missing_total(&self) -> u64 {
        self.missing.values().sum()
    }

    /// How many effects happened beyond the one expected, all stages.
    pub fn doubled_total(&self) -> u64 {
        self.doubled.values().sum()
    }

    /// How many effects exist for orders the order service does not have, all stages.
    pub fn orphans_total(&self) -> u64 {
        self.orphans.values().sum()
    }

    /// A table for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line =
            |label: &str, value: String| out.push_str(&format!("  {label:<28} {value}\n"));
        line("orders placed", self.placed.to_string());
        line("  paid", self.paid.to_string());
        line("  payment failed", self.payment_failed.to_string());
        line(
            "points awarded (orders)",
            format!("{}", self.points_awarded),
        );
        line(
            "points total / expected",
            format!("{} / {}", self.points_total, self.points_expected),
        );
        line("charges made (gateway)", self.charges_made.to_string());
        line("SMS sent", self.sms_sent.to_string());
        if self.sms_by_instance.len() > 1 {
            for (instance, count) in &self.sms_by_instance {
                line(&format!("  by {instance}"), count.to_string());
            }
        }
        line(
            "texts dispatched (gateway)",
            self.texts_dispatched.to_string(),
        );
        line("events logged", self.events_logged.to_string());
        line(
            "duplicate deliveries ignored",
            self.duplicates_ignored.to_string(),
        );
        line("redeliveries seen", self.redeliveries.to_string());
        line("dead-lettered", self.dead_lettered.to_string());
        out.push_str(&format!(
            "  {:<28} {:>8} {:>8} {:>8}\n",
            "stage", "missing", "doubled", "orphans"
        ));
        let count = |counts: &BTreeMap<Stage, u64>, stage| counts.get(&stage).copied().unwrap_or(0);
        for stage in Stage::ALL {
            out.push_str(&format!(
                "  {:<28} {:>8} {:>8} {:>8}\n",
                stage.name(),
                count(&self.missing, stage),
                count(&self.doubled, stage),
                count(&self.orphans, stage)
            ));
        }
        if let Some(elapsed) = self.elapsed_ms {
            out.push_str(&format!("  {:<28} {elapsed} ms\n", "elapsed"));
        }
        out.push_str(if self.is_exact() {
            "  EXACT: every effect happened once\n"
        } else {
            "  NOT EXACT: see missing / doubled / orphans above\n"
        });
        out
    }
}
