//! The one error every domain type's `parse` returns.

/// A value that breaks its type's rules: which field, and what is wrong with it.
///
/// Displayed as a sentence that starts with the field, `quantity must be between 1 and
/// 10000`, so it reads the same in an HTTP error body, a log line and a dead letter's
/// reason. Serde shows this text when a payload fails to decode; the event decoder adds
/// the path of the field inside the event (`items[1].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct FieldError {
    field: &'static str,
    problem: String,
}

impl FieldError {
    /// `field` breaks a rule; `problem` says which, e.g. `"must not be empty"`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            problem: problem.into(),
        }
    }

    /// The field the value was meant for, e.g. `"quantity"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong, without the field's name: `"must be between 1 and 10000"`. For
    /// callers that report the field separately (the order API's `{"error", "field"}`).
    pub fn problem(&self) -> &str {
        &self.problem
    }
}
