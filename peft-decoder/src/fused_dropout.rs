//! Dropout (GPT-2's on embeddings and residual branches, in full fine-tuning) as one operation
//! with its own backward.
//!
//! Burn's `Dropout` draws a mask tensor (on flex element by element, on the calling thread
//! alone), multiplies by it and scales: three passes forward and two backward, with the mask
//! kept in the activations' type. Here the CPU backends make one pass each way, split across
//! cores, and keep nothing but the call's seed: which elements are kept is a hash of it and
//! each element's index ([`DropoutMask`], the attention's dropout too). LibTorch runs PyTorch's
//! `native_dropout` (one kernel on CUDA, a one-byte mask kept) and its backward. Other backends,
//! and a process that turned the fused layers off
//! ([`set_fused_layers`](crate::fused_layers::set_fused_layers)), keep Burn's `Dropout`.

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{
    AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::DType;

use crate::dropout_mask::DropoutMask;
use crate::extension::{ELEMENTS_PER_TASK, tensor_of, update_elements};
use crate::fused_attention::dropout_seed;

/// The operation, implemented per backend.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait FusedDropoutOps: Backend {
    /// `input` with each element zeroed with probability `rate` (above 0, below 1) and the
    /// others scaled by `1/(1 − rate)`, and what the backward reads to zero the same elements
    /// of the gradient: LibTorch's mask of kept elements; on the CPU backends, which draw them
    /// again from `seed`, a one-element placeholder.
    fn fused_dropout(
        input: FloatTensor<Self>,
        rate: f64,
        seed: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradient of `sum(output_grad ∘ output)` with respect to the input of the call that
    /// returned `kept`, with the same `rate` and `seed`.
    fn fused_dropout_backward(
        output_grad: FloatTensor<Self>,
        kept: FloatTensor<Self>,
        rate: f64,
        seed: u64,
    ) -> FloatTensor<Self>;
}

/// Drops or scales `values` (the forward's input, or the backward's gradient) by the call's
/// mask, in place where the tensor allows, in its own type.
fn cpu_dropout<B: Backend>(values: FloatTensor<B>, rate: f64, seed: u64) -> FloatTensor<B> {
    match DropoutMask::new(rate, seed) {
        Some(mask) => update_elements::<B>(values, ELEMENTS_PER_TASK, |first, chunk| {
            mask.apply(chunk, first)
        }),
        None => values,
    }
}

macro_rules! cpu_fused_dropout {
    ($backend:ty) => {
        impl FusedDropoutOps for $backend {
            fn fused_dropout(
                input: FloatTensor<Self>,
                rate: f64,
                seed: u64,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                let placeholder =
                    tensor_of::<Self>(vec![0.0], [1].into(), DType::F32, &input.device());
                (cpu_dropout::<Self>(input, rate, seed), placeholder)
            }

            fn fused_dropout_backward(
                output_grad: FloatTensor<Self>,
                _kept: FloatTensor<Self>,
                rate: f64,
                seed: u64,
            ) -> FloatTensor<Self> {
                cpu_dropout::<Self>(output_grad, rate, seed)
            }
        }
    };
}

#[cfg(feature = "flex")]
cpu_fused_dropout!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
cpu_fused_dropout!(burn::backend::NdArray);

/// PyTorch's `native_dropout` and its backward; PyTorch's generator picks the elements (the
/// seed is unused, as for the attention's dropout on LibTorch).
#[cfg(feature = "tch")]
impl FusedDropoutOps for burn::backend::libtorch::LibTorch {
    fn fused_dropout(
        input: FloatTensor<Self>,
        rate: f64,
        _seed: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::libtorch::TchTensor;
        let (output, kept) = tch::no_grad(|| input.tensor.native_dropout(rate, true));
        (TchTensor::new(output), TchTensor::new(kept))
    }

    fn fused_dropout_backward(
        output_grad: FloatTensor<Self>,
        kept: FloatTensor<Self>,
        rate: f64,
        _seed: u64,
    ) -> FloatTensor<Self> {
        use burn::backend::libtorch::TchTensor;
        let scale = 1.0 / (1.0 - rate);
        TchTensor::new(tch::no_grad(|| {
            tch::Tensor::native_dropout_backward(&output_grad.tensor, &kept.tensor, scale)
        }))
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl<B: Backend + FusedDropoutOps> Backward<B, 1> for DropoutBackward {
    /// What the forward returned for the backward, the rate and the seed.
    type State = (FloatTensor<B>, f64, u64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let [input_node] = ops.parents;
        if let Some(node) = input_node {
            let (kept, rate, seed) = ops.state;
            let grad = B::fused_dropout_backward(output_grad, kept, rate, seed);
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: Backend + FusedDropoutOps, C: CheckpointStrategy> FusedDropoutOps for Autodiff<B, C> {
    fn fused_dropout(
        input: FloatTensor<Self>,
        rate: f64,
        seed: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [input.node()];
        let (output, kept) = B::fused_dropout(input.into_primitive(), rate, seed);
        let output = match DropoutBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((kept.clone(), rate, seed), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        (output, <Self as AutodiffBackend>::from_inner(kept))
    }

    fn fused_dropout_backward(
        output_grad: FloatTensor<Self>,
        kept: FloatTensor<Self>,
        rate: f64,
        seed: u64,
    ) -> FloatTensor<Self> {
        let grad = B::fused_dropout_backward(
            output_grad.into_primitive(),
            kept.into_primitive(),
            rate,
            seed,
        );
        <Self as AutodiffBackend>::from_inner(grad)
    }
}

/// `dropout` applied to `input` as Burn's `Dropout::forward` applies it — only in training
/// (the module's flag) on an autodiff device, at its rate — as one fused operation where the
/// crate's extensions run and the fused layers are on, Burn's own otherwise. The elements
/// dropped differ from Burn's draw (another generator); the distribution is the same.
pub fn dropout<const D: usize>(dropout: &Dropout, input: Tensor<D>) -> Tensor<D> {
    let device = input.device();
    let rate = acting_rate(dropout, &device);
    if rate == 0.0 || !crate::fused_layers::fused_on(&device) {
        return dropout.forward(input);
    }
    let seed = dropout_seed(&device);
    let (output, _) =
        <Dispatch as FusedDropoutOps>::fused_dropout(input.into_dispatch(), rate, seed);
    Tensor::from_dispatch(output)
}

/// The rate at which Burn's `Dropout::forward` drops on `device`: the module's own in training
/// (its flag) on an autodiff device, 0 where it passes its input through.
pub(crate) fn acting_rate(dropout: &Dropout, device: &Device) -> f64 {
    match dropout.training.is_enabled() && device.is_autodiff() {
        true => dropout.prob,
        false => 0.0,
    }
}
