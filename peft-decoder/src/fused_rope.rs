//! Rotary position embeddings (RoPE, the Llama family) as one operation with its own backward.
//!
//! `x·cos + rotate_half(x)·sin`, with `rotate_half(x) = [−x₂, x₁]` (the halves of the head
//! dimension swapped, the first negated), is linear in `x`: its gradient is
//! `g·cos + rotate_halfᵀ(g·sin)`, `rotate_halfᵀ(y) = [y₂, −y₁]`. Burn's autodiff, given the
//! decomposed form, takes each half's gradient back as a zeroed tensor of the whole size with
//! that half written in, and sums three of them: per query and key, every layer, two
//! zero-fills, two copies and two additions more than the five operations of the gradient
//! itself. Here the node's backward is those, written in the inner backend's own operations, so
//! every backend the crate's extensions route (flex, ndarray, LibTorch) runs it unchanged;
//! others keep the decomposed form.
//!
//! `rotate_half`'s negation is folded into the sine once a forward pass ([`RotaryPhases`]):
//! `rotate_half(x)·sin = swap(x)·[−sin₁, sin₂]`, `swap(x) = [x₂, x₁]` its own transpose, which
//! spares a negation forward and one backward in every call (two layers' worth of launches a
//! step for each query and key); negation is exact, so the values are the same.

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::extension::narrow;

/// The rotary embedding, implemented once over any backend's operations.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait RopeOps: Backend {
    /// `x·cos + rotate_half(x)·sin` for `x` `[B, heads, T, head_dim]` and `cos`, `signed_sin`
    /// broadcast to it (`[B or 1, 1, T, head_dim]`), `signed_sin` the sine with its first half
    /// negated ([`RotaryPhases`]).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        signed_sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let swapped = halves_swapped::<Self>(x.clone());
        Self::float_add(
            Self::float_mul(x, cos),
            Self::float_mul(swapped, signed_sin),
        )
    }

    /// The gradient of `sum(output_grad ∘ rope(x, cos, signed_sin))` with respect to `x`:
    /// `g·cos + swap(g·signed_sin)` (the operation is linear in `x`, `swap` its own transpose).
    fn rope_backward(
        output_grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        signed_sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let through_sin = halves_swapped::<Self>(Self::float_mul(output_grad.clone(), signed_sin));
        Self::float_add(Self::float_mul(output_grad, cos), through_sin)
    }
}

// The backends' own operations do the work (the trait's bodies).
#[cfg(feature = "flex")]
impl RopeOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl RopeOps for burn::backend::NdArray {}

/// The same sums with PyTorch's `addcmul_` adding each half's swapped product into the first
/// product in place: three launches each way where the trait's bodies take four, and no
/// concatenation, so the result keeps its operand's layout (a concatenation's contiguous
/// result made the gradient's way back through the head reshape a copy).
#[cfg(feature = "tch")]
impl RopeOps for burn::backend::libtorch::LibTorch {
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        signed_sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        burn::backend::libtorch::TchTensor::new(libtorch_rope_sum(
            &x.tensor,
            &cos.tensor,
            &signed_sin.tensor,
            false,
        ))
    }

    fn rope_backward(
        output_grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        signed_sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        burn::backend::libtorch::TchTensor::new(libtorch_rope_sum(
            &output_grad.tensor,
            &cos.tensor,
            &signed_sin.tensor,
            true,
        ))
    }
}

/// `x·c + swap(x)·s` (`transposed` false: the rotation) or `x·c + swap(x·s)` (true: its
/// transpose, the gradient), `swap` exchanging the halves of the last dimension, as one product
/// and a product added into each half.
#[cfg(feature = "tch")]
fn libtorch_rope_sum(
    x: &tch::Tensor,
    c: &tch::Tensor,
    s: &tch::Tensor,
    transposed: bool,
) -> tch::Tensor {
    let half = x.size()[3] / 2;
    let first = |t: &tch::Tensor| t.narrow(3, 0, half);
    let second = |t: &tch::Tensor| t.narrow(3, half, half);
    let sum = x * c;
    // Into the first half: x's second half times s's first (the rotation) or its second (the
    // transpose), and the reverse into the second half.
    let (s_into_first, s_into_second) = match transposed {
        false => (first(s), second(s)),
        true => (second(s), first(s)),
    };
    let _ = first(&sum).addcmul_(&second(x), &s_into_first);
    let _ = second(&sum).addcmul_(&first(x), &s_into_second);
    sum
}

/// `[x₂, x₁]`: the halves of the last of 4 dimensions swapped.
fn halves_swapped<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let width = x.shape()[3];
    let (first, second) = (
        narrow::<B>(x.clone(), 3, 0, width / 2),
        narrow::<B>(x, 3, width / 2, width),
    );
    B::float_cat(vec![second, first], 3)
}

#[derive(Debug)]
struct RopeBackward;

impl<B: Backend + RopeOps> Backward<B, 1> for RopeBackward {
    /// `cos` and the signed sine: the gradient needs nothing else (the operation is linear in
    /// `x`).
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let [x_node] = ops.parents;
        if let Some(node) = x_node {
            let (cos, signed_sin) = ops.state;
            grads.register::<B>(node.id, B::rope_backward(output_grad, cos, signed_sin));
        }
    }
}

impl<B: Backend + RopeOps, C: CheckpointStrategy> RopeOps for Autodiff<B, C> {
    /// One node over `x`; `cos` and the sine are constants here, whatever their own graph.
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        signed_sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let (x, cos, signed_sin) = (
            x.into_primitive(),
            cos.into_primitive(),
            signed_sin.into_primitive(),
        );
        let output = B::rope(x, cos.clone(), signed_sin.clone());
        match RopeBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((cos, signed_sin), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

/// The rotary phases of one forward pass, shared by every layer: `cos` and `sin` as Hugging
/// Face's rotary embedding gives them (`[B or 1, 1, T, head_dim]`), and the sine with the first
/// half of each row negated, which the fused operation multiplies the swapped halves by.
#[derive(Clone, Debug)]
pub struct RotaryPhases {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    signed_sin: Tensor<4>,
}

impl RotaryPhases {
    pub fn new(cos: Tensor<4>, sin: Tensor<4>) -> Self {
        let half = sin.dims()[3] / 2;
        let signed_sin = Tensor::cat(
            vec![
                sin.clone().narrow(3, 0, half).neg(),
                sin.clone().narrow(3, half, half),
            ],
            3,
        );
        Self {
            cos,
            sin,
            signed_sin,
        }
    }
}

/// `x·cos + rotate_half(x)·sin` (see [`RopeOps::rope`]): one operation with its own backward
/// where the crate's extensions run, [`rope_decomposed`] elsewhere and where the fused layers
/// are turned off for a comparison
/// ([`set_fused_layers`](crate::fused_layers::set_fused_layers)). The phases are constants to
/// it (the model's are): no gradient reaches them.
pub fn rope(x: Tensor<4>, phases: &RotaryPhases) -> Tensor<4> {
    if !crate::fused_layers::fused_on(&x.device()) {
        return rope_decomposed(x, &phases.cos, &phases.sin);
    }
    Tensor::from_dispatch(<Dispatch as RopeOps>::rope(
        x.into_dispatch(),
        phases.cos.clone().into_dispatch(),
        phases.signed_sin.clone().into_dispatch(),
    ))
}

/// The same in Burn's tensor operations, as Hugging Face writes it: what other backends run,
/// and the reference the operation is tested against.
pub fn rope_decomposed(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.clone() + rotated * sin.clone()
}
