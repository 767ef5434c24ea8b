//! The fused normalisations and activations on LibTorch: PyTorch's own kernels (`layer_norm`,
//! which accumulates half types in f32, `gelu` with `approximate="tanh"`, `silu`) and their
//! backward. The RMSNorm is written out in PyTorch operations as Hugging Face's `LlamaRMSNorm`
//! is (f32 statistics), since `torch.rms_norm` keeps half types' statistics in the half type.

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::tensor::FloatTensor;

use super::FusedLayerOps;
use crate::extension::torch_gradients;

/// The normalised (last) dimension, as `layer_norm` takes it.
fn last_dimension(tensor: &tch::Tensor) -> Vec<i64> {
    tensor.size().last().copied().into_iter().collect()
}

impl FusedLayerOps for LibTorch {
    fn fused_layer_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let input = &input.tensor;
        let output = tch::no_grad(|| {
            input.layer_norm(
                last_dimension(input),
                Some(&gamma.tensor),
                Some(&beta.tensor),
                epsilon,
                true,
            )
        });
        TchTensor::new(output)
    }

    /// PyTorch's fused backward kernel, through autograd (tch does not expose
    /// `native_layer_norm_backward`). Beta's gradient is the output gradient summed over rows.
    fn fused_layer_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let output_grad = &output_grad.tensor;
        let [d_input, d_gamma] = torch_gradients(
            [&input.tensor, &gamma.tensor],
            output_grad,
            |[input, gamma]| {
                input.layer_norm(
                    last_dimension(input),
                    Some(gamma),
                    None::<&tch::Tensor>,
                    epsilon,
                    true,
                )
            },
        );
        let width = *output_grad.size().last().unwrap_or(&0);
        let d_beta = output_grad.reshape([-1, width]).sum_dim_intlist(
            [0i64].as_slice(),
            false,
            output_grad.kind(),
        );
        (d_input, d_gamma, TchTensor::new(d_beta))
    }

    fn fused_gelu_tanh(input: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| input.tensor.gelu("tanh")))
    }

    fn fused_gelu_tanh_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| {
            input.tensor.gelu_backward(&output_grad.tensor, "tanh")
        }))
    }

    fn fused_rms_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| {
            rms_norm(&input.tensor, &gamma.tensor, epsilon)
        }))
    }

    fn fused_rms_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [d_input, d_gamma] = torch_gradients(
            [&input.tensor, &gamma.tensor],
            &output_grad.tensor,
            |[input, gamma]| rms_norm(input, gamma, epsilon),
        );
        (d_input, d_gamma)
    }

    fn fused_silu(input: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| input.tensor.silu()))
    }

    fn fused_silu_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| {
            input.tensor.silu_backward(&output_grad.tensor)
        }))
    }
}

/// `input/√(mean(input²) + epsilon)·gamma` with the statistics in f32, as `LlamaRMSNorm`.
fn rms_norm(input: &tch::Tensor, gamma: &tch::Tensor, epsilon: f64) -> tch::Tensor {
    let wide = input.to_kind(tch::Kind::Float);
    let mean_square = wide.square().mean_dim(-1, true, tch::Kind::Float);
    let normalised = wide * (mean_square + epsilon).rsqrt();
    normalised.to_kind(input.kind()) * gamma
}
