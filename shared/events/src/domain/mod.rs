//! The values an order is made of, as types that cannot hold a bad value.
//!
//! Each type has one way in, `parse`, which checks the rules and returns a
//! [`FieldError`] naming the field and what is wrong with it. Serde goes through the same
//! door (`#[serde(try_from = …)]`), so decoding an event *is* validating it: a payload with
//! `"quantity": 0` fails [`crate::Event::decode`] with the path of the bad field, and the
//! kit's consumer loop dead-letters it at once instead of handing a handler a value it
//! would have to re-check. The order API parses requests through the same types, so what
//! the API accepts and what the consumers accept are one set of rules, written once.
//!
//! | type | file | rule |
//! | --- | --- | --- |
//! | [`UserId`] | `user_id.rs` | 1 ..= 2⁶³−1 (it is stored as a signed 64-bit `BIGINT`) |
//! | [`Phone`] | `phone.rs` | 6–15 ASCII digits with an optional leading `+` |
//! | [`Sku`] | `sku.rs` | 1–64 characters after trimming, no control, invisible or bidi-control characters |
//! | [`Quantity`] | `quantity.rs` | 1 ..= 10,000 units |
//! | [`Cents`] | `cents.rs` | a unit price: 0 or more cents |
//! | [`TotalCents`] | `total_cents.rs` | an amount that can be charged: 1 ..= 100,000,000 cents |
//!
//! On the wire every type is the plain JSON value it wraps (a number or a string), so the
//! format in `docs/events.md` did not change when these types arrived; only what a
//! consumer accepts did.
//!
//! Rules that relate fields to each other (an order's total is the sum of its lines) are
//! not a value's business; they stay with the code that owns the relation.

mod cents;
mod field_error;
mod phone;
mod quantity;
mod sku;
mod total_cents;
mod user_id;

pub use cents::Cents;
pub use field_error::FieldError;
pub use phone::Phone;
pub use quantity::Quantity;
pub use sku::Sku;
pub use total_cents::TotalCents;
pub use user_id::UserId;
