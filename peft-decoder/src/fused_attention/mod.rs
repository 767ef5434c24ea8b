//! Attention as one operation with its own backward: `softmax(q·kᵀ·scale + bias)·v` without the
//! `[B, heads, T, S]` score, probability and gradient tensors that Burn's autodiff keeps when it
//! decomposes `attention` into matmuls and a softmax.
//!
//! Burn's backend extension mechanism routes the operation at run time: LibTorch runs PyTorch's
//! scaled-dot-product attention (fused kernels forward and backward), flex and ndarray run the
//! blocked kernel in [`cpu`], and `Autodiff` records one node whose backward calls the backend's
//! [`FusedAttentionOps::fused_attention_backward`]. Other backends (CubeCL: Vulkan, CUDA) are not
//! routed here: [`runs_on`] says so and callers keep the decomposed path there.
//!
//! The bias is a constant (the padding mask as an additive score bias): it receives no
//! gradient. [`Masking`] says whether the operation masks causally itself, by position, so that
//! the kernels can skip the keys a query cannot see (the CPU kernel) or hand causality to kernels
//! that mask by position themselves (LibTorch: PyTorch's flash and memory-efficient kernels
//! without a mask operand), and no `[T, S]` mask is built where none is needed.
//! Dropout on the probabilities happens inside, so that full fine-tuning (GPT-2's attention
//! dropout) stays fused too; the backward must see the forward's mask, which each
//! backend ensures in its own way: LibTorch keeps PyTorch's autograd graph of a forward with
//! dropout (its kernels draw the mask from PyTorch's generator and record what regenerates
//! it), the CPU kernel derives every keep-or-drop from a seed and the element's position
//! ([`dropout_seed`]).

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

mod autodiff;
mod cpu;
#[cfg(feature = "tch")]
mod libtorch;

use burn::backend::{
    Backend, Dispatch, ExtensionType, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::tensor::{Distribution, Shape};

use burn::prelude::*;

pub use crate::extension::runs_on;
use crate::extension::{is_libtorch, narrow};
pub use cpu::cpu_dropout_keeps;

/// What hides the keys of an attention call: the bias alone, or causality (applied by the
/// operation, by position) and the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masking {
    /// No structure: the bias, `[B or 1, H or 1, T, S]`, alone says which keys each query sees.
    Bias,
    /// Causal, aligned bottom-right (query `i` of `T` sees none of the `S ≥ T` keys after the
    /// first `S − T + i + 1`, so the keys before the last `T` — prefix and cache — are open to
    /// all), and the bias hides more (padding).
    CausalAndBias,
    /// Exactly that causal mask: the bias is zeros.
    Causal,
}

impl Masking {
    /// How many leading keys of `keys` the queries `0..queries_end` of `queries` may see: the
    /// keys a kernel must read for those rows (all of them without causality).
    pub fn keys_seen(self, queries: usize, keys: usize, queries_end: usize) -> usize {
        match self {
            Masking::Bias => keys,
            Masking::CausalAndBias | Masking::Causal => {
                (keys + queries_end).saturating_sub(queries).min(keys)
            }
        }
    }
}

/// The settings of one attention call, which its backward is given again.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSettings {
    pub masking: Masking,
    /// What the scores `query·keyᵀ` are multiplied by.
    pub scale: f64,
    /// The probability of dropping each attention probability (0 for none).
    pub dropout: f64,
    /// Picks the dropout mask on the backends that draw their own ([`dropout_seed`]).
    pub seed: u64,
}

/// What a backend keeps from a tracked forward for its backward. The CPU kernel keeps the
/// operands and recomputes the probabilities and the dropout mask from them; so does LibTorch
/// without dropout, while with dropout it keeps the query, key and value as the leaves of
/// PyTorch's autograd graph of the forward, and the output that carries that graph.
#[derive(Clone, Debug, ExtensionType)]
pub struct AttentionSaved<B: Backend> {
    pub query: FloatTensor<B>,
    pub key: FloatTensor<B>,
    pub value: FloatTensor<B>,
    /// The bias, or the output carrying PyTorch's graph (LibTorch with dropout).
    pub bias_or_graph: FloatTensor<B>,
}

/// The fused attention operation, implemented per backend.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait FusedAttentionOps: Backend {
    /// `dropout(softmax(query·keyᵀ·scale + bias))·value`, dropping each probability with
    /// probability `settings.dropout` (and scaling the kept ones by `1 / (1 − dropout)`).
    /// `query` is `[B, H, T, d]`, `key` and `value` `[B, H / g, S, d]` (grouped-query
    /// attention when `g > 1`: query head `h` reads key/value head `h / g`), `bias`
    /// `[B or 1, H or 1, T or 1, S]`; returns `[B, H, T, d]`. Under causal masking the
    /// operation applies causality itself (aligned bottom-right, see [`Masking`]) and `bias`
    /// holds what else is hidden, usually one row per batch row broadcast over the queries;
    /// under [`Masking::Bias`] `bias` is the whole mask.
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> FloatTensor<Self>;

    /// [`FusedAttentionOps::fused_attention`] for a forward that will be differentiated: the
    /// output, and what [`FusedAttentionOps::fused_attention_backward`] needs.
    fn fused_attention_forward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> (FloatTensor<Self>, AttentionSaved<Self>);

    /// The gradients of `sum(output_grad ∘ output)` with respect to query, key and value, in
    /// that order, for the forward that saved `saved` (with the same `settings`).
    fn fused_attention_backward(
        #[extension_type] saved: AttentionSaved<Self>,
        output_grad: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`FusedAttentionOps::fused_attention`] of a query, keys and values that one projection
    /// made: `qkv`, `[3, B, H, T, d]`, holds them in that order (views of the projection's
    /// output, laid out as it is). Under autodiff the projection gets its gradient from one
    /// node, as one tensor, where three slices of it would each give it a zeroed gradient of
    /// the whole size to write a third into, and the three would be summed: passes over the
    /// whole output, each a launch on a GPU, in every layer.
    fn fused_attention_packed(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> FloatTensor<Self> {
        unpacked_attention::<Self>(qkv, None, bias, settings)
    }

    /// [`FusedAttentionOps::fused_attention_packed`] with `prefix_key`/`prefix_value`,
    /// `[B, H, P, d]`, before the keys. (Burn's extension macro routes no optional tensors
    /// under autodiff, hence a second method rather than `Option`s.)
    fn fused_attention_packed_after_prefix(
        qkv: FloatTensor<Self>,
        prefix_key: FloatTensor<Self>,
        prefix_value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> FloatTensor<Self> {
        unpacked_attention::<Self>(qkv, Some((prefix_key, prefix_value)), bias, settings)
    }
}

/// [`FusedAttentionOps::fused_attention_forward`] for a backend whose backward recomputes the
/// probabilities (and the dropout mask) from the operands: the output, and the operands kept.
fn forward_keeping_operands<B: FusedAttentionOps>(
    query: FloatTensor<B>,
    key: FloatTensor<B>,
    value: FloatTensor<B>,
    bias: FloatTensor<B>,
    settings: AttentionSettings,
) -> (FloatTensor<B>, AttentionSaved<B>) {
    let output = B::fused_attention(
        query.clone(),
        key.clone(),
        value.clone(),
        bias.clone(),
        settings,
    );
    let saved = AttentionSaved {
        query,
        key,
        value,
        bias_or_graph: bias,
    };
    (output, saved)
}

/// The query, keys and values in `qkv` (`[3, B, H, T, d]`), each `[B, H, T, d]`: views where
/// the backend takes them without a copy.
fn unpack<B: Backend>(qkv: FloatTensor<B>) -> [FloatTensor<B>; 3] {
    let shape = qkv.shape();
    let part_shape = Shape::new([shape[1], shape[2], shape[3], shape[4]]);
    [0, 1, 2].map(|part| {
        B::float_reshape(
            narrow::<B>(qkv.clone(), 0, part, part + 1),
            part_shape.clone(),
        )
    })
}

/// `own` after the prefix (if any) along the sequence axis of `[B, H, S, d]`.
fn after_prefix<B: Backend>(prefix: Option<FloatTensor<B>>, own: FloatTensor<B>) -> FloatTensor<B> {
    match prefix {
        Some(prefix) => B::float_cat(vec![prefix, own], 2),
        None => own,
    }
}

/// [`FusedAttentionOps::fused_attention_packed`] (after a prefix, when `prefix` holds its keys
/// and values) on the backends without autodiff: the parts unpacked, the prefix joined to the
/// keys, and the operation itself.
fn unpacked_attention<B: FusedAttentionOps>(
    qkv: FloatTensor<B>,
    prefix: Option<(FloatTensor<B>, FloatTensor<B>)>,
    bias: FloatTensor<B>,
    settings: AttentionSettings,
) -> FloatTensor<B> {
    let [query, key, value] = unpack::<B>(qkv);
    let (prefix_key, prefix_value) = prefix.unzip();
    let (key, value) = (
        after_prefix::<B>(prefix_key, key),
        after_prefix::<B>(prefix_value, value),
    );
    B::fused_attention(query, key, value, bias, settings)
}

/// `dropout(softmax(query·keyᵀ·scale + bias))·value` as one operation (see the module
/// documentation), with `settings.seed` from [`dropout_seed`] when dropout is above 0. Only
/// call it where [`runs_on`] holds for the tensors' device.
pub fn fused_attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<4>,
    settings: AttentionSettings,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedAttentionOps>::fused_attention(
        query.into_dispatch(),
        key.into_dispatch(),
        value.into_dispatch(),
        bias.into_dispatch(),
        settings,
    ))
}

/// [`fused_attention`] of a query, keys and values packed by one projection (see
/// [`FusedAttentionOps::fused_attention_packed`]): `qkv` `[3, B, H, T, d]`, `prefix` the keys
/// and values `[B, H, P, d]` before them. Only call it where [`runs_on`] holds.
pub fn fused_attention_packed(
    qkv: Tensor<5>,
    prefix: Option<(Tensor<4>, Tensor<4>)>,
    bias: Tensor<4>,
    settings: AttentionSettings,
) -> Tensor<4> {
    let (qkv, bias) = (qkv.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(match prefix {
        Some((key, value)) => <Dispatch as FusedAttentionOps>::fused_attention_packed_after_prefix(
            qkv,
            key.into_dispatch(),
            value.into_dispatch(),
            bias,
            settings,
        ),
        None => <Dispatch as FusedAttentionOps>::fused_attention_packed(qkv, bias, settings),
    })
}

/// The seed of one fused attention call's dropout mask on `device`, drawn from Burn's random
/// generator there, so that seeding the backend (`--seed`, and each epoch's seed on resume)
/// reproduces the masks as it does every other dropout. LibTorch draws its masks from PyTorch's
/// generator inside the kernel (which Burn's seed also sets) and ignores it: 0, without a draw.
pub fn dropout_seed(device: &Device) -> u64 {
    if is_libtorch(device) {
        return 0;
    }
    // Two draws of 24 random bits each (an f32 in [0, 1) holds 24).
    Tensor::<1>::random([2], Distribution::Uniform(0.0, 1.0), device)
        .into_data()
        .iter::<f32>()
        .fold(0u64, |seed, draw| {
            (seed << 24) | (draw * (1 << 24) as f32) as u64
        })
}
