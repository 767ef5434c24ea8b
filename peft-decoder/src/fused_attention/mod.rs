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
//! The bias is a constant (the causal and padding mask as an additive score bias): it receives no
//! gradient. There is no dropout inside; callers use the decomposed path when attention dropout
//! is active.

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

mod autodiff;
mod cpu;
#[cfg(feature = "tch")]
mod libtorch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};

pub use crate::extension::runs_on;
use burn::prelude::*;

/// The fused attention operation, implemented per backend.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait FusedAttentionOps: Backend {
    /// `softmax(query·keyᵀ·scale + bias)·value`. `query` is `[B, H, T, d]`, `key` and `value`
    /// `[B, H, S, d]`, `bias` `[B or 1, H or 1, T, S]`; returns `[B, H, T, d]`.
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;

    /// The gradients of `sum(output_grad ∘ fused_attention(query, key, value, bias, scale))` with
    /// respect to query, key and value, in that order.
    fn fused_attention_backward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `softmax(query·keyᵀ·scale + bias)·value` as one operation (see the module documentation).
/// Only call it where [`runs_on`] holds for the tensors' device.
pub fn fused_attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<4>,
    scale: f64,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedAttentionOps>::fused_attention(
        query.into_dispatch(),
        key.into_dispatch(),
        value.into_dispatch(),
        bias.into_dispatch(),
        scale,
    ))
}
