//! GPT-2 under an adapter's [`Conditioning`] — PEFT's semantics are in
//! [`peft_decoder::adapted`] — and [`AdaptedGpt2`], the module that is trained. For prompt
//! tuning the logits cover the virtual positions too, and [`conditioned_labels`](peft_decoder::adapted::conditioned_labels) puts `p` ignored
//! labels in front (so the last virtual token predicts the first real one, as in PEFT).

use burn::prelude::*;
use peft_core::{Adapter, Conditioning, ParameterCount, PeftAdapter};
use peft_decoder::adapted::{self, conditioned_labels};

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
#[derive(Module, Debug)]
pub struct AdaptedGpt2 {
    pub base: Gpt2,
    pub adapter: Option<PeftAdapter>,
    /// Every base weight is trained (the baseline adapters are compared with).
    #[module(skip)]
    pub full_finetune: bool,
}

impl AdaptedGpt2 {
    /// Freezes `base` (no gradients, no weight updates) and attaches `adapter`.
    pub fn new(base: Gpt2, adapter: Option<PeftAdapter>) -> Self {
        Self {
            base: base.freeze(),
            adapter,
            full_finetune: false,
        }
    }

    /// The whole model trainable, no adapter.
    pub fn full_finetune(base: Gpt2) -> Self {
        Self {
            base,
            adapter: None,
            full_finetune: true,
        }
    }

    /// The adapter's conditioning for one forward pass (nothing without an adapter).
    pub fn conditioning(&self) -> Conditioning {
        Conditioning::of(self.adapter.as_ref())
    }

    /// Logits `[B, virtual + T, vocab]` and the labels aligned with them, for right-padded ids
    /// `[B, T]` whose loss targets are `labels` (`IGNORE_INDEX` where nothing is predicted).
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Bool>>,
        labels: Tensor<2, Int>,
    ) -> (Tensor<3>, Tensor<2, Int>) {
        let conditioning = self.conditioning();
        let logits = self.base.forward_conditioned(ids, mask, &conditioning);
        (logits, conditioned_labels(labels, &conditioning))
    }

    /// Trainable and total parameters, as PEFT's `print_trainable_parameters` counts them.
    pub fn parameter_count(&self) -> ParameterCount {
        if self.full_finetune {
            let all = self.base.num_params();
            return ParameterCount {
                trainable: all,
                total: all,
            };
        }
        let adapter = self
            .adapter
            .as_ref()
            .map_or(0, Adapter::num_trainable_params);
        ParameterCount::adapter_on(self.base.num_params(), adapter)
    }
}
