//! One forward pass of any [`Decoder`] under one adapter's [`Conditioning`], with Hugging Face
//! PEFT's semantics (see [`crate::layout`] for where each entry sits):
//!
//! - prompt tuning: the virtual tokens come before the input embeddings and take positions
//!   `0..p`, the real tokens `p, p+1, ...`; the hidden states cover the virtual positions too;
//! - prefix tuning: the prefix is `p` keys/values at every layer; real tokens take positions
//!   `p, p+1, ...` and the hidden states cover only them.

use burn::prelude::*;
use peft_core::{Adapter, Conditioning, ParameterCount, PeftAdapter};

use crate::batch::PadSide;
use crate::decoder::Decoder;
use crate::layout::{AdaptedInput, MixedRow};
use crate::loss::IGNORE_INDEX;
use crate::precision::{cast_floats, cast_floats_tracked};
use burn::tensor::DType;

/// Logits `[B, prompt + T, vocab]` for token ids `[B, T]` (right-padded, `mask` true for real
/// tokens, `None` if every token is real) under `conditioning`.
pub fn forward_conditioned(
    model: &impl Decoder,
    ids: Tensor<2, Int>,
    mask: Option<Tensor<2, Bool>>,
    conditioning: &Conditioning,
) -> Tensor<3> {
    model.logits(hidden_conditioned(model, ids, mask, conditioning))
}

/// The final hidden states `[B, prompt + T, d]` (after the last norm) that
/// [`forward_conditioned`] turns into logits.
///
/// Reads the ids back to the host to lay the batch out; a training loop that has them there
/// already calls [`hidden_of_rows`].
pub fn hidden_conditioned(
    model: &impl Decoder,
    ids: Tensor<2, Int>,
    mask: Option<Tensor<2, Bool>>,
    conditioning: &Conditioning,
) -> Tensor<3> {
    let [batch, width] = ids.dims();
    let ids = host_ints(ids);
    let mask = mask.map_or_else(|| vec![1; batch * width], |mask| host_ints(mask.int()));
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|row| {
            let span = row * width..(row + 1) * width;
            let real = mask[span.clone()].iter().take_while(|&&m| m != 0).count();
            assert!(
                mask[span.start + real..span.end].iter().all(|&m| m == 0),
                "row {row} is not right-padded: its mask has a real token after padding"
            );
            ids[span.start..span.start + real]
                .iter()
                .map(|&id| id as u32)
                .collect()
        })
        .collect();
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    assert_eq!(
        longest, width,
        "the ids have {width} columns but their longest row {longest} tokens: pad to the \
         longest row"
    );
    hidden_of_rows(model, &rows, conditioning)
}

/// The final hidden states `[B, prompt + T, d]` of token rows under one conditioning,
/// right-padded to the longest (`T` tokens), as [`crate::layout`] lays them out.
///
/// Panics if a row is empty or does not fit the model's positions; user input is checked
/// against both before it gets here.
pub fn hidden_of_rows(
    model: &impl Decoder,
    rows: &[Vec<u32>],
    conditioning: &Conditioning,
) -> Tensor<3> {
    let rows: Vec<MixedRow<'_>> = rows
        .iter()
        .map(|tokens| MixedRow {
            tokens,
            conditioning,
        })
        .collect();
    AdaptedInput::new(model, &rows, 0, PadSide::Right)
        .unwrap_or_else(|err| panic!("{err}"))
        .hidden(model, None)
}

/// Labels aligned with [`forward_conditioned`]'s logits: `prompt_len` ignored entries in
/// front of `labels` `[B, T]` (so the last virtual token predicts the first real one, as in
/// PEFT).
pub fn conditioned_labels(labels: Tensor<2, Int>, conditioning: &Conditioning) -> Tensor<2, Int> {
    let prompt_len = conditioning.prompt_len();
    if prompt_len == 0 {
        return labels;
    }
    let [batch, _] = labels.dims();
    let ignored = Tensor::<2, Int>::full([batch, prompt_len], IGNORE_INDEX, &labels.device());
    Tensor::cat(vec![ignored, labels], 1)
}

/// An integer tensor's values, row-major, on the host.
fn host_ints(tensor: Tensor<2, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("integer data reads as i64")
}

/// A frozen model with an optional adapter: the module that is trained (only the adapter's
/// parameters require gradients) and evaluated.
#[derive(Module, Debug)]
pub struct Adapted<M: Module> {
    pub base: M,
    pub adapter: Option<PeftAdapter>,
    /// Every base weight is trained (the baseline adapters are compared with).
    #[module(skip)]
    pub full_finetune: bool,
    /// For full fine-tuning in mixed precision: the half type the forward pass runs in, while
    /// `base` keeps its trained weights in f32 (see [`Self::running_base`]).
    #[module(skip)]
    pub compute_dtype: Option<DType>,
}

impl<M: Module + Decoder> Adapted<M> {
    /// Freezes `base` (no gradients, no weight updates) and attaches `adapter`, whose
    /// parameters are f32 whatever the base's float type (see [`crate::precision`]).
    pub fn new(base: M, adapter: Option<PeftAdapter>) -> Self {
        Self {
            base: base.freeze(),
            adapter: adapter.map(|adapter| cast_floats(adapter, DType::F32)),
            full_finetune: false,
            compute_dtype: None,
        }
    }

    /// The whole model trainable, no adapter.
    pub fn full_finetune(base: M) -> Self {
        Self {
            base,
            adapter: None,
            full_finetune: true,
            compute_dtype: None,
        }
    }

    /// Full fine-tuning whose forward pass runs in `dtype` (bf16 or f16) while the trained
    /// weights, their gradients and the optimizer's state stay in the base's f32, as under
    /// PyTorch autocast.
    pub fn computing_in(mut self, dtype: DType) -> Self {
        if self.full_finetune && dtype != DType::F32 {
            self.compute_dtype = Some(dtype);
        }
        self
    }

    /// The base as the forward pass runs it: `base` itself, or for full fine-tuning in mixed
    /// precision a copy in the half type whose weights are casts of the f32 ones, so that the
    /// gradients reach the f32 weights (a clone of a module shares its tensors).
    pub fn running_base(&self) -> M {
        match self.compute_dtype {
            Some(dtype) => cast_floats_tracked(self.base.clone(), dtype),
            None => self.base.clone(),
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
        let logits = forward_conditioned(&self.running_base(), ids, mask, &conditioning);
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
