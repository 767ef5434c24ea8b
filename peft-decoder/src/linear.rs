//! Linear layers applied to `[B, T, d]` activations as one `[B·T, d]` matrix product.
//!
//! Burn's `Linear` keeps a 3-D input's batch as a batch of products when each example's row
//! count is a multiple of its row tile (32; `MatmulTransformPolicy`), and the flex backend then
//! runs one product per example, each on one core and each packing the whole weight again —
//! forward and backward. Prefix tuning at 4 × 128 spent 15% of its step packing operands that
//! way, against 6% for prompt tuning, whose 148 rows per example Burn does fold. Folding the
//! batch into the rows first makes every layer one product whose weight is packed once and
//! split across cores, whatever the sequence length (prefix tuning's packing: 8% of the step;
//! BENCHMARKS.md). The values are the same.
//!
//! On LibTorch a layer with a bias is one `addmm` ([`FusedLinearOps`]), as PyTorch's own
//! layers run, so that CUDA adds the bias inside the product.

// LibTorch is deprecated upstream but still one of this project's backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::nn::Linear;
use burn::prelude::*;

/// [`Linear::forward`] over every position of a batch as one matrix product.
pub trait ForwardRows {
    /// `x`: `[B, T, d_in]` → `[B, T, d_out]`.
    fn forward_rows(&self, x: Tensor<3>) -> Tensor<3>;
}

impl ForwardRows for Linear {
    fn forward_rows(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, len, width] = x.dims();
        let rows = x.reshape([batch * len, width]);
        let output = match &self.bias {
            Some(bias) if fused_linear_on(&rows.device()) => {
                let (weight, bias) = (self.weight.val(), bias.val());
                Tensor::from_dispatch(<Dispatch as FusedLinearOps>::fused_linear(
                    rows.into_dispatch(),
                    weight.into_dispatch(),
                    bias.into_dispatch(),
                ))
            }
            _ => self.forward(rows),
        };
        let [_, out_width] = output.dims();
        output.reshape([batch, len, out_width])
    }
}

/// `x·weight + bias` as one operation with its own backward, on LibTorch: PyTorch's `addmm`,
/// which on CUDA adds the bias in the matrix product's epilogue (cuBLASLt) where Burn's `Linear`
/// adds it in a pass of its own over the whole output — every layer, every step.
#[backend_extension(LibTorch: cfg(feature = "tch"), Autodiff: cfg(feature = "tch"))]
pub trait FusedLinearOps: Backend {
    /// `x` `[N, d_in]`, `weight` `[d_in, d_out]` (Burn's layout), `bias` `[d_out]`: `[N, d_out]`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Whether [`ForwardRows::forward_rows`] takes [`FusedLinearOps::fused_linear`] on `device`:
/// on LibTorch (CPU or CUDA), unless the fused layers are turned off for a comparison
/// ([`set_fused_layers`](crate::fused_layers::set_fused_layers)).
fn fused_linear_on(device: &Device) -> bool {
    crate::fused_layers::fused_on(device) && crate::extension::is_libtorch(device)
}

#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::autodiff::{
        Autodiff,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    };
    use burn::backend::libtorch::{LibTorch, TchTensor};
    use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};

    use super::FusedLinearOps;

    impl FusedLinearOps for LibTorch {
        fn fused_linear(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            TchTensor::new(bias.tensor.addmm(&x.tensor, &weight.tensor))
        }
    }

    #[derive(Debug)]
    struct LinearBackward;

    /// What the gradients need: the input where the weight takes a gradient, the weight where
    /// the input does — no more, as Burn's own product keeps (a frozen layer keeps no input).
    type Saved<B> = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    impl<B: Backend> Backward<B, 3> for LinearBackward {
        type State = Saved<B>;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let output_grad = grads.consume::<B>(&ops.node);
            let (x, weight) = ops.state;
            let [x_node, weight_node, bias_node] = ops.parents;
            if let (Some(node), Some(weight)) = (x_node, weight) {
                let d_x = B::float_matmul(output_grad.clone(), B::float_transpose(weight));
                grads.register::<B>(node.id, d_x);
            }
            if let (Some(node), Some(x)) = (weight_node, x) {
                let d_weight = B::float_matmul(B::float_transpose(x), output_grad.clone());
                grads.register::<B>(node.id, d_weight);
            }
            if let Some(node) = bias_node {
                let [_, width] = output_grad.shape().dims();
                let d_bias = B::float_reshape(B::float_sum_dim(output_grad, 0), [width].into());
                grads.register::<B>(node.id, d_bias);
            }
        }
    }

    impl<B: Backend + FusedLinearOps, C: CheckpointStrategy> FusedLinearOps for Autodiff<B, C> {
        fn fused_linear(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let (keep_x, keep_weight) = (weight.is_tracked(), x.is_tracked());
            let nodes = [x.node(), weight.node(), bias.node()];
            let (x, weight, bias) = (
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            );
            let saved = (
                keep_x.then(|| x.clone()),
                keep_weight.then(|| weight.clone()),
            );
            let output = B::fused_linear(x, weight, bias);
            match LinearBackward
                .prepare::<C>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(saved, output),
                OpsKind::UnTracked(prep) => prep.finish(output),
            }
        }
    }
}
