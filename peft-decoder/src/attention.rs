//! The part of causal self-attention every family shares: where prefix keys/values, the KV
//! cache and the masks meet.
//!
//! The keys a query sees are, in order: the prefix (from a prefix-tuning adapter, shared by the
//! batch or one per row), the cached keys of earlier tokens, and the keys of the current tokens.
//! Without a KV cache (training, evaluation) the prefix is attended as its own segment — its
//! scores and its weighted values are separate matrix products that broadcast over the batch —
//! so a `[1, heads, p, head_dim]` prefix is never copied per example. With one (generation), the
//! cache holds the prefix, copied once per row, at the front of its buffers
//! ([`LayerCache`]), so that each decoded token reads all its keys as one run.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use peft_core::LayerKv;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::decoder::LayerCache;
use crate::fused_attention::{self as fused, AttentionSettings, Masking};

/// Added to the score of a key a query must not see. Finite so that a query that sees nothing
/// (a padding position) gets a finite, ignored output instead of NaNs, and small enough in
/// magnitude to be representable in f16; `exp(-1e4)` is exactly 0 in every float type.
pub const MASKED_SCORE: f64 = -1e4;

/// The keys and values a call attends: with a cache, everything it holds after this call's
/// are appended — the prefix at its front, so that no prefix is left to attend separately
/// (`None`); without one, the prefix as given and this call's keys and values alone.
pub fn with_cached<'a>(
    new: LayerKv,
    prefix: Option<&'a LayerKv>,
    cache: Option<&mut LayerCache>,
) -> (Option<&'a LayerKv>, LayerKv) {
    match cache {
        Some(cache) => (None, cache.append(new, prefix)),
        None => (prefix, new),
    }
}

/// Whether [`attend`] may use the fused operation where the backend has one (the default).
static FUSED_ATTENTION: AtomicBool = AtomicBool::new(true);

/// Turns the fused attention off (or back on) for the whole process, so that benchmarks can
/// compare it with the decomposed path on the same backend. Results are the same either way.
pub fn set_fused_attention(enabled: bool) {
    FUSED_ATTENTION.store(enabled, Ordering::Relaxed);
}

/// Which keys each query of one forward pass may see: what the kernels are told, and the
/// additive score bias of the paths that need it whole ([`Self::full_bias`]).
///
/// Under causal masking the bias holds only what each row hides besides causality (its
/// padding), one value per key, `[B or 1, 1, 1, keys]`: the fused kernels apply causality by
/// position, so no `[T, keys]` tensor is built for them — at a long context's length that
/// tensor, not the model, is what a request's memory is spent on (32,768 positions: 4 GiB in
/// f32, and as much again for each row of a padded batch).
#[derive(Clone, Debug)]
pub struct AttentionMask {
    /// Additive, 0 where a key may be seen and [`MASKED_SCORE`] where not: with causal
    /// masking the keys' own bias, `[B or 1, 1, 1, keys]` (zeros without padding); with
    /// [`Masking::Bias`] the whole bias, `[B or 1, 1, T, keys]`.
    pub bias: Tensor<4>,
    pub masking: Masking,
}

impl AttentionMask {
    /// The mask of `query_len` new tokens after `past_len` cached ones and a `prefix_len`
    /// prefix, hiding the keys whose `key_mask` entry is false (see [`score_bias`]). Without a
    /// key mask it is exactly causal.
    pub fn new(
        prefix_len: usize,
        past_len: usize,
        query_len: usize,
        key_mask: Option<Tensor<2, Bool>>,
        device: &Device,
    ) -> Self {
        let keys = prefix_len + past_len + query_len;
        let (bias, masking) = match key_mask {
            Some(mask) => (padding_bias(mask, keys), Masking::CausalAndBias),
            None => (Tensor::zeros([1, 1, 1, keys], device), Masking::Causal),
        };
        Self { bias, masking }
    }

    /// The same mask with its bias in `dtype` (the activations' float type).
    pub fn cast(self, dtype: burn::tensor::DType) -> Self {
        Self {
            bias: self.bias.cast(dtype),
            ..self
        }
    }

    /// The whole additive bias for `queries` queries, `[B or 1, 1, queries, keys]`: causality
    /// (aligned bottom-right, as [`Masking::Causal`] says) added to the keys' own bias, for
    /// the paths that take the mask as scores to add (the decomposed attention).
    pub fn full_bias(&self, queries: usize) -> Tensor<4> {
        match self.masking {
            Masking::Bias => self.bias.clone(),
            Masking::Causal | Masking::CausalAndBias => {
                let keys = self.bias.dims()[3];
                let causal = causal_bias(0, keys - queries, queries, &self.bias.device());
                self.bias.clone() + causal.cast(self.bias.dtype())
            }
        }
    }
}

/// `softmax(q·kᵀ·scale + bias)·v` over the prefix segment followed by `keys`, with dropout on
/// the attention probabilities. `query` is `[B, heads, T, head_dim]`; the prefix, keys and
/// values have as many heads or a divisor of that (grouped-query attention: query head `i`
/// reads key/value head `i / groups`, as after Hugging Face's `repeat_kv`).
///
/// Runs as one fused operation with its own backward
/// ([`fused_attention`](fused::fused_attention)), dropout included, where the backend has it,
/// which reads grouped heads where they lie; otherwise as [`attend_decomposed`] on heads
/// repeated for their groups ([`repeat_heads`]).
pub fn attend(
    query: Tensor<4>,
    prefix: Option<&LayerKv>,
    keys: &LayerKv,
    mask: &AttentionMask,
    scale: f64,
    dropout: &Dropout,
) -> Tensor<4> {
    let device = query.device();
    if !FUSED_ATTENTION.load(Ordering::Relaxed) || !fused::runs_on(&device) {
        let groups = query.dims()[1] / keys.key.dims()[1];
        let repeat = |kv: &LayerKv| repeat_kv_heads(kv, groups);
        let bias = mask.full_bias(query.dims()[2]);
        return attend_decomposed(
            query,
            prefix.map(repeat).as_ref(),
            &repeat(keys),
            bias,
            scale,
            dropout,
        );
    }
    let settings = fused_settings(mask, scale, dropout, &device);
    let (key, value) = match prefix {
        // The fused kernel takes one key sequence: the prefix, repeated per row, then the rest.
        Some(prefix) => {
            let (prefix_key, prefix_value) = per_row(prefix, query.dims()[0]);
            (
                Tensor::cat(vec![prefix_key, keys.key.clone()], 2),
                Tensor::cat(vec![prefix_value, keys.value.clone()], 2),
            )
        }
        None => (keys.key.clone(), keys.value.clone()),
    };
    fused::fused_attention(query, key, value, mask.bias.clone(), settings)
}

/// [`attend`] for a query, keys and values that one projection made, packed as
/// `[3, B, heads, T, head_dim]` (views of its output), without a KV cache: where the fused
/// operation runs, as its packed form
/// ([`fused_attention_packed`](fused::fused_attention_packed)), whose backward hands the
/// projection its gradient as one tensor; elsewhere unpacked into [`attend`].
pub fn attend_packed(
    qkv: Tensor<5>,
    prefix: Option<&LayerKv>,
    mask: &AttentionMask,
    scale: f64,
    dropout: &Dropout,
) -> Tensor<4> {
    let device = qkv.device();
    if !FUSED_ATTENTION.load(Ordering::Relaxed) || !fused::runs_on(&device) {
        let (query, keys) = unpack_qkv(qkv);
        return attend(query, prefix, &keys, mask, scale, dropout);
    }
    let settings = fused_settings(mask, scale, dropout, &device);
    let prefix = prefix.map(|prefix| per_row(prefix, qkv.dims()[1]));
    fused::fused_attention_packed(qkv, prefix, mask.bias.clone(), settings)
}

/// The query `[B, heads, T, head_dim]` and the keys and values in `qkv`
/// (`[3, B, heads, T, head_dim]`, one projection's output).
pub fn unpack_qkv(qkv: Tensor<5>) -> (Tensor<4>, LayerKv) {
    let [_, batch, heads, len, head_dim] = qkv.dims();
    let part = |i: usize| {
        qkv.clone()
            .narrow(0, i, 1)
            .reshape([batch, heads, len, head_dim])
    };
    (part(0), LayerKv::new(part(1), part(2)))
}

/// What the fused operation is told for one call: the mask's kind, the scale, and the dropout
/// (at the rate Burn's `Dropout` would act) with its seed.
fn fused_settings(
    mask: &AttentionMask,
    scale: f64,
    dropout: &Dropout,
    device: &Device,
) -> AttentionSettings {
    let dropout = crate::fused_dropout::acting_rate(dropout, device);
    let seed = if dropout > 0.0 {
        fused::dropout_seed(device)
    } else {
        0
    };
    AttentionSettings {
        masking: mask.masking,
        scale,
        dropout,
        seed,
    }
}

/// The prefix's keys and values for each of `batch` rows, `[B, heads, p, head_dim]`: a
/// shared prefix (`[1, ..]`) broadcast without a copy, a per-row one as it is.
fn per_row(prefix: &LayerKv, batch: usize) -> (Tensor<4>, Tensor<4>) {
    let expand = |segment: &Tensor<4>| {
        let [_, heads, len, head_dim] = segment.dims();
        segment.clone().expand([batch, heads, len, head_dim])
    };
    (expand(&prefix.key), expand(&prefix.value))
}

/// [`attend`] as separate matrix products, softmax and dropout: what every backend can run,
/// and the reference the fused operation is tested against. Keys and values have as many heads
/// as the query.
pub fn attend_decomposed(
    query: Tensor<4>,
    prefix: Option<&LayerKv>,
    keys: &LayerKv,
    score_bias: Tensor<4>,
    scale: f64,
    dropout: &Dropout,
) -> Tensor<4> {
    let scores_of = |key: &Tensor<4>| {
        query
            .clone()
            .matmul(key.clone().swap_dims(2, 3))
            .mul_scalar(scale)
    };
    let prefix_len = prefix.map_or(0, LayerKv::len);
    let scores = match prefix {
        Some(prefix) => Tensor::cat(vec![scores_of(&prefix.key), scores_of(&keys.key)], 3),
        None => scores_of(&keys.key),
    };
    let probs = dropout.forward(softmax(scores + score_bias, 3));
    let own = probs
        .clone()
        .narrow(3, prefix_len, keys.len())
        .matmul(keys.value.clone());
    match prefix {
        Some(prefix) => own + probs.narrow(3, 0, prefix_len).matmul(prefix.value.clone()),
        None => own,
    }
}

/// Keys or values of `kv_heads` heads repeated for `groups` query heads each:
/// `[B, kv_heads, T, d]` → `[B, kv_heads * groups, T, d]`, query head `i` reading key/value
/// head `i / groups` (Hugging Face's `repeat_kv`).
pub fn repeat_heads(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [batch, heads, len, dim] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([batch, heads, groups, len, dim])
        .reshape([batch, heads * groups, len, dim])
}

/// [`repeat_heads`] for the keys and the values of `kv`.
pub fn repeat_kv_heads(kv: &LayerKv, groups: usize) -> LayerKv {
    LayerKv::new(
        repeat_heads(kv.key.clone(), groups),
        repeat_heads(kv.value.clone(), groups),
    )
}

/// The additive score bias for `query_len` new tokens: causal over the cached and new tokens,
/// the whole prefix visible, and every key whose `key_mask` entry is false hidden.
///
/// `key_mask` is `[B, prefix + past + query_len]`, true for real tokens (Hugging Face's
/// `attention_mask`). Returns `[B or 1, 1, query_len, prefix + past + query_len]`.
pub fn score_bias(
    prefix_len: usize,
    past_len: usize,
    query_len: usize,
    key_mask: Option<Tensor<2, Bool>>,
    device: &Device,
) -> Tensor<4> {
    let causal = causal_bias(prefix_len, past_len, query_len, device);
    match key_mask {
        Some(mask) => causal + padding_bias(mask, prefix_len + past_len + query_len),
        None => causal,
    }
}

/// `[1, 1, query_len, prefix + past + query_len]`: query `i` (at absolute index
/// `past_len + i`) sees the prefix and own keys `j <= past_len + i`.
fn causal_bias(prefix_len: usize, past_len: usize, query_len: usize, device: &Device) -> Tensor<4> {
    let own_len = past_len + query_len;
    let future = Tensor::<2, Bool>::tril_mask([query_len, own_len], past_len as i64, device);
    Tensor::cat(
        vec![
            Tensor::<2>::zeros([query_len, prefix_len], device),
            future.float().mul_scalar(MASKED_SCORE),
        ],
        1,
    )
    .reshape([1, 1, query_len, prefix_len + own_len])
}

/// `[B, 1, 1, keys]`: [`MASKED_SCORE`] at the keys whose `key_mask` (`[B, keys]`) entry is false.
fn padding_bias(key_mask: Tensor<2, Bool>, keys: usize) -> Tensor<4> {
    let [batch, key_len] = key_mask.dims();
    assert_eq!(
        key_len, keys,
        "attention mask covers {key_len} keys, expected {keys} (prefix + past + new)"
    );
    key_mask
        .bool_not()
        .float()
        .mul_scalar(MASKED_SCORE)
        .reshape([batch, 1, 1, keys])
}
