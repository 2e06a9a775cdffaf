//! [`Sku`]: which product a line is for.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// A stock-keeping unit such as `tea-500g`: 1 to [`Sku::MAX_CHARS`] characters, with
/// surrounding whitespace trimmed off, and no character a person cannot see.
///
/// SKUs are shown to people (order pages, support tools, logs) and compared by machines
/// (stock, reconciliation). A control character, a zero-width space or a right-to-left
/// override makes two SKUs that look identical differ, or one that looks harmless display
/// as something else (`tea\u{202E}gk5` renders as `tea5kg`), so they are refused rather
/// than stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    /// The field name in events and requests.
    pub const FIELD: &'static str = "sku";

    /// The longest SKU, in characters (not bytes).
    pub const MAX_CHARS: usize = 64;

    /// Trims `raw` and checks what is left, as described on [`Sku`].
    pub fn parse(raw: impl AsRef<str>) -> Result<Sku, FieldError> {
        let sku = raw.as_ref().trim();
        if sku.is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        if sku.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if let Some(hidden) = sku.chars().find(|&c| is_hidden(c)) {
            return Err(FieldError::new(
                Self::FIELD,
                format!(
                    "must not contain control, invisible or bidi-control characters (found U+{:04X})",
                    u32::from(hidden)
                ),
            ));
        }
        Ok(Sku(sku.to_owned()))
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that change how text displays, or display as nothing, without being
/// visible themselves.
fn is_hidden(c: char) -> bool {
    // `is_control` covers the C0 and C1 control codes and DEL; the rest are Unicode
    // format characters that render as nothing or reorder what follows them.
    c.is_control()
        || matches!(c,
            '\u{00AD}'                 // soft hyphen
            | '\u{061C}'               // Arabic letter mark (bidi)
            | '\u{180E}'               // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'  // zero-width space, (non-)joiner, LRM, RLM
            | '\u{202A}'..='\u{202E}'  // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'  // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}'  // bidi isolates
            | '\u{FEFF}'               // zero-width no-break space (BOM)
        )
}

impl TryFrom<String> for Sku {
    type Error = FieldError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Sku::parse(raw)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0
    }
}

impl AsRef<str> for Sku {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_is_valid_and_trimmed() {
        assert_eq!(Sku::parse("tea-500g").unwrap().as_str(), "tea-500g");
        assert_eq!(Sku::parse("  teapot \n").unwrap().as_str(), "teapot");
        assert_eq!(Sku::parse("绿茶-250g").unwrap().as_str(), "绿茶-250g");
        assert!(Sku::parse("x".repeat(Sku::MAX_CHARS)).is_ok());
        // Characters, not bytes: 64 three-byte characters are fine.
        assert!(Sku::parse("茶".repeat(Sku::MAX_CHARS)).is_ok());
    }

    #[test]
    fn empty_and_too_long_skus_are_refused() {
        for empty in ["", "   ", "\t\n"] {
            assert_eq!(
                Sku::parse(empty).unwrap_err().to_string(),
                "sku must not be empty"
            );
        }
        assert_eq!(
            Sku::parse("x".repeat(Sku::MAX_CHARS + 1))
                .unwrap_err()
                .to_string(),
            "sku must be at most 64 characters"
        );
    }

    #[test]
    fn control_invisible_and_bidi_characters_are_refused() {
        for (sku, code) in [
            ("tea\u{0000}", "U+0000"),
            ("tea\u{0007}pot", "U+0007"),
            ("tea\u{007F}", "U+007F"),
            ("tea\u{0085}pot", "U+0085"),
            ("tea\u{200B}pot", "U+200B"),
            ("tea\u{200D}pot", "U+200D"),
            ("tea\u{200F}pot", "U+200F"),
            ("tea\u{202A}pot", "U+202A"),
            ("tea\u{202E}gk5", "U+202E"),
            ("tea\u{2066}pot", "U+2066"),
            ("tea\u{2069}pot", "U+2069"),
            ("\u{FEFF}tea", "U+FEFF"),
            ("tea\u{00AD}pot", "U+00AD"),
            ("tea\u{2060}pot", "U+2060"),
        ] {
            let error = Sku::parse(sku).unwrap_err();
            assert_eq!(error.field(), "sku");
            assert!(
                error.problem().contains("bidi-control") && error.problem().contains(code),
                "{sku:?}: {error}"
            );
        }
    }

    #[test]
    fn serde_round_trips_as_a_plain_string() {
        let sku = Sku::parse("tea-500g").unwrap();
        let json = serde_json::to_string(&sku).unwrap();
        assert_eq!(json, "\"tea-500g\"");
        assert_eq!(serde_json::from_str::<Sku>(&json).unwrap(), sku);
    }

    #[test]
    fn decoding_a_bad_sku_fails_with_the_rule() {
        let error = serde_json::from_str::<Sku>(r#""tea\u202epot""#).unwrap_err();
        assert!(
            error.to_string().contains("sku must not contain"),
            "{error}"
        );
        assert!(serde_json::from_str::<Sku>("42").is_err());
    }
}
