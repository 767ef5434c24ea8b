//! What an adapter contributes to one forward pass of a frozen model.

use burn::prelude::*;

use crate::kv::PrefixKv;

/// The adapter side of a forward pass: virtual-token embeddings to prepend to the input
/// (prompt tuning) and/or keys and values to prepend at every attention layer (prefix tuning).
///
/// Batch dimensions are `1` (one adapter for the whole batch, broadcast) or `B` (one row each).
#[derive(Clone, Debug, Default)]
pub struct Conditioning {
    /// `[1 or B, p, d_model]`.
    pub prompt: Option<Tensor<3>>,
    pub prefix: Option<PrefixKv>,
}

impl Conditioning {
    /// No adapter: the frozen model as it is.
    pub fn none() -> Self {
        Self::default()
    }

    /// Number of virtual tokens prepended to the input.
    pub fn prompt_len(&self) -> usize {
        self.prompt.as_ref().map_or(0, |p| p.dims()[1])
    }

    /// Number of prefix key/value positions at every layer.
    pub fn prefix_len(&self) -> usize {
        self.prefix.as_ref().map_or(0, PrefixKv::len)
    }

    /// Positions the adapter takes from the model's context window.
    pub fn virtual_len(&self) -> usize {
        self.prompt_len() + self.prefix_len()
    }
}
