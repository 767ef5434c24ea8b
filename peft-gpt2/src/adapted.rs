//! GPT-2 under an adapter's [`Conditioning`] — PEFT's semantics are in
//! [`peft_decoder::adapted`] — and [`AdaptedGpt2`], the module that is trained. For prompt
//! tuning the logits cover the virtual positions too, and [`conditioned_labels`](peft_decoder::adapted::conditioned_labels) puts `p` ignored
//! labels in front (so the last virtual token predicts the first real one, as in PEFT).

use burn::prelude::*;
use peft_core::Conditioning;
use peft_decoder::adapted::{self, Adapted};

use crate::model::Gpt2;

impl Gpt2 {
    /// Logits `[B, prompt + T, vocab]` for token ids `[B, T]` (right-padded, `mask` true for
    /// real tokens, `None` if every token is real) under `conditioning`.
    pub fn forward_conditioned(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Bool>>,
        conditioning: &Conditioning,
    ) -> Tensor<3> {
        self.logits(self.hidden_conditioned(ids, mask, conditioning))
    }

    /// The final hidden states `[B, prompt + T, d]` that [`Self::forward_conditioned`] turns
    /// into logits (see [`peft_decoder::adapted::hidden_conditioned`]).
    pub fn hidden_conditioned(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Bool>>,
        conditioning: &Conditioning,
    ) -> Tensor<3> {
        adapted::hidden_conditioned(self, ids, mask, conditioning)
    }

    /// The final hidden states `[B, prompt + T, d]` of token rows under one conditioning,
    /// right-padded to the longest (see [`peft_decoder::adapted::hidden_of_rows`]).
    pub fn hidden_of_rows(&self, rows: &[Vec<u32>], conditioning: &Conditioning) -> Tensor<3> {
        adapted::hidden_of_rows(self, rows, conditioning)
    }
}

/// A frozen GPT-2 with an optional adapter: the module that is trained (only the adapter's
/// parameters require gradients) and evaluated.
pub type AdaptedGpt2 = Adapted<Gpt2>;
