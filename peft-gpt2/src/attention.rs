//! GPT-2's causal self-attention, the one place where prefix keys/values, the KV cache and the
//! masks meet.
//!
//! The keys a query sees are, in order: the prefix (from a prefix-tuning adapter, shared by the
//! batch or one per row), the cached keys of earlier tokens, and the keys of the current tokens.
//! The prefix is attended as its own segment — its scores and its weighted values are separate
//! matrix products that broadcast over the batch — so a `[1, heads, p, head_dim]` prefix is never
//! copied per example.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use peft_core::LayerKv;

use crate::config::Gpt2Config;
use crate::init::{INIT_STD, hf_linear, residual_projection_std};

/// Added to the score of a key a query must not see. Finite so that a query that sees nothing
/// (a padding position) gets a finite, ignored output instead of NaNs, and small enough in
/// magnitude to be representable in f16; `exp(-1e4)` is exactly 0 in every float type.
pub(crate) const MASKED_SCORE: f64 = -1e4;

#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// Fused query/key/value projection, `[d, 3d]` (Hugging Face's Conv1D layout).
    pub c_attn: Linear,
    /// Output projection, `[d, d]`.
    pub c_proj: Linear,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_head: usize,
    /// Multiplies every score: `1/sqrt(head_dim)`, optionally divided by `layer + 1`.
    scale: f64,
}

impl CausalSelfAttention {
    pub fn new(config: &Gpt2Config, layer: usize, device: &Device) -> Self {
        let d = config.n_embd;
        let mut scale = 1.0;
        if config.scale_attn_weights {
            scale /= (config.head_dim() as f64).sqrt();
        }
        if config.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Self {
            c_attn: hf_linear(d, 3 * d, INIT_STD, device),
            c_proj: hf_linear(d, d, residual_projection_std(config), device),
            attn_dropout: DropoutConfig::new(config.attn_pdrop).init(),
            resid_dropout: DropoutConfig::new(config.resid_pdrop).init(),
            n_head: config.n_head,
            scale,
        }
    }

    /// `x`: `[B, T, d]`. `score_bias`: `[B or 1, 1, T, prefix + past + T]`, 0 where a key may be
    /// seen and [`MASKED_SCORE`] where not. `cache` (if any) holds the keys/values of earlier
    /// tokens and receives this call's.
    pub fn forward(
        &self,
        x: Tensor<3>,
        score_bias: Tensor<4>,
        prefix: Option<&LayerKv>,
        cache: Option<&mut Option<LayerKv>>,
    ) -> Tensor<3> {
        let [batch, len, width] = x.dims();
        let head_dim = width / self.n_head;
        // [B, T, 3d] -> [3, B, heads, T, head_dim]
        let qkv = self
            .c_attn
            .forward(x)
            .reshape([batch, len, 3, self.n_head, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .narrow(0, i, 1)
                .reshape([batch, self.n_head, len, head_dim])
        };
        let (query, new_kv) = (part(0), LayerKv::new(part(1), part(2)));

        let keys = match cache {
            Some(slot) => {
                let joined = match slot.take() {
                    Some(past) => LayerKv::new(
                        Tensor::cat(vec![past.key, new_kv.key], 2),
                        Tensor::cat(vec![past.value, new_kv.value], 2),
                    ),
                    None => new_kv,
                };
                *slot = Some(joined.clone());
                joined
            }
            None => new_kv,
        };

        let context = self.attend(query, prefix, &keys, score_bias);
        let merged = context.swap_dims(1, 2).reshape([batch, len, width]);
        self.resid_dropout.forward(self.c_proj.forward(merged))
    }

    /// `softmax(q·kᵀ·scale + bias)·v` over the prefix segment followed by `keys`.
    fn attend(
        &self,
        query: Tensor<4>,
        prefix: Option<&LayerKv>,
        keys: &LayerKv,
        score_bias: Tensor<4>,
    ) -> Tensor<4> {
        let scores_of = |key: &Tensor<4>| {
            query
                .clone()
                .matmul(key.clone().swap_dims(2, 3))
                .mul_scalar(self.scale)
        };
        let prefix_len = prefix.map_or(0, LayerKv::len);
        let scores = match prefix {
            Some(prefix) => Tensor::cat(vec![scores_of(&prefix.key), scores_of(&keys.key)], 3),
            None => scores_of(&keys.key),
        };
        let probs = self.attn_dropout.forward(softmax(scores + score_bias, 3));
        let key_len = keys.len();
        let own = probs
            .clone()
            .narrow(3, prefix_len, key_len)
            .matmul(keys.value.clone());
        match prefix {
            Some(prefix) => own + probs.narrow(3, 0, prefix_len).matmul(prefix.value.clone()),
            None => own,
        }
    }
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
    let own_len = past_len + query_len;
    // Query i (at absolute index past_len + i) sees own keys j <= past_len + i.
    let future = Tensor::<2, Bool>::tril_mask([query_len, own_len], past_len as i64, device);
    let causal = Tensor::cat(
        vec![
            Tensor::<2>::zeros([query_len, prefix_len], device),
            future.float().mul_scalar(MASKED_SCORE),
        ],
        1,
    )
    .reshape([1, 1, query_len, prefix_len + own_len]);
    match key_mask {
        Some(mask) => {
            let [batch, key_len] = mask.dims();
            assert_eq!(
                key_len,
                prefix_len + own_len,
                "attention mask covers {key_len} keys, expected prefix {prefix_len} + past \
                 {past_len} + new {query_len}"
            );
            let padding = mask
                .bool_not()
                .float()
                .mul_scalar(MASKED_SCORE)
                .reshape([batch, 1, 1, key_len]);
            causal + padding
        }
        None => causal,
    }
}
