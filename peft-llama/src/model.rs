//! A Llama-family decoder as Burn modules, named parameter for parameter as Hugging Face's
//! `LlamaForCausalLM` / `Qwen2ForCausalLM` / `Qwen3ForCausalLM` so that checkpoints load
//! without renaming: RMSNorm before attention and MLP, grouped-query attention with rotary
//! phases (and Qwen3's per-head query/key norms), a SwiGLU MLP, an LM head tied to the token
//! embedding or not.

use burn::nn::{Dropout, DropoutConfig, Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use peft_core::LayerKv;
use peft_decoder::attention::{AttentionMask, attend, with_cached};
use peft_decoder::fused_layers::{rms_norm, silu};
use peft_decoder::fused_rope::RotaryPhases;
use peft_decoder::init::{hf_embedding, hf_linear};
use peft_decoder::linear::ForwardRows;
use peft_decoder::{Decoder, ForwardInput, KvCache, LayerCache};

use crate::config::LlamaConfig;
use crate::rope::{Rope, rotate};

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3's RMSNorm over each head's queries and keys.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// Attention dropout is 0 in every released model; kept so that `attend` has one.
    dropout: Dropout,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Attention {
    fn new(config: &LlamaConfig, device: &Device) -> Self {
        let (d, hd) = (config.hidden_size, config.head_dim);
        let (heads, kv) = (config.num_attention_heads, config.num_key_value_heads);
        let linear = |inputs, outputs, bias| {
            hf_linear(inputs, outputs, bias, config.initializer_range, device)
        };
        let norm = || {
            config.qk_norm.then(|| {
                RmsNormConfig::new(hd)
                    .with_epsilon(config.rms_norm_eps)
                    .init(device)
            })
        };
        Self {
            q_proj: linear(d, heads * hd, config.qkv_bias),
            k_proj: linear(d, kv * hd, config.qkv_bias),
            v_proj: linear(d, kv * hd, config.qkv_bias),
            o_proj: linear(heads * hd, d, config.o_bias),
            q_norm: norm(),
            k_norm: norm(),
            dropout: DropoutConfig::new(0.0).init(),
            n_head: heads,
            n_kv_head: kv,
            head_dim: hd,
        }
    }

    /// `[B, T, heads × head_dim]` → `[B, heads, T, head_dim]`, through the head norm if any.
    fn heads(&self, x: Tensor<3>, heads: usize, norm: Option<&RmsNorm>) -> Tensor<4> {
        let [batch, len, _] = x.dims();
        let x = x.reshape([batch, len, heads, self.head_dim]);
        let x = match norm {
            Some(norm) => rms_norm(norm, x),
            None => x,
        };
        x.swap_dims(1, 2)
    }

    fn forward(
        &self,
        x: Tensor<3>,
        phases: &RotaryPhases,
        mask: &AttentionMask,
        prefix: Option<&LayerKv>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let [batch, len, _] = x.dims();
        let query = self.heads(
            self.q_proj.forward_rows(x.clone()),
            self.n_head,
            self.q_norm.as_ref(),
        );
        let key = self.heads(
            self.k_proj.forward_rows(x.clone()),
            self.n_kv_head,
            self.k_norm.as_ref(),
        );
        let value = self.heads(self.v_proj.forward_rows(x), self.n_kv_head, None);
        let (query, key) = (rotate(query, phases), rotate(key, phases));
        // The prefix, the cache and the attention keep the key/value heads: each serves its
        // group of query heads where it lies (`attend`), never repeated per group.
        let (prefix, keys) = with_cached(LayerKv::new(key, value), prefix, cache);
        let context = attend(
            query,
            prefix,
            &keys,
            mask,
            1.0 / (self.head_dim as f64).sqrt(),
            &self.dropout,
        );
        let merged = context
            .swap_dims(1, 2)
            .reshape([batch, len, self.n_head * self.head_dim]);
        self.o_proj.forward_rows(merged)
    }
}

/// `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn new(config: &LlamaConfig, device: &Device) -> Self {
        let (d, width, bias) = (
            config.hidden_size,
            config.intermediate_size,
            config.mlp_bias,
        );
        let linear = |i, o| hf_linear(i, o, bias, config.initializer_range, device);
        Self {
            gate_proj: linear(d, width),
            up_proj: linear(d, width),
            down_proj: linear(width, d),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward_rows(x.clone()));
        self.down_proj
            .forward_rows(gate * self.up_proj.forward_rows(x))
    }
}

#[derive(Module, Debug)]
pub struct Layer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Layer {
    fn new(config: &LlamaConfig, device: &Device) -> Self {
        let norm = || {
            RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device)
        };
        Self {
            input_layernorm: norm(),
            self_attn: Attention::new(config, device),
            post_attention_layernorm: norm(),
            mlp: Mlp::new(config, device),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        phases: &RotaryPhases,
        mask: &AttentionMask,
        prefix: Option<&LayerKv>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let attended = self.self_attn.forward(
            rms_norm(&self.input_layernorm, x.clone()),
            phases,
            mask,
            prefix,
            cache,
        );
        let x = x + attended;
        x.clone()
            + self
                .mlp
                .forward(rms_norm(&self.post_attention_layernorm, x))
    }
}

/// The decoder stack (`model.` in Hugging Face's names).
#[derive(Module, Debug)]
pub struct LlamaModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<Layer>,
    pub norm: RmsNorm,
}

/// A Llama-family causal language model.
#[derive(Module, Debug)]
pub struct Llama {
    pub model: LlamaModel,
    /// `None` when the head is tied to `model.embed_tokens`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    rope: Rope,
    max_positions: usize,
}

impl Llama {
    /// A randomly initialised model of `config`'s shape, as Hugging Face initialises one
    /// (`peft_decoder::init`; weights are lazy: loading a checkpoint afterwards never
    /// materialises the random ones).
    pub fn new(config: &LlamaConfig, device: &Device) -> Self {
        Self {
            model: LlamaModel {
                embed_tokens: hf_embedding(
                    config.vocab_size,
                    config.hidden_size,
                    config.initializer_range,
                    device,
                ),
                layers: (0..config.num_hidden_layers)
                    .map(|_| Layer::new(config, device))
                    .collect(),
                norm: RmsNormConfig::new(config.hidden_size)
                    .with_epsilon(config.rms_norm_eps)
                    .init(device),
            },
            lm_head: (!config.tie_word_embeddings).then(|| {
                hf_linear(
                    config.hidden_size,
                    config.vocab_size,
                    false,
                    config.initializer_range,
                    device,
                )
            }),
            rope: Rope::new(config),
            max_positions: config.max_positions,
        }
    }
}

impl Decoder for Llama {
    fn n_positions(&self) -> usize {
        self.max_positions
    }

    fn n_layer(&self) -> usize {
        self.model.layers.len()
    }

    fn device(&self) -> Device {
        self.model.embed_tokens.weight.device()
    }

    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.model.embed_tokens.forward(ids)
    }

    fn forward(&self, input: ForwardInput<'_>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let mask = input.attention_mask(self, cache.as_deref());
        let phases = self.rope.phases(input.positions, input.embeddings.dtype());
        let mut x = input.embeddings;
        for (index, layer) in self.model.layers.iter().enumerate() {
            let prefix = input.prefix.map(|p| &p.layers[index]);
            let slot = cache.as_deref_mut().map(|c| c.layer_mut(index));
            x = layer.forward(x, &phases, &mask, prefix, slot);
        }
        rms_norm(&self.model.norm, x)
    }

    fn token_embeddings(&self) -> Tensor<2> {
        self.model.embed_tokens.weight.val()
    }

    fn output_embeddings(&self) -> Tensor<2> {
        match &self.lm_head {
            // Burn's `Linear` keeps `[d, vocab]`.
            Some(head) => head.weight.val().transpose(),
            None => self.token_embeddings(),
        }
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward_rows(hidden),
            None => {
                let [batch, len, width] = hidden.dims();
                let vocab = self.model.embed_tokens.weight.dims()[0];
                // A 2-D product reads the transposed table in place (see GPT-2's `logits`).
                hidden
                    .reshape([batch * len, width])
                    .matmul(self.model.embed_tokens.weight.val().transpose())
                    .reshape([batch, len, vocab])
            }
        }
    }
}
