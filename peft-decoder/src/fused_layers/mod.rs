//! The normalisations and activations of the model families as single operations with their
//! own backward: LayerNorm and the tanh GELU (GPT-2), RMSNorm and SiLU (the Llama family).
//!
//! Burn's autodiff records each as the element-wise operations it decomposes into (a mean, a
//! subtraction, a variance, a square root, a division, a scale and a shift; a cube, a sigmoid
//! and products), each a pass over the activations forward, one or more backward, and each
//! keeping its own operands for the backward. Here each is one pass forward and one backward,
//! and keeps only its input. LibTorch runs PyTorch's own kernels (`layer_norm`, `gelu` with
//! `approximate="tanh"`, `silu`, and their backward; the RMSNorm as Hugging Face writes it in
//! PyTorch operations, and its backward written out the same way), flex and ndarray the
//! kernels in [`cpu`];
//! `Autodiff` records one node per call ([`autodiff`]). Other backends keep the decomposed form
//! ([`runs_on`](crate::extension::runs_on)).

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

mod autodiff;
mod cpu;
#[cfg(feature = "tch")]
mod libtorch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::module::Param;
use burn::nn::{LayerNorm, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::extension::runs_on;

/// The fused operations, implemented per backend. Normalisation is over the last dimension.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait FusedLayerOps: Backend {
    /// `(input − mean)/√(variance + epsilon)·gamma + beta`, with the biased variance, as
    /// PyTorch's `layer_norm` computes it; `gamma` and `beta` are `[d]`.
    fn fused_layer_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;

    /// The gradients of `sum(output_grad ∘ fused_layer_norm(input, gamma, beta, epsilon))`
    /// with respect to input and, where `affine` asks for them, gamma and beta (beta's value
    /// plays no part). A frozen norm (prompt and prefix tuning) asks for the input's alone, as
    /// PyTorch computes no gradient for a parameter that does not require one.
    // The extension macro routes the outputs by their spelled-out types, so no alias here.
    #[allow(clippy::type_complexity)]
    fn fused_layer_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
        affine: bool,
    ) -> (
        FloatTensor<Self>,
        Option<(FloatTensor<Self>, FloatTensor<Self>)>,
    );

    /// `x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2` element-wise: GPT-2's `gelu_new`, PyTorch's
    /// `gelu(approximate="tanh")`.
    fn fused_gelu_tanh(input: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of `sum(output_grad ∘ fused_gelu_tanh(input))` with respect to input.
    fn fused_gelu_tanh_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `input/√(mean(input²) + epsilon)·gamma`, the mean taken in f32, as Hugging Face's
    /// `LlamaRMSNorm` computes it; `gamma` is `[d]`.
    fn fused_rms_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;

    /// The gradients of `sum(output_grad ∘ fused_rms_norm(input, gamma, epsilon))` with
    /// respect to input and, where `affine` asks for it, gamma.
    fn fused_rms_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
        affine: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>);

    /// `x·σ(x)` element-wise.
    fn fused_silu(input: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of `sum(output_grad ∘ fused_silu(input))` with respect to input.
    fn fused_silu_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Whether [`layer_norm`], [`rms_norm`], [`gelu_tanh`] and [`silu`] may use the fused operations
/// (the default).
static FUSED_LAYERS: AtomicBool = AtomicBool::new(true);

/// Turns the fused normalisations and activations off (or back on) for the whole process, so that
/// benchmarks can compare them with the decomposed forms on the same backend; with them the
/// rotary embedding ([`crate::fused_rope`]), LibTorch's linear layers ([`crate::linear`]),
/// dropout ([`crate::fused_dropout`]: another draw of the same distribution) and the way the LM
/// loss hands autodiff its gradients ([`crate::known_gradient`]). Results are the same either
/// way, to rounding (dropout's masks aside).
pub fn set_fused_layers(enabled: bool) {
    FUSED_LAYERS.store(enabled, Ordering::Relaxed);
}

pub(crate) fn fused_on(device: &Device) -> bool {
    FUSED_LAYERS.load(Ordering::Relaxed) && runs_on(device)
}

/// `norm` applied to `input` over its last dimension: one fused operation where the backend has
/// it, Burn's own `LayerNorm::forward` otherwise. Burn keeps `epsilon` private to the module,
/// so the caller, who configured it, passes it again.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, input: Tensor<D>) -> Tensor<D> {
    let Some(beta) = norm.beta.as_ref().filter(|_| fused_on(&input.device())) else {
        return norm.forward(input);
    };
    let (gamma, beta) = (in_type_of(&norm.gamma, &input), in_type_of(beta, &input));
    Tensor::from_dispatch(<Dispatch as FusedLayerOps>::fused_layer_norm(
        input.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
}

/// `norm` applied to `input` over its last dimension: one fused operation where the backend has
/// it, Burn's own `RmsNorm::forward` otherwise.
pub fn rms_norm<const D: usize>(norm: &RmsNorm, input: Tensor<D>) -> Tensor<D> {
    if !fused_on(&input.device()) {
        return norm.forward(input);
    }
    let gamma = in_type_of(&norm.gamma, &input);
    Tensor::from_dispatch(<Dispatch as FusedLayerOps>::fused_rms_norm(
        input.into_dispatch(),
        gamma.into_dispatch(),
        norm.epsilon,
    ))
}

/// A norm's parameter in the activations' type (a half-precision base keeps it so already).
fn in_type_of<const D: usize>(param: &Param<Tensor<1>>, input: &Tensor<D>) -> Tensor<1> {
    param.val().cast(input.dtype())
}

/// GPT-2's `gelu_new` (see [`FusedLayerOps::fused_gelu_tanh`]): one fused operation where the
/// backend has it, [`gelu_tanh_decomposed`] otherwise.
pub fn gelu_tanh<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    if !fused_on(&input.device()) {
        return gelu_tanh_decomposed(input);
    }
    Tensor::from_dispatch(<Dispatch as FusedLayerOps>::fused_gelu_tanh(
        input.into_dispatch(),
    ))
}

/// `x·σ(x)`: one fused operation where the backend has it, Burn's `silu` otherwise.
pub fn silu<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    if !fused_on(&input.device()) {
        return burn::tensor::activation::silu(input);
    }
    Tensor::from_dispatch(<Dispatch as FusedLayerOps>::fused_silu(
        input.into_dispatch(),
    ))
}

/// The tanh GELU in Burn's element-wise operations, computed as `x·σ(2√(2/π)·x·(1 +
/// 0.044715·x²))`: the same function since `(1 + tanh z)/2 = σ(2z)`, and cheaper to
/// differentiate than the textbook form (Burn's sigmoid has a backward step of its own, where a
/// power and a tanh would each add passes).
pub fn gelu_tanh_decomposed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = x.clone()
        * (x.clone() * x.clone() * (GELU_CUBIC * TWO_SQRT_2_OVER_PI) + TWO_SQRT_2_OVER_PI);
    x * sigmoid(inner)
}

/// The tanh GELU's cubic coefficient: `√(2/π)·(x + 0.044715·x³)`.
const GELU_CUBIC: f64 = 0.044715;

/// `2√(2/π)`: the tanh GELU's argument, doubled for the sigmoid form.
const TWO_SQRT_2_OVER_PI: f64 =
    2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
