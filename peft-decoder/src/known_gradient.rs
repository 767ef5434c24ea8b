//! A value whose gradient with respect to some input was computed along with it, handed to
//! autodiff as it is.
//!
//! The LM loss ([`crate::loss::fused_lm_loss`]) computes its gradients chunk by chunk outside
//! the autodiff graph. Burn's autodiff takes no gradient from outside, so they used to reach
//! the graph through a linear surrogate, `sum(input ∘ gradient)`, whose gradient is the one
//! wanted: for a trained head (`[vocab, d]`, 38.6 M values for GPT-2) a product and a sum
//! forward, and backward a broadcast and another product, each a pass over the head. Here the
//! node's backward registers the gradient itself, scaled by what reaches the value (a `[1]`
//! tensor, 1 in training): one pass. Backends the crate's extensions do not route (Vulkan,
//! CubeCL CUDA) keep the surrogate, and so does a process that turned the fused layers off
//! ([`set_fused_layers`](crate::fused_layers::set_fused_layers)), to compare.

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
use burn::tensor::FloatDType;

use crate::extension::register_gradient;

/// The operation, over any backend's operations.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait KnownGradientOps: Backend {
    /// `value` (`[1]`), whose gradient with respect to `input` is `scale · input_grad` (of
    /// `input`'s shape and type). Without autodiff nothing is tracked, and this is `value`.
    fn with_known_gradient(
        value: FloatTensor<Self>,
        input: FloatTensor<Self>,
        input_grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let _ = (input, input_grad, scale);
        value
    }
}

#[cfg(feature = "flex")]
impl KnownGradientOps for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl KnownGradientOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl KnownGradientOps for burn::backend::libtorch::LibTorch {}

#[derive(Debug)]
struct KnownGradientBackward;

impl<B: Backend> Backward<B, 2> for KnownGradientBackward {
    /// The input's gradient, and the scale it takes.
    type State = (FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let [value_node, input_node] = ops.parents.map(|node| node.map(|node| node.id));
        let (input_grad, scale) = ops.state;
        // The scale and the incoming gradient meet on one value; the input's gradient is then
        // one broadcast product.
        let factor = B::float_mul_scalar(output_grad.clone(), scale.into());
        let factor = B::float_cast(factor, FloatDType::from(input_grad.dtype()));
        let factor = B::float_reshape(factor, Shape::from(vec![1; input_grad.shape().num_dims()]));
        register_gradient::<B>(grads, input_node, Some(B::float_mul(input_grad, factor)));
        register_gradient::<B>(grads, value_node, Some(output_grad));
    }
}

impl<B: Backend + KnownGradientOps, C: CheckpointStrategy> KnownGradientOps for Autodiff<B, C> {
    fn with_known_gradient(
        value: FloatTensor<Self>,
        input: FloatTensor<Self>,
        input_grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let nodes = [value.node(), input.node()];
        let (value, input_grad) = (value.into_primitive(), input_grad.into_primitive());
        match KnownGradientBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((input_grad, scale), value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        }
    }
}

/// `value` (`[1]`, f32), whose gradient with respect to `input` is `scale · input_grad`; both
/// tensors have `input`'s shape and type, and `input_grad` takes no gradient itself. Only where
/// the crate's extensions run ([`runs_on`](crate::extension::runs_on)).
pub fn with_known_gradient<const D: usize>(
    value: Tensor<1>,
    input: Tensor<D>,
    input_grad: Tensor<D>,
    scale: f64,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as KnownGradientOps>::with_known_gradient(
        value.into_dispatch(),
        input.into_dispatch(),
        input_grad.detach().into_dispatch(),
        scale,
    ))
}
