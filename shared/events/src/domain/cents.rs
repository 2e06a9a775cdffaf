//! [`Cents`]: the price of one unit.

use serde::{Deserialize, Serialize};

use super::{FieldError, Quantity};

/// A unit price in cents (fen): zero or more, an integer — never floating-point money.
///
/// Zero is allowed (a free sample in a paid basket); whether the *order* can be paid is
/// [`super::TotalCents`]'s rule. There is no upper bound here: an absurd price is refused
/// by the order total's cap, where the sum of the lines is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Cents(i64);

impl Cents {
    /// The field name in events and requests.
    pub const FIELD: &'static str = "unit_price_cents";

    /// Checks `raw` is not negative.
    pub fn parse(raw: i64) -> Result<Cents, FieldError> {
        if raw >= 0 {
            Ok(Cents(raw))
        } else {
            Err(FieldError::new(Self::FIELD, "must not be negative"))
        }
    }

    /// The amount in cents.
    pub fn get(self) -> i64 {
        self.0
    }

    /// `quantity` units at this price, or `None` if that overflows `i64`.
    pub fn times(self, quantity: Quantity) -> Option<i64> {
        self.0.checked_mul(i64::from(quantity.get()))
    }
}

impl TryFrom<i64> for Cents {
    type Error = FieldError;

    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Cents::parse(raw)
    }
}

impl From<Cents> for i64 {
    fn from(cents: Cents) -> i64 {
        cents.0
    }
}

impl std::fmt::Display for Cents {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_positive_prices_are_valid() {
        assert_eq!(Cents::parse(0).unwrap().get(), 0);
        assert_eq!(Cents::parse(3_550).unwrap().get(), 3_550);
        assert_eq!(Cents::parse(i64::MAX).unwrap().get(), i64::MAX);
    }

    #[test]
    fn negative_prices_are_refused_naming_the_field() {
        for raw in [-1, i64::MIN] {
            assert_eq!(
                Cents::parse(raw).unwrap_err().to_string(),
                "unit_price_cents must not be negative"
            );
        }
    }

    #[test]
    fn line_totals_are_checked_arithmetic() {
        let two = Quantity::parse(2).unwrap();
        assert_eq!(Cents::parse(3_550).unwrap().times(two), Some(7_100));
        assert_eq!(Cents::parse(i64::MAX).unwrap().times(two), None);
    }

    #[test]
    fn serde_round_trips_as_a_plain_number() {
        let price = Cents::parse(1_990).unwrap();
        assert_eq!(serde_json::to_string(&price).unwrap(), "1990");
        assert_eq!(serde_json::from_str::<Cents>("1990").unwrap(), price);
    }

    #[test]
    fn decoding_a_bad_price_fails_with_the_rule() {
        let error = serde_json::from_str::<Cents>("-1").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unit_price_cents must not be negative"),
            "{error}"
        );
        assert!(serde_json::from_str::<Cents>("19.90").is_err());
    }
}
