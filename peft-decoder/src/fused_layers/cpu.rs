//! The fused LayerNorm and GELU on the CPU backends (flex, ndarray): one pass over f32 values
//! forward and one backward, split across cores in fixed chunks.
//!
//! LayerNorm's backward recomputes each row's mean and deviation from the input (two short
//! passes over a row that is in cache) instead of keeping them from the forward. The gamma and
//! beta gradients are summed per chunk and the chunks' sums added in order, so that results do
//! not depend on how the work was scheduled.

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

use super::{FusedLayerOps, TWO_SQRT_2_OVER_PI};
use crate::extension::{f32_values, tensor_of};

/// Rows of a LayerNorm per task: enough work per task to amortise scheduling, and enough tasks
/// to share between cores.
const ROWS_PER_TASK: usize = 16;

/// Elements of a GELU per task.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// The tanh GELU's cubic coefficient.
const CUBIC: f32 = 0.044715;

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
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                layer_norm_backward::<Self>(input, gamma, output_grad, epsilon)
            }

            fn fused_gelu_tanh(input: FloatTensor<Self>) -> FloatTensor<Self> {
                gelu_tanh::<Self>(input)
            }

            fn fused_gelu_tanh_backward(
                input: FloatTensor<Self>,
                output_grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                gelu_tanh_backward::<Self>(input, output_grad)
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

fn layer_norm<B: Backend>(
    input: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    let (dtype, device, shape) = (input.dtype(), input.device(), input.shape());
    let width = shape[shape.num_dims() - 1];
    let (x, gamma, beta) = (
        f32_values::<B>(input),
        f32_values::<B>(gamma),
        f32_values::<B>(beta),
    );
    let mut out = vec![0.0f32; x.len()];
    if width > 0 {
        out.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (out, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    let (mean, inv_std) = row_statistics(x, epsilon as f32);
                    for (((out, x), gamma), beta) in out.iter_mut().zip(x).zip(&gamma).zip(&beta) {
                        *out = (x - mean) * inv_std * gamma + beta;
                    }
                }
            });
    }
    tensor_of::<B>(out, shape, dtype, &device)
}

fn layer_norm_backward<B: Backend>(
    input: FloatTensor<B>,
    gamma: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (dtype, device, shape) = (input.dtype(), input.device(), input.shape());
    let gamma_shape = gamma.shape();
    let width = shape[shape.num_dims() - 1];
    let (x, gamma, dy) = (
        f32_values::<B>(input),
        f32_values::<B>(gamma),
        f32_values::<B>(output_grad),
    );
    let mut dx = vec![0.0f32; x.len()];
    let mut d_gamma = vec![0.0f32; width];
    let mut d_beta = vec![0.0f32; width];
    if width > 0 {
        // Per chunk: its rows' input gradients, and its share of gamma's and beta's.
        let partial_sums: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(width * ROWS_PER_TASK)
            .zip(x.par_chunks(width * ROWS_PER_TASK))
            .zip(dy.par_chunks(width * ROWS_PER_TASK))
            .map(|((dx, x), dy)| {
                let mut d_gamma = vec![0.0f32; width];
                let mut d_beta = vec![0.0f32; width];
                let rows = dx
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .zip(dy.chunks_exact(width));
                for ((dx, x), dy) in rows {
                    let (mean, inv_std) = row_statistics(x, epsilon as f32);
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
                }
                (d_gamma, d_beta)
            })
            .collect();
        for (chunk_gamma, chunk_beta) in partial_sums {
            d_gamma
                .iter_mut()
                .zip(chunk_gamma)
                .for_each(|(sum, v)| *sum += v);
            d_beta
                .iter_mut()
                .zip(chunk_beta)
                .for_each(|(sum, v)| *sum += v);
        }
    }
    (
        tensor_of::<B>(dx, shape, dtype, &device),
        tensor_of::<B>(d_gamma, gamma_shape.clone(), dtype, &device),
        tensor_of::<B>(d_beta, gamma_shape, dtype, &device),
    )
}

/// `σ(2√(2/π)·(x + 0.044715·x³))`, which is `(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2`.
fn gate(x: f32) -> f32 {
    let two_u = TWO_SQRT_2_OVER_PI as f32 * x * (1.0 + CUBIC * x * x);
    1.0 / (1.0 + (-two_u).exp())
}

fn gelu_tanh<B: Backend>(input: FloatTensor<B>) -> FloatTensor<B> {
    let (dtype, device, shape) = (input.dtype(), input.device(), input.shape());
    let mut values = f32_values::<B>(input);
    values
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .for_each(|chunk| chunk.iter_mut().for_each(|x| *x *= gate(*x)));
    tensor_of::<B>(values, shape, dtype, &device)
}

fn gelu_tanh_backward<B: Backend>(
    input: FloatTensor<B>,
    output_grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let (dtype, device, shape) = (input.dtype(), input.device(), input.shape());
    let x = f32_values::<B>(input);
    let mut grad = f32_values::<B>(output_grad);
    grad.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(grad, x)| {
            for (grad, &x) in grad.iter_mut().zip(x) {
                // d/dx x·s(x) = s + x·s·(1 − s)·2√(2/π)·(1 + 3·0.044715·x²)
                let s = gate(x);
                let slope = TWO_SQRT_2_OVER_PI as f32 * (1.0 + 3.0 * CUBIC * x * x);
                *grad *= s + x * s * (1.0 - s) * slope;
            }
        });
    tensor_of::<B>(grad, shape, dtype, &device)
}
