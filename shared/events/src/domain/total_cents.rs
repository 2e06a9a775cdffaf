//! [`TotalCents`]: an amount a customer can be charged.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// An order total, and so the amount the payment service charges: 1 ..=
/// [`TotalCents::MAX`] cents.
///
/// Zero is refused: an order the API accepts must be payable, and no gateway charges
/// nothing, so a free order would sit unpaid forever. The cap (1,000,000.00) is far above
/// any real basket of the demo shop and far below where arithmetic on totals downstream
/// (points, sums in reconciliation) could overflow `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct TotalCents(i64);

impl TotalCents {
    /// The field name in `order.placed` (the payment events call it `amount_cents`).
    pub const FIELD: &'static str = "total_cents";

    /// The largest total, in cents.
    pub const MAX: i64 = 100_000_000;

    /// Checks `raw` is in 1 ..= [`TotalCents::MAX`].
    pub fn parse(raw: i64) -> Result<TotalCents, FieldError> {
        if raw < 1 {
            Err(FieldError::new(
                Self::FIELD,
                format!(
                    "must be at least 1 cent (found {raw}): an order of nothing cannot be paid"
                ),
            ))
        } else if raw > Self::MAX {
            Err(FieldError::new(
                Self::FIELD,
                format!("must be at most {} cents (found {raw})", Self::MAX),
            ))
        } else {
            Ok(TotalCents(raw))
        }
    }

    /// The amount in cents.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for TotalCents {
    type Error = FieldError;

    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        TotalCents::parse(raw)
    }
}

impl From<TotalCents> for i64 {
    fn from(total: TotalCents) -> i64 {
        total.0
    }
}

impl std::fmt::Display for TotalCents {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cent_to_the_cap_is_valid() {
        assert_eq!(TotalCents::parse(1).unwrap().get(), 1);
        assert_eq!(
            TotalCents::parse(TotalCents::MAX).unwrap().get(),
            100_000_000
        );
    }

    #[test]
    fn zero_and_negative_totals_are_refused_as_unpayable() {
        for raw in [0, -1, i64::MIN] {
            let error = TotalCents::parse(raw).unwrap_err();
            assert_eq!(error.field(), "total_cents");
            assert!(
                error.problem().starts_with("must be at least 1 cent"),
                "{error}"
            );
        }
    }

    #[test]
    fn totals_over_the_cap_are_refused() {
        let error = TotalCents::parse(TotalCents::MAX + 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "total_cents must be at most 100000000 cents (found 100000001)"
        );
    }

    #[test]
    fn serde_round_trips_as_a_plain_number() {
        let total = TotalCents::parse(7_100).unwrap();
        assert_eq!(serde_json::to_string(&total).unwrap(), "7100");
        assert_eq!(serde_json::from_str::<TotalCents>("7100").unwrap(), total);
    }

    #[test]
    fn decoding_a_bad_total_fails_with_the_rule() {
        let error = serde_json::from_str::<TotalCents>("0").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("total_cents must be at least 1 cent"),
            "{error}"
        );
    }
}
