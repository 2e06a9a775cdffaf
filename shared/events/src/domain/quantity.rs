//! [`Quantity`]: how many units of one line.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// How many units a line orders: 1 ..= [`Quantity::MAX`].
///
/// Zero is refused because a line of nothing is a mistake, not an order; the upper bound
/// keeps a typo (`10000000`) from becoming a real charge, and keeps quantity × price far
/// from `i64` overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
// Read as i64, so that `0` and `-1` are refused with this type's rule rather than with
// serde's "invalid value: integer `-1`, expected u32".
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    /// The field name in events and requests.
    pub const FIELD: &'static str = "quantity";

    /// The most units of one line.
    pub const MAX: u32 = 10_000;

    /// Checks `raw` is in 1 ..= [`Quantity::MAX`].
    pub fn parse(raw: i64) -> Result<Quantity, FieldError> {
        u32::try_from(raw)
            .ok()
            .filter(|units| (1..=Self::MAX).contains(units))
            .map(Quantity)
            .ok_or_else(|| {
                FieldError::new(Self::FIELD, format!("must be between 1 and {}", Self::MAX))
            })
    }

    /// The number of units.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = FieldError;

    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Quantity::parse(raw)
    }
}

impl From<Quantity> for u32 {
    fn from(quantity: Quantity) -> u32 {
        quantity.0
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_the_maximum_is_valid() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(10_000).unwrap().get(), Quantity::MAX);
    }

    #[test]
    fn zero_negative_and_too_many_are_refused_naming_the_field() {
        for raw in [0, -1, 10_001, i64::MAX, i64::MIN] {
            let error = Quantity::parse(raw).unwrap_err();
            assert_eq!(error.to_string(), "quantity must be between 1 and 10000");
        }
    }

    #[test]
    fn serde_round_trips_as_a_plain_number() {
        let quantity = Quantity::parse(3).unwrap();
        assert_eq!(serde_json::to_string(&quantity).unwrap(), "3");
        assert_eq!(serde_json::from_str::<Quantity>("3").unwrap(), quantity);
    }

    #[test]
    fn decoding_a_bad_quantity_fails_with_the_rule() {
        for bad in ["0", "-1", "10001"] {
            let error = serde_json::from_str::<Quantity>(bad).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("quantity must be between 1 and 10000"),
                "{bad}: {error}"
            );
        }
        assert!(serde_json::from_str::<Quantity>("\"two\"").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
    }
}
