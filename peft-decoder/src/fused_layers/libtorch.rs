//! The fused normalisations and activations on LibTorch: PyTorch's own kernels (`layer_norm`,
//! which accumulates half types in f32, `gelu` with `approximate="tanh"`, `silu`) and their
//! backward. The RMSNorm is PyTorch's fused kernel forward and backward on a GPU
//! (`_fused_rms_norm`); on the CPU, where PyTorch has no such kernel, it is written out in
//! PyTorch operations as Hugging Face's `LlamaRMSNorm` is, which the tests hold it to.

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
        let (input, gamma) = (&input.tensor, &gamma.tensor);
        TchTensor::new(tch::no_grad(|| match has_rms_norm_kernel(input) {
            true => rms_norm_kernel(input, gamma, epsilon),
            false => rms_norm(input, gamma, epsilon),
        }))
    }

    fn fused_rms_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
        affine: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let (input, gamma, output_grad) = (&input.tensor, &gamma.tensor, &output_grad.tensor);
        if has_rms_norm_kernel(input) {
            return rms_norm_kernel_backward(input, gamma, output_grad, epsilon, affine);
        }
        let (d_input, d_gamma) =
            tch::no_grad(|| rms_norm_backward(input, gamma, output_grad, epsilon, affine));
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

/// Whether PyTorch has a fused RMSNorm kernel where `input` lies: on a GPU, not on the CPU
/// (where it decomposes `_fused_rms_norm`, and the written-out form is the faster one).
fn has_rms_norm_kernel(input: &tch::Tensor) -> bool {
    input.device() != tch::Device::Cpu
}

/// `input/√(mean(input²) + epsilon)·gamma` by PyTorch's fused kernel (on a GPU one launch; its
/// statistics in f32 too, the product rounded to a half type once where `LlamaRMSNorm` rounds
/// before and after the scale, so half types may differ from [`rms_norm`] in the last bit).
fn rms_norm_kernel(input: &tch::Tensor, gamma: &tch::Tensor, epsilon: f64) -> tch::Tensor {
    // The kernel takes gamma in the input's type (a trained f32 gamma beside bf16 activations).
    let gamma = gamma.to_kind(input.kind());
    input
        .internal_fused_rms_norm(last_dimension(input), Some(&gamma), epsilon)
        .0
}

/// The input and (with `affine`) gamma gradients of [`rms_norm_kernel`] by PyTorch's autograd,
/// which on a GPU is its fused backward kernel (`_fused_rms_norm_backward`) after the forward
/// again: three launches where the written-out [`rms_norm_backward`] takes a dozen. (On the CPU
/// PyTorch decomposes both, and this is the slower route.)
fn rms_norm_kernel_backward(
    input: &tch::Tensor,
    gamma: &tch::Tensor,
    output_grad: &tch::Tensor,
    epsilon: f64,
    affine: bool,
) -> (TchTensor, Option<TchTensor>) {
    if !affine {
        let [d_input] = torch_gradients([input], output_grad, |[input]| {
            rms_norm_kernel(input, gamma, epsilon)
        });
        return (d_input, None);
    }
    let [d_input, d_gamma] = torch_gradients([input, gamma], output_grad, |[input, gamma]| {
        rms_norm_kernel(input, gamma, epsilon)
    });
    (d_input, Some(d_gamma))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU's route (PyTorch's kernel and autograd) gives what the written-out CPU route
    /// gives, in f32: run here on the CPU, where PyTorch decomposes the same operation.
    #[test]
    fn the_kernel_route_gives_the_written_out_rms_norm_and_gradients() {
        tch::manual_seed(0);
        let options = (tch::Kind::Float, tch::Device::Cpu);
        let input = tch::Tensor::randn([3, 5, 16], options) * 2.0;
        let gamma = tch::Tensor::randn([16], options) * 0.1 + 1.0;
        let output_grad = tch::Tensor::randn([3, 5, 16], options);
        let epsilon = 1e-5;
        let largest =
            |a: &tch::Tensor, b: &tch::Tensor| f64::try_from((a - b).abs().max()).unwrap();

        let written = tch::no_grad(|| rms_norm(&input, &gamma, epsilon));
        let kernel = tch::no_grad(|| rms_norm_kernel(&input, &gamma, epsilon));
        assert!(largest(&written, &kernel) < 1e-6, "outputs differ");

        for affine in [true, false] {
            let (d_input, d_gamma) =
                tch::no_grad(|| rms_norm_backward(&input, &gamma, &output_grad, epsilon, affine));
            let (k_input, k_gamma) =
                rms_norm_kernel_backward(&input, &gamma, &output_grad, epsilon, affine);
            assert!(
                largest(&d_input, &k_input.tensor) < 1e-5,
                "input gradients differ"
            );
            match (d_gamma, k_gamma) {
                (Some(d), Some(k)) => {
                    assert!(largest(&d, &k.tensor) < 1e-4, "gamma gradients differ")
                }
                (None, None) => {}
                _ => panic!("affine {affine}: one route gave gamma a gradient, the other not"),
            }
        }
    }
}
