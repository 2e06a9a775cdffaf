//! The five stages of an order's journey that reconciliation checks, and the tally of
//! what is missing, doubled or orphaned at each.

use std::collections::BTreeMap;

use serde::Serialize;

/// One stage of the flow, in flow order (the order the table prints them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The payment service decided the order once.
    Payment,
    /// The order service applied that decision to the order.
    OrderStatus,
    /// The points service awarded a paid order its points once.
    Points,
    /// The SMS service texted about a paid order once.
    Sms,
    /// The logging service stored each event of the journey once.
    Log,
}

impl Stage {
    /// Every stage, in flow order.
    pub const ALL: [Stage; 5] = [
        Stage::Payment,
        Stage::OrderStatus,
        Stage::Points,
        Stage::Sms,
        Stage::Log,
    ];

    /// The name printed in the table and used as the JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Payment => "payment",
            Stage::OrderStatus => "order_status",
            Stage::Points => "points",
            Stage::Sms => "sms",
            Stage::Log => "log",
        }
    }
}

/// Missing, doubled and orphan effects per stage, every stage present (a zero is a
/// finding too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    pub missing: BTreeMap<Stage, u64>,
    pub doubled: BTreeMap<Stage, u64>,
    pub orphans: BTreeMap<Stage, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        let zero: BTreeMap<Stage, u64> = Stage::ALL.iter().map(|stage| (*stage, 0)).collect();
        Tally {
            missing: zero.clone(),
            doubled: zero.clone(),
            orphans: zero,
        }
    }
}

impl Tally {
    /// `count` expected effects of `stage` are absent.
    pub fn miss(&mut self, stage: Stage, count: u64) {
        *self.missing.entry(stage).or_default() += count;
    }

    /// `count` effects of `stage` happened beyond the one expected.
    pub fn double(&mut self, stage: Stage, count: u64) {
        *self.doubled.entry(stage).or_default() += count;
    }

    /// `count` effects of `stage` exist for an order the order service does not have.
    pub fn orphan(&mut self, stage: Stage, count: u64) {
        *self.orphans.entry(stage).or_default() += count;
    }

    /// "exactly one" of `stage`, given how many there are: none is missing, more doubled.
    pub fn expect_one(&mut self, stage: Stage, count: u64) {
        match count {
            0 => self.miss(stage, 1),
            1 => {}
            more => self.double(stage, more - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_serialize_under_their_table_names() {
        for stage in Stage::ALL {
            assert_eq!(
                serde_json::to_value(stage).unwrap(),
                serde_json::Value::from(stage.name())
            );
        }
    }
}
