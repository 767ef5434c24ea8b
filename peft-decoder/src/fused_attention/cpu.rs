//! Fused attention on the CPU backends (flex, ndarray): one blocked kernel over f32 slices.
//!
//! Each (batch, query head) pair is one rayon task of the forward; the backward's tasks are
//! (batch, key/value head) pairs, each with the query heads of its group, so that a grouped-query
//! model's key and value gradients are summed over the group without two tasks writing one
//! block. Within it, queries are taken `QUERY_BLOCK` rows at
//! a time: the block's scores against every key are one matrix product into a scratch buffer
//! of `QUERY_BLOCK × S`, softmaxed row by row, and multiplied by the values. Memory beyond the
//! inputs and outputs is therefore a few such buffers per core, never `[B, H, T, S]`. Under a
//! causal mask a block reads only the keys its last row may see ([`Masking::keys_seen`]), and
//! each row's probabilities past its own causal limit are set to 0 by position: the others'
//! probabilities are exactly 0, so skipping them changes no value and saves up to half
//! the work of a long sequence, and the bias need carry only the padding, one row of it
//! broadcast over the queries. The
//! backward recomputes each block's probabilities (as FlashAttention does) instead of storing
//! them, so nothing but the inputs is kept between forward and backward. Dropout's mask is
//! recomputed the same way: each keep-or-drop is a hash of the call's seed and the
//! probability's position ([`DropoutMask`](crate::dropout_mask::DropoutMask)).

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::Shape;
use rayon::prelude::*;

use super::{
    AttentionSaved, AttentionSettings, FusedAttentionOps, Masking, forward_keeping_operands,
};
use crate::cpu_exp::exp_in_place;
use crate::dropout_mask::DropoutMask;
use crate::extension::{HeadBlocks, f32_values, tensor_of};

/// Query rows per block: bounds the scratch to `QUERY_BLOCK × S` floats per buffer while
/// keeping the matrix products large enough to run at full speed.
const QUERY_BLOCK: usize = 64;

/// The extension on a CPU backend: the kernel below, through the backend's own tensor data.
macro_rules! cpu_fused_attention {
    ($backend:ty) => {
        impl FusedAttentionOps for $backend {
            fn fused_attention(
                query: FloatTensor<Self>,
                key: FloatTensor<Self>,
                value: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                settings: AttentionSettings,
            ) -> FloatTensor<Self> {
                forward::<Self>(query, key, value, bias, settings)
            }

            fn fused_attention_forward(
                query: FloatTensor<Self>,
                key: FloatTensor<Self>,
                value: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                settings: AttentionSettings,
            ) -> (FloatTensor<Self>, AttentionSaved<Self>) {
                // The backward recomputes the probabilities and the mask from the operands.
                forward_keeping_operands::<Self>(query, key, value, bias, settings)
            }

            fn fused_attention_backward(
                saved: AttentionSaved<Self>,
                output_grad: FloatTensor<Self>,
                settings: AttentionSettings,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                backward::<Self>(saved, output_grad, settings)
            }
        }
    };
}

#[cfg(feature = "flex")]
cpu_fused_attention!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
cpu_fused_attention!(burn::backend::NdArray);

/// The sizes the kernel needs, read from the operands' shapes.
#[derive(Clone, Copy)]
struct Dims {
    heads: usize,
    /// Query heads per key/value head: 1, or more for grouped-query attention.
    groups: usize,
    queries: usize,
    keys: usize,
    head_dim: usize,
    /// The bias's batch, head and query sizes (each 1 when broadcast).
    bias_batch: usize,
    bias_heads: usize,
    bias_queries: usize,
}

impl Dims {
    fn of(query: &Shape, key: &Shape, bias: &Shape) -> Self {
        let (heads, kv_heads) = (query[1], key[1]);
        assert!(
            kv_heads > 0 && heads % kv_heads == 0,
            "{heads} query heads cannot share {kv_heads} key/value heads evenly"
        );
        assert!(
            (bias[2] == 1 || bias[2] == query[2]) && bias[3] == key[2],
            "a bias of shape {bias:?} for {} queries and {} keys",
            query[2],
            key[2]
        );
        Self {
            heads,
            groups: heads / kv_heads,
            queries: query[2],
            keys: key[2],
            head_dim: query[3],
            bias_batch: bias[0],
            bias_heads: bias[1],
            bias_queries: bias[2],
        }
    }

    /// How many leading keys the query rows `start..start + rows` may see.
    fn keys_seen(&self, masking: Masking, start: usize, rows: usize) -> usize {
        masking.keys_seen(self.queries, self.keys, start + rows)
    }

    /// The (batch, key/value head) pair that (batch, query head) pair `pair` reads: query head
    /// `h` reads key/value head `h / groups` (Hugging Face's `repeat_kv`), so the pairs of one
    /// group are consecutive.
    fn kv_pair(&self, pair: usize) -> usize {
        pair / self.groups
    }

    /// The bias of (batch `b`, head `h`) pair `pair`'s query rows `start..`.
    fn bias_rows<'a>(&self, bias: &'a [f32], pair: usize, start: usize) -> BiasRows<'a> {
        let (b, h) = (pair / self.heads, pair % self.heads);
        let b = if self.bias_batch == 1 { 0 } else { b };
        let h = if self.bias_heads == 1 { 0 } else { h };
        let (per_query, stride) = match self.bias_queries {
            1 => (0, 0),
            _ => (start, self.keys),
        };
        let offset = (b * self.bias_heads + h) * self.bias_queries * self.keys;
        BiasRows {
            values: &bias[offset + per_query * self.keys..],
            stride,
        }
    }
}

/// Consecutive query rows of a bias: each its own `S` values, or one row shared by all
/// (`stride` 0, a bias broadcast over the queries).
#[derive(Clone, Copy)]
struct BiasRows<'a> {
    values: &'a [f32],
    stride: usize,
}

impl BiasRows<'_> {
    fn row(&self, row: usize, keys: usize) -> &[f32] {
        &self.values[row * self.stride..][..keys]
    }
}

fn forward<B: Backend>(
    query: FloatTensor<B>,
    key: FloatTensor<B>,
    value: FloatTensor<B>,
    bias: FloatTensor<B>,
    settings: AttentionSettings,
) -> FloatTensor<B> {
    let mask = DropoutMask::new(settings.dropout, settings.seed);
    let (dtype, device, shape) = (query.dtype(), query.device(), query.shape());
    let dims = Dims::of(&shape, &key.shape(), &bias.shape());
    let (q, k, v, bias) = (
        HeadBlocks::of::<B>(query),
        HeadBlocks::of::<B>(key),
        HeadBlocks::of::<B>(value),
        f32_values::<B>(bias),
    );
    let (t, s, d) = (dims.queries, dims.keys, dims.head_dim);
    let mut out = vec![0.0f32; shape.num_elements()];
    out.par_chunks_mut(t * d)
        .enumerate()
        .for_each(|(pair, out)| {
            let (q, kv_pair) = (q.pair(pair), dims.kv_pair(pair));
            let (k, v) = (k.pair(kv_pair), v.pair(kv_pair));
            let mut probs = vec![0.0f32; QUERY_BLOCK.min(t) * s];
            for start in (0..t).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(t - start);
                let seen = dims.keys_seen(settings.masking, start, rows);
                let probs = &mut probs[..rows * seen];
                probabilities(
                    probs,
                    &q[start * d..][..rows * d],
                    &k[..seen * d],
                    dims.bias_rows(&bias, pair, start),
                    dims.keys_seen(settings.masking, start, 1),
                    d,
                    settings.scale as f32,
                );
                if let Some(mask) = &mask {
                    mask.apply_rows(probs, seen, ((pair * t + start) * s) as u64, s);
                }
                // out[rows, d] = probs[rows, seen] · v[seen, d]
                matmul(
                    &mut out[start * d..][..rows * d],
                    Mat::rows(probs, rows, seen),
                    Mat::rows(&v[..seen * d], seen, d),
                    false,
                    1.0,
                );
            }
        });
    tensor_of::<B>(out, shape, dtype, &device)
}

fn backward<B: Backend>(
    saved: AttentionSaved<B>,
    output_grad: FloatTensor<B>,
    settings: AttentionSettings,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let mask = DropoutMask::new(settings.dropout, settings.seed);
    let AttentionSaved {
        query,
        key,
        value,
        bias_or_graph: bias,
    } = saved;
    let (dtype, device) = (query.dtype(), query.device());
    let (query_shape, key_shape) = (query.shape(), key.shape());
    let dims = Dims::of(&query_shape, &key_shape, &bias.shape());
    let (q, k, v, bias, d_out) = (
        HeadBlocks::of::<B>(query),
        HeadBlocks::of::<B>(key),
        HeadBlocks::of::<B>(value),
        f32_values::<B>(bias),
        f32_values::<B>(output_grad),
    );
    let (t, s, d) = (dims.queries, dims.keys, dims.head_dim);
    let scale = settings.scale as f32;
    let mut d_q = vec![0.0f32; query_shape.num_elements()];
    let mut d_k = vec![0.0f32; key_shape.num_elements()];
    let mut d_v = vec![0.0f32; key_shape.num_elements()];
    // One task per key/value block: the query heads of its group write their own query
    // gradients and add into the block's key and value gradients in turn.
    d_q.par_chunks_mut(dims.groups * t * d)
        .zip(d_k.par_chunks_mut(s * d))
        .zip(d_v.par_chunks_mut(s * d))
        .enumerate()
        .for_each(|(kv_pair, ((d_q_group, d_k), d_v))| {
            let (k, v) = (k.pair(kv_pair), v.pair(kv_pair));
            let block = QUERY_BLOCK.min(t) * s;
            let (mut probs, mut d_scores) = (vec![0.0f32; block], vec![0.0f32; block]);
            // The probabilities after dropout, where it acts (the softmax backward needs both).
            let mut dropped = vec![0.0f32; if mask.is_some() { block } else { 0 }];
            for (member, d_q) in d_q_group.chunks_mut(t * d).enumerate() {
                let pair = kv_pair * dims.groups + member;
                let q = q.pair(pair);
                let d_out = &d_out[pair * t * d..][..t * d];
                for start in (0..t).step_by(QUERY_BLOCK) {
                    let rows = QUERY_BLOCK.min(t - start);
                    // Only the keys the block sees: the others' probabilities and gradients
                    // are 0.
                    let seen = dims.keys_seen(settings.masking, start, rows);
                    let (k, v) = (&k[..seen * d], &v[..seen * d]);
                    let (d_k, d_v) = (&mut d_k[..seen * d], &mut d_v[..seen * d]);
                    let (probs, d_scores) =
                        (&mut probs[..rows * seen], &mut d_scores[..rows * seen]);
                    let q_block = &q[start * d..][..rows * d];
                    let d_out_block = &d_out[start * d..][..rows * d];
                    probabilities(
                        probs,
                        q_block,
                        k,
                        dims.bias_rows(&bias, pair, start),
                        dims.keys_seen(settings.masking, start, 1),
                        d,
                        scale,
                    );
                    let first = ((pair * t + start) * s) as u64;
                    let attended = match &mask {
                        Some(mask) => {
                            let dropped = &mut dropped[..rows * seen];
                            dropped.copy_from_slice(probs);
                            mask.apply_rows(dropped, seen, first, s);
                            &*dropped
                        }
                        None => &*probs,
                    };
                    // d_v[seen, d] += attendedᵀ · d_out
                    matmul(
                        d_v,
                        Mat::rows(attended, rows, seen).t(),
                        Mat::rows(d_out_block, rows, d),
                        true,
                        1.0,
                    );
                    // d_attended[rows, seen] = d_out · vᵀ, then through dropout to d_probs
                    matmul(
                        d_scores,
                        Mat::rows(d_out_block, rows, d),
                        Mat::rows(v, seen, d).t(),
                        false,
                        1.0,
                    );
                    if let Some(mask) = &mask {
                        mask.apply_rows(d_scores, seen, first, s);
                    }
                    // Softmax backward: d_score = p ∘ (d_p − Σ p ∘ d_p), row by row.
                    for (p, g) in probs.chunks(seen).zip(d_scores.chunks_mut(seen)) {
                        let dot: f32 = p.iter().zip(g.iter()).map(|(p, g)| p * g).sum();
                        for (g, p) in g.iter_mut().zip(p) {
                            *g = p * (*g - dot);
                        }
                    }
                    // d_q[rows, d] = scale · d_scores · k ;  d_k[seen, d] += scale · d_scoresᵀ · q
                    let d_scores = Mat::rows(d_scores, rows, seen);
                    matmul(
                        &mut d_q[start * d..][..rows * d],
                        d_scores,
                        Mat::rows(k, seen, d),
                        false,
                        scale,
                    );
                    matmul(d_k, d_scores.t(), Mat::rows(q_block, rows, d), true, scale);
                }
            }
        });
    (
        tensor_of::<B>(d_q, query_shape, dtype, &device),
        tensor_of::<B>(d_k, key_shape.clone(), dtype, &device),
        tensor_of::<B>(d_v, key_shape, dtype, &device),
    )
}

/// Whether the CPU kernel keeps each probability of a `[B, H, T, S]` attention (`shape`) for
/// dropout `rate` and `seed`, in row-major order: what tests hold the kernel to.
pub fn cpu_dropout_keeps(rate: f64, seed: u64, shape: [usize; 4]) -> Vec<bool> {
    let count = shape.iter().product::<usize>() as u64;
    match DropoutMask::new(rate, seed) {
        Some(mask) => (0..count).map(|index| mask.keeps(index)).collect(),
        None => vec![true; count as usize],
    }
}

/// `probs[rows, keys] = softmax(q·kᵀ·scale + bias)` for one block of query rows and the leading
/// keys they see, the block's first row seeing `first_row_keys` of them by position and each
/// next row one more (causality: the others' probabilities are exactly 0, as `exp` of a masked
/// score is).
fn probabilities(
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    bias: BiasRows,
    first_row_keys: usize,
    head_dim: usize,
    scale: f32,
) {
    let rows = q.len() / head_dim;
    let keys = k.len() / head_dim;
    matmul(
        probs,
        Mat::rows(q, rows, head_dim),
        Mat::rows(k, keys, head_dim).t(),
        false,
        scale,
    );
    for (index, row) in probs.chunks_mut(keys).enumerate() {
        let (row, hidden) = row.split_at_mut((first_row_keys + index).min(keys));
        hidden.fill(0.0);
        let mut max = f32::NEG_INFINITY;
        for (score, bias) in row.iter_mut().zip(bias.row(index, keys)) {
            *score += bias;
            max = max.max(*score);
        }
        row.iter_mut().for_each(|score| *score -= max);
        exp_in_place(row);
        let total: f32 = row.iter().sum();
        // The largest term is exp(0) = 1, so total >= 1 whenever the row has a key.
        let inverse = total.recip();
        row.iter_mut().for_each(|p| *p *= inverse);
    }
}

/// A row-major matrix view, possibly transposed (strides swapped, no copy).
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix view of {rows}×{cols}");
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `dst = alpha · a · b`, or `dst += alpha · a · b` when `accumulate`; `dst` is row-major.
fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, alpha: f32) {
    assert_eq!(a.cols, b.rows, "inner dimensions of a matrix product");
    assert_eq!(
        dst.len(),
        a.rows * b.cols,
        "matrix product destination size"
    );
    // SAFETY: the views' lengths were checked against their shapes and strides when they were
    // made (a transposed view reads the same elements), and `dst` holds `a.rows × b.cols`.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
