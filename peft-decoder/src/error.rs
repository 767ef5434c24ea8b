//! The one error this crate returns: an input the model cannot take, with what to do.

/// An input the model cannot take (an empty row, more positions than the model has, a bad
/// sampling setting); the message says which and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {0}")]
pub struct InputError(pub String);
