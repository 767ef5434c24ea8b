//! GPT-2's causal self-attention: its fused query/key/value projection and scaling; where the
//! prefix, the cache and the masks meet is [`peft_decoder::attention`], shared by every family.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use peft_core::LayerKv;
use peft_decoder::LayerCache;
use peft_decoder::attention::{AttentionMask, attend, attend_packed, unpack_qkv, with_cached};
use peft_decoder::fused_dropout::dropout;
use peft_decoder::init::hf_linear;
use peft_decoder::linear::ForwardRows;

use crate::config::Gpt2Config;
use crate::init::{INIT_STD, residual_projection_std};

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
            c_attn: hf_linear(d, 3 * d, true, INIT_STD, device),
            c_proj: hf_linear(d, d, true, residual_projection_std(config), device),
            attn_dropout: DropoutConfig::new(config.attn_pdrop).init(),
            resid_dropout: DropoutConfig::new(config.resid_pdrop).init(),
            n_head: config.n_head,
            scale,
        }
    }

    /// `x`: `[B, T, d]`. `mask`: which of the prefix, cached and new keys each query sees.
    /// `cache` (if any) holds the keys/values of earlier tokens and receives this call's.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mask: &AttentionMask,
        prefix: Option<&LayerKv>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let [batch, len, width] = x.dims();
        let head_dim = width / self.n_head;
        // [B, T, 3d] -> [3, B, heads, T, head_dim]
        let qkv = self
            .c_attn
            .forward_rows(x)
            .reshape([batch, len, 3, self.n_head, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let context = match cache {
            // Training and evaluation: the query, keys and values stay packed, so that the
            // projection gets its gradient as one tensor.
            None => attend_packed(qkv, prefix, mask, self.scale, &self.attn_dropout),
            Some(cache) => {
                let (query, new_kv) = unpack_qkv(qkv);
                let (prefix, keys) = with_cached(new_kv, prefix, Some(cache));
                attend(query, prefix, &keys, mask, self.scale, &self.attn_dropout)
            }
        };
        let merged = context.swap_dims(1, 2).reshape([batch, len, width]);
        dropout(&self.resid_dropout, self.c_proj.forward_rows(merged))
    }
}
