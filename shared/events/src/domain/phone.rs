//! [`Phone`]: where the "your order is paid" text goes.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// A phone number the SMS gateway can be handed as is: 6–15 ASCII digits (E.164 allows
/// at most 15) with an optional leading `+`, e.g. `+8613800138000`.
///
/// Nothing else is allowed — no spaces, dashes, letters or full-width digits — so no
/// consumer has to normalise or second-guess it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// The field name in events and requests.
    pub const FIELD: &'static str = "phone";

    /// Checks `raw` is a phone number as described on [`Phone`].
    pub fn parse(raw: impl Into<String>) -> Result<Phone, FieldError> {
        let raw = raw.into();
        let digits = raw.strip_prefix('+').unwrap_or(&raw);
        if (6..=15).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit()) {
            Ok(Phone(raw))
        } else {
            Err(FieldError::new(
                Self::FIELD,
                "must be 6 to 15 digits with an optional leading +, e.g. +8613800138000",
            ))
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = FieldError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Phone::parse(raw)
    }
}

impl From<Phone> for String {
    fn from(phone: Phone) -> String {
        phone.0
    }
}

impl AsRef<str> for Phone {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Phone {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_with_an_optional_plus_are_valid() {
        for good in ["+8613800138000", "123456", "123456789012345", "+123456"] {
            assert_eq!(Phone::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn anything_else_is_refused_naming_the_field() {
        for bad in [
            "",
            "+",
            "12345",
            "1234567890123456",
            "+86 138 0013",
            "138-0013-8000",
            "phone",
            "++123456",
            "１２３４５６",
            "123456\u{200B}",
        ] {
            let error = Phone::parse(bad).unwrap_err();
            assert_eq!(error.field(), "phone", "{bad:?}");
            assert!(error
                .to_string()
                .starts_with("phone must be 6 to 15 digits"));
        }
    }

    #[test]
    fn serde_round_trips_as_a_plain_string() {
        let phone = Phone::parse("+8613800138000").unwrap();
        let json = serde_json::to_string(&phone).unwrap();
        assert_eq!(json, "\"+8613800138000\"");
        assert_eq!(serde_json::from_str::<Phone>(&json).unwrap(), phone);
    }

    #[test]
    fn decoding_a_bad_phone_fails_with_the_rule() {
        let error = serde_json::from_str::<Phone>("\"call me\"").unwrap_err();
        assert!(
            error.to_string().contains("phone must be 6 to 15 digits"),
            "{error}"
        );
    }
}
