//! The fused normalisations and activations on the CPU backends (flex, ndarray): one pass over
//! f32 values forward and one backward, split across cores in fixed chunks.
//!
//! A norm's backward recomputes each row's statistics from the input (short passes over a row
//! that is in cache) instead of keeping them from the forward. Parameter gradients are summed
//! per chunk and the chunks' sums added in order, so that results do not depend on how the
//! work was scheduled.

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::Shape;
use rayon::prelude::*;

use super::{FusedLayerOps, GELU_CUBIC, TWO_SQRT_2_OVER_PI};
use crate::extension::{WritableF32, f32_values, tensor_of, update_elements};

/// Rows of a norm per task: enough work per task to amortise scheduling, and enough tasks to
/// share between cores.
const ROWS_PER_TASK: usize = 16;

/// Elements of an activation per task.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// The extension on a CPU backend: the kernels below, through the backend's own tensor data.
macro_rules! cpu_fused_layers {
    ($backend:ty) => {
        impl FusedLayerOps for $backend {
            fn fused_layer_norm(
                input: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: FloatTensor<Self>,
                epsilon: f64,
            ) -> FloatTensor<Self> {
                layer_norm::<Self>(input, gamma, beta, epsilon)
            }

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
                // The parameters' sums cost two multiply-adds an element in the same pass.
                let (d_input, d_gamma, d_beta) =
                    layer_norm_backward::<Self>(input, gamma, output_grad, epsilon);
                (d_input, affine.then_some((d_gamma, d_beta)))
            }

            fn fused_gelu_tanh(input: FloatTensor<Self>) -> FloatTensor<Self> {
                map_elements::<Self>(input, |x| x * gate(x))
            }

            fn fused_gelu_tanh_backward(
                input: FloatTensor<Self>,
                output_grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                map_gradients::<Self>(input, output_grad, gelu_tanh_slope)
            }

            fn fused_rms_norm(
                input: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                epsilon: f64,
            ) -> FloatTensor<Self> {
                rms_norm::<Self>(input, gamma, epsilon)
            }

            fn fused_rms_norm_backward(
                input: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                output_grad: FloatTensor<Self>,
                epsilon: f64,
                affine: bool,
            ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
                let (d_input, d_gamma) =
                    rms_norm_backward::<Self>(input, gamma, output_grad, epsilon);
                (d_input, affine.then_some(d_gamma))
            }

            fn fused_silu(input: FloatTensor<Self>) -> FloatTensor<Self> {
                map_elements::<Self>(input, |x| x * sigmoid(x))
            }

            fn fused_silu_backward(
                input: FloatTensor<Self>,
                output_grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
                map_gradients::<Self>(input, output_grad, |x| {
                    let s = sigmoid(x);
                    s * (1.0 + x * (1.0 - s))
                })
            }
        }
    };
}

#[cfg(feature = "flex")]
cpu_fused_layers!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
cpu_fused_layers!(burn::backend::NdArray);

/// A row's mean and `1/√(variance + epsilon)` (biased variance, from the mean: two passes, as
/// exact as the decomposed form).
fn row_statistics(row: &[f32], epsilon: f32) -> (f32, f32) {
    let len = row.len() as f32;
    let mean = row.iter().sum::<f32>() / len;
    let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / len;
    (mean, 1.0 / (variance + epsilon).sqrt())
}

/// A row's `1/√(mean(x²) + epsilon)`.
fn inverse_rms(row: &[f32], epsilon: f32) -> f32 {
    let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (mean_square + epsilon).sqrt()
}

/// `normalise(input row, output row)` over every row of `input` (rows of its last dimension),
/// in chunks on every core; the result has the input's shape and type.
fn map_rows<B: Backend>(
    input: FloatTensor<B>,
    normalise: impl Fn(&[f32], &mut [f32]) + Sync,
) -> FloatTensor<B> {
    let (dtype, device, shape) = (input.dtype(), input.device(), input.shape());
    let width = shape[shape.num_dims() - 1];
    let x = f32_values::<B>(input);
    let mut out = vec![0.0f32; x.len()];
    if width > 0 {
        out.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (out, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    normalise(x, out);
                }
            });
    }
    tensor_of::<B>(out, shape, dtype, &device)
}

/// A norm's backward over every row: `row(input, output_grad, input_grad, sums)` writes the
/// row's input gradient and adds its share of the `N` parameter gradients (each `[width]`) to
/// `sums`. Returns the input gradient and the parameter gradients, as tensors of the input's
/// type, the parameters of `parameter_shape`.
fn backward_rows<B: Backend, const N: usize>(
    input: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    parameter_shape: Shape,
    row: impl Fn(&[f32], &[f32], &mut [f32], &mut [Vec<f32>; N]) + Sync,
) -> (FloatTensor<B>, [FloatTensor<B>; N]) {
    let (dtype, device, shape) = (input.dtype(), input.device(), input.shape());
    let width = shape[shape.num_dims() - 1];
    let (x, dy) = (f32_values::<B>(input), f32_values::<B>(output_grad));
    let mut dx = vec![0.0f32; x.len()];
    let mut sums: [Vec<f32>; N] = std::array::from_fn(|_| vec![0.0f32; width]);
    if width > 0 {
        let chunk = width * ROWS_PER_TASK;
        let chunk_sums: Vec<[Vec<f32>; N]> = dx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(dy.par_chunks(chunk))
            .map(|((dx, x), dy)| {
                let mut sums: [Vec<f32>; N] = std::array::from_fn(|_| vec![0.0f32; width]);
                let rows = dx
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .zip(dy.chunks_exact(width));
                for ((dx, x), dy) in rows {
                    row(x, dy, dx, &mut sums);
                }
                sums
            })
            .collect();
        for chunk_sums in chunk_sums {
            for (sum, chunk_sum) in sums.iter_mut().zip(chunk_sums) {
                sum.iter_mut().zip(chunk_sum).for_each(|(sum, v)| *sum += v);
            }
        }
    }
    let parameters = sums.map(|sum| tensor_of::<B>(sum, parameter_shape.clone(), dtype, &device));
    (tensor_of::<B>(dx, shape, dtype, &device), parameters)
}

fn layer_norm<B: Backend>(
    input: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    let (gamma, beta) = (f32_values::<B>(gamma), f32_values::<B>(beta));
    map_rows::<B>(input, |x, out| {
        let (mean, inv_std) = row_statistics(x, epsilon as f32);
        for (((out, x), gamma), beta) in out.iter_mut().zip(x).zip(&gamma).zip(&beta) {
            *out = (x - mean) * inv_std * gamma + beta;
        }
    })
}

fn layer_norm_backward<B: Backend>(
    input: FloatTensor<B>,
    gamma: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let gamma_shape = gamma.shape();
    let gamma = f32_values::<B>(gamma);
    let (dx, [d_gamma, d_beta]) = backward_rows::<B, 2>(
        input,
        output_grad,
        gamma_shape,
        |x, dy, dx, [d_gamma, d_beta]| {
            let (mean, inv_std) = row_statistics(x, epsilon as f32);
            let width = x.len();
            // With x̂ the normalised input and g = dy·gamma, the gradient through the
            // normalisation is inv_std·(g − mean(g) − x̂·mean(g·x̂)).
            let (mut g_sum, mut g_xhat_sum) = (0.0f32, 0.0f32);
            for i in 0..width {
                let x_hat = (x[i] - mean) * inv_std;
                let g = dy[i] * gamma[i];
                g_sum += g;
                g_xhat_sum += g * x_hat;
                d_gamma[i] += dy[i] * x_hat;
                d_beta[i] += dy[i];
            }
            let (g_mean, g_xhat_mean) = (g_sum / width as f32, g_xhat_sum / width as f32);
            for i in 0..width {
                let x_hat = (x[i] - mean) * inv_std;
                dx[i] = inv_std * (dy[i] * gamma[i] - g_mean - x_hat * g_xhat_mean);
            }
        },
    );
    (dx, d_gamma, d_beta)
}

fn rms_norm<B: Backend>(
    input: FloatTensor<B>,
    gamma: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    let gamma = f32_values::<B>(gamma);
    map_rows::<B>(input, |x, out| {
        let inv_rms = inverse_rms(x, epsilon as f32);
        for ((out, x), gamma) in out.iter_mut().zip(x).zip(&gamma) {
            *out = x * inv_rms * gamma;
        }
    })
}

fn rms_norm_backward<B: Backend>(
    input: FloatTensor<B>,
    gamma: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let gamma_shape = gamma.shape();
    let gamma = f32_values::<B>(gamma);
    let (dx, [d_gamma]) =
        backward_rows::<B, 1>(input, output_grad, gamma_shape, |x, dy, dx, [d_gamma]| {
            let inv_rms = inverse_rms(x, epsilon as f32);
            // With x̂ = x·inv_rms and g = dy·gamma: inv_rms·(g − x̂·mean(g·x̂)).
            let mut g_xhat_sum = 0.0f32;
            for i in 0..x.len() {
                let x_hat = x[i] * inv_rms;
                g_xhat_sum += dy[i] * gamma[i] * x_hat;
                d_gamma[i] += dy[i] * x_hat;
            }
            let g_xhat_mean = g_xhat_sum / x.len() as f32;
            for i in 0..x.len() {
                dx[i] = inv_rms * (dy[i] * gamma[i] - x[i] * inv_rms * g_xhat_mean);
            }
        });
    (dx, d_gamma)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `σ(2√(2/π)·(x + 0.044715·x³))`, which is `(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2`.
fn gate(x: f32) -> f32 {
    sigmoid(TWO_SQRT_2_OVER_PI as f32 * x * (1.0 + GELU_CUBIC as f32 * x * x))
}

/// d/dx x·gate(x) = s + x·s·(1 − s)·2√(2/π)·(1 + 3·0.044715·x²), with s = gate(x).
fn gelu_tanh_slope(x: f32) -> f32 {
    let s = gate(x);
    let inner_slope = TWO_SQRT_2_OVER_PI as f32 * (1.0 + 3.0 * GELU_CUBIC as f32 * x * x);
    s + x * s * (1.0 - s) * inner_slope
}

/// `activation` of every element, in chunks on every core.
fn map_elements<B: Backend>(
    input: FloatTensor<B>,
    activation: impl Fn(f32) -> f32 + Sync,
) -> FloatTensor<B> {
    update_elements::<B>(input, ELEMENTS_PER_TASK, |_, chunk| {
        chunk.iter_mut().for_each(|x| *x = activation(*x))
    })
}

/// An element-wise activation's input gradient: `output_grad · slope(input)`.
fn map_gradients<B: Backend>(
    input: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    slope: impl Fn(f32) -> f32 + Sync,
) -> FloatTensor<B> {
    let dtype = input.dtype();
    let x = f32_values::<B>(input);
    let mut grad = WritableF32::<B>::of(output_grad);
    grad.values()
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(grad, x)| {
            for (grad, &x) in grad.iter_mut().zip(x) {
                *grad *= slope(x);
            }
        });
    grad.into_tensor(dtype)
}
