//! The fused normalisations and activations on LibTorch: PyTorch's own kernels (`layer_norm`,
//! which accumulates half types in f32, `gelu` with `approximate="tanh"`, `silu`) and their
//! backward. The RMSNorm is written out in PyTorch operations as Hugging Face's `LlamaRMSNorm`
//! is (f32 statistics), since `torch.rms_norm` keeps half types' statistics in the half type.

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::tensor::FloatTensor;

use super::FusedLayerOps;
use crate::extension::torch_gradients;

/// `tensor` summed over every dimension but its last: a per-feature parameter's gradient.
fn sum_over_rows(tensor: &tch::Tensor) -> tch::Tensor {
    let width = *tensor.size().last().unwrap_or(&0);
    tensor
        .reshape([-1, width])
        .sum_dim_intlist([0i64].as_slice(), false, tensor.kind())
}

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
    /// Without `affine`, gamma goes in as a constant, so that PyTorch skips its parameters'
    /// kernel (and the sum for beta is not taken): a pass over the input and two over the
    /// output gradient a norm fewer.
    fn fused_layer_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
        affine: bool,
    ) -> (
        FloatTensor<Self>,
        Option<(FloatTensor<Self>, FloatTensor<Self>)>,
    ) {
        let output_grad = &output_grad.tensor;
        let layer_norm = |input: &tch::Tensor, gamma: &tch::Tensor| {
            input.layer_norm(
                last_dimension(input),
                Some(gamma),
                None::<&tch::Tensor>,
                epsilon,
                true,
            )
        };
        if !affine {
            let gamma = &gamma.tensor;
            let [d_input] = torch_gradients([&input.tensor], output_grad, |[input]| {
                layer_norm(input, gamma)
            });
            return (d_input, None);
        }
        let [d_input, d_gamma] = torch_gradients(
            [&input.tensor, &gamma.tensor],
            output_grad,
            |[input, gamma]| layer_norm(input, gamma),
        );
        let d_beta = sum_over_rows(output_grad);
        (d_input, Some((d_gamma, TchTensor::new(d_beta))))
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
        affine: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let (d_input, d_gamma) = tch::no_grad(|| {
            let (input, gamma) = (&input.tensor, &gamma.tensor);
            rms_norm_backward(input, gamma, &output_grad.tensor, epsilon, affine)
        });
        (TchTensor::new(d_input), d_gamma.map(TchTensor::new))
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
    let (normalised, _) = normalised_f32(input, epsilon);
    normalised.to_kind(input.kind()) * gamma
}

/// `input` in f32 divided by its rows' root mean square, and `1/√(mean(input²) + epsilon)` of
/// each row (`[.., 1]`).
fn normalised_f32(input: &tch::Tensor, epsilon: f64) -> (tch::Tensor, tch::Tensor) {
    let wide = input.to_kind(tch::Kind::Float);
    let inverse_rms = (wide.square().mean_dim(-1, true, tch::Kind::Float) + epsilon).rsqrt();
    (wide * &inverse_rms, inverse_rms)
}

/// The input and (with `affine`) gamma gradients of [`rms_norm`], written out rather than
/// taken by PyTorch's autograd through the forward run again: that route launched the
/// forward's kernels again, the objective's and autograd's for each element-wise step, 11
/// kernels a norm more (a SmolLM2 prompt-tuning step on LibTorch: 3,981 kernels then, 3,310
/// after, PEFT's 3,186), and took 2.5× as long at Llama-3.2-1B's 8 × 256 (BENCHMARKS.md). With
/// `n = x·r`, `r = (mean(x²) + ε)^-½` in f32 and `dn` the gradient reaching `n`
/// (`output_grad·gamma`), `dx = r·(dn − n·mean(dn·n))`.
fn rms_norm_backward(
    input: &tch::Tensor,
    gamma: &tch::Tensor,
    output_grad: &tch::Tensor,
    epsilon: f64,
    affine: bool,
) -> (tch::Tensor, Option<tch::Tensor>) {
    let kind = input.kind();
    let (normalised, inverse_rms) = normalised_f32(input, epsilon);
    let d_normalised = (output_grad * gamma).to_kind(tch::Kind::Float);
    let projection = (&d_normalised * &normalised).mean_dim(-1, true, tch::Kind::Float);
    let d_input = (d_normalised.addcmul(&normalised, &-projection) * inverse_rms).to_kind(kind);
    let d_gamma = affine.then(|| sum_over_rows(&(output_grad * normalised.to_kind(kind))));
    (d_input, d_gamma)
}
