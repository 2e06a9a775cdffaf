//! [`UserId`]: who placed an order.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// A customer id: a positive integer that fits a signed 64-bit `BIGINT`.
///
/// Every service stores user ids as `BIGINT`, so an id above 2⁶³−1 would be accepted here
/// and then fail (or wrap) in the database; 0 is nobody's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct UserId(i64);

impl UserId {
    /// The field name in events and requests.
    pub const FIELD: &'static str = "user_id";

    /// Checks `raw` is in 1 ..= 2⁶³−1.
    pub fn parse(raw: i64) -> Result<UserId, FieldError> {
        if raw >= 1 {
            Ok(UserId(raw))
        } else {
            Err(FieldError::new(
                Self::FIELD,
                format!("must be between 1 and {}", i64::MAX),
            ))
        }
    }

    /// The id as the `BIGINT` the services store.
    pub fn as_i64(self) -> i64 {
        self.0
    }

    /// The id as an unsigned number (it is never negative).
    pub fn get(self) -> u64 {
        self.0.unsigned_abs()
    }
}

impl TryFrom<i64> for UserId {
    type Error = FieldError;

    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        UserId::parse(raw)
    }
}

impl TryFrom<u64> for UserId {
    type Error = FieldError;

    fn try_from(raw: u64) -> Result<Self, Self::Error> {
        i64::try_from(raw)
            .map_err(|_| {
                FieldError::new(Self::FIELD, format!("must be between 1 and {}", i64::MAX))
            })
            .and_then(UserId::parse)
    }
}

impl From<UserId> for i64 {
    fn from(id: UserId) -> i64 {
        id.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_ids_up_to_the_bigint_limit_are_valid() {
        assert_eq!(UserId::parse(1).unwrap().as_i64(), 1);
        assert_eq!(UserId::parse(i64::MAX).unwrap().get(), i64::MAX as u64);
        assert_eq!(UserId::try_from(42_u64).unwrap().to_string(), "42");
    }

    #[test]
    fn zero_negative_and_oversized_ids_are_refused_naming_the_field() {
        for raw in [0, -1, i64::MIN] {
            let error = UserId::parse(raw).unwrap_err();
            assert_eq!(error.field(), "user_id");
            assert!(
                error
                    .to_string()
                    .starts_with("user_id must be between 1 and"),
                "{error}"
            );
        }
        assert_eq!(UserId::try_from(u64::MAX).unwrap_err().field(), "user_id");
    }

    #[test]
    fn serde_round_trips_as_a_plain_number() {
        let id = UserId::parse(42).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), id);
    }

    #[test]
    fn decoding_a_bad_id_fails_with_the_rule() {
        let error = serde_json::from_str::<UserId>("0").unwrap_err();
        assert!(
            error.to_string().contains("user_id must be between 1"),
            "{error}"
        );
        assert!(serde_json::from_str::<UserId>("-5").is_err());
        assert!(serde_json::from_str::<UserId>("\"42\"").is_err());
    }
}
