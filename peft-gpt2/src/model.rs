//! GPT-2 (Radford et al., 2019) as Burn modules, mirroring Hugging Face's `GPT2LMHeadModel`
//! parameter for parameter so that its checkpoints load without conversion.
//!
//! The forward pass is split so adapters can take part: [`Gpt2::embed_tokens`] gives token
//! embeddings that an adapter may extend (prompt tuning prepends its own), and
//! [`Gpt2::forward`] takes those embeddings, explicit positions, an attention mask and optional
//! per-layer prefix keys/values (prefix tuning), plus an optional [`KvCache`] for generation.

use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use peft_core::LayerKv;
use peft_decoder::attention::AttentionMask;
use peft_decoder::fused_dropout::dropout;
use peft_decoder::fused_layers::{gelu_tanh, layer_norm};
use peft_decoder::init::{hf_embedding, hf_linear};
use peft_decoder::linear::ForwardRows;
use peft_decoder::{Decoder, ForwardInput, InputError, KvCache, LayerCache};

use crate::attention::CausalSelfAttention;
use crate::config::Gpt2Config;
use crate::error::{Error, Result};
use crate::init::{INIT_STD, residual_projection_std};

#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    dropout: Dropout,
}

impl Mlp {
    fn new(config: &Gpt2Config, device: &Device) -> Self {
        Self {
            c_fc: hf_linear(config.n_embd, config.mlp_width(), true, INIT_STD, device),
            c_proj: hf_linear(
                config.mlp_width(),
                config.n_embd,
                true,
                residual_projection_std(config),
                device,
            ),
            dropout: DropoutConfig::new(config.resid_pdrop).init(),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = gelu_tanh(self.c_fc.forward_rows(x));
        dropout(&self.dropout, self.c_proj.forward_rows(hidden))
    }
}

/// One pre-LayerNorm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
    /// The LayerNorms' epsilon (Burn's `LayerNorm` keeps its own private).
    layer_norm_epsilon: f64,
}

impl Block {
    fn new(config: &Gpt2Config, layer: usize, device: &Device) -> Self {
        let norm = LayerNormConfig::new(config.n_embd).with_epsilon(config.layer_norm_epsilon);
        Self {
            ln_1: norm.init(device),
            attn: CausalSelfAttention::new(config, layer, device),
            ln_2: norm.init(device),
            mlp: Mlp::new(config, device),
            layer_norm_epsilon: config.layer_norm_epsilon,
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        mask: &AttentionMask,
        prefix: Option<&LayerKv>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let epsilon = self.layer_norm_epsilon;
        let x = x.clone()
            + self
                .attn
                .forward(layer_norm(&self.ln_1, epsilon, x), mask, prefix, cache);
        x.clone() + self.mlp.forward(layer_norm(&self.ln_2, epsilon, x))
    }
}

/// GPT-2 with its language-model head (tied to the token embedding `wte`).
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embedding `[vocab, d]`; also the output projection.
    pub wte: Embedding,
    /// Learned position embedding `[n_positions, d]`.
    pub wpe: Embedding,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
    dropout: Dropout,
    n_positions: usize,
    layer_norm_epsilon: f64,
}

impl Gpt2 {
    /// A randomly initialised model (weights are lazy: loading a checkpoint afterwards never
    /// materialises the random ones).
    pub fn new(config: &Gpt2Config, device: &Device) -> Self {
        let d = config.n_embd;
        Self {
            wte: hf_embedding(config.vocab_size, d, INIT_STD, device),
            wpe: hf_embedding(config.n_positions, d, INIT_STD, device),
            h: (0..config.n_layer)
                .map(|layer| Block::new(config, layer, device))
                .collect(),
            ln_f: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_epsilon)
                .init(device),
            dropout: DropoutConfig::new(config.embd_pdrop).init(),
            n_positions: config.n_positions,
            layer_norm_epsilon: config.layer_norm_epsilon,
        }
    }

    pub fn n_positions(&self) -> usize {
        self.n_positions
    }

    pub fn n_layer(&self) -> usize {
        self.h.len()
    }

    pub fn device(&self) -> Device {
        self.wte.weight.device()
    }

    /// Fails when `len` positions (prefix, cached and new tokens together) exceed what the
    /// learned position table covers.
    pub fn check_fits(&self, len: usize) -> Result<()> {
        if len > self.n_positions {
            return Err(Error::Input(format!(
                "sequence of {len} positions (virtual tokens included) is longer than the \
                 model's {} positions; shorten the input or use fewer virtual tokens",
                self.n_positions
            )));
        }
        Ok(())
    }

    /// Token embeddings `[B, T, d]` for token ids `[B, T]`.
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.wte.forward(ids)
    }

    /// Final hidden states `[B, T, d]` (after `ln_f`).
    ///
    /// Panics if the positions do not fit the model; user-facing callers check with
    /// [`Gpt2::check_fits`] first.
    pub fn forward(&self, input: ForwardInput<'_>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let mask = input.attention_mask(self, cache.as_deref());
        let mut x = dropout(
            &self.dropout,
            input.embeddings + self.wpe.forward(input.positions),
        );
        for (layer, block) in self.h.iter().enumerate() {
            let prefix = input.prefix.map(|p| &p.layers[layer]);
            let slot = cache.as_deref_mut().map(|c| c.layer_mut(layer));
            x = block.forward(x, &mask, prefix, slot);
        }
        layer_norm(&self.ln_f, self.layer_norm_epsilon, x)
    }

    /// Next-token logits `[B, T, vocab]` from hidden states, through the tied `wte`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [batch, len, width] = hidden.dims();
        let vocab = self.wte.weight.dims()[0];
        // A 2-D product reads the transposed table in place; lifting it to 3-D would copy
        // the whole [vocab, d] table on every call (a reshape of a transposed view).
        hidden
            .reshape([batch * len, width])
            .matmul(self.wte.weight.val().transpose())
            .reshape([batch, len, vocab])
    }

    /// Logits for token ids `[B, T]`, with positions `0..T` and an optional padding mask —
    /// the plain language model, as `GPT2LMHeadModel(input_ids, attention_mask)` computes it.
    pub fn forward_ids(&self, ids: Tensor<2, Int>, key_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let [batch, len] = ids.dims();
        let positions = positions_from(0, batch, len, &ids.device());
        let hidden = self.forward(
            ForwardInput {
                embeddings: self.embed_tokens(ids),
                positions,
                key_mask,
                prefix: None,
            },
            None,
        );
        self.logits(hidden)
    }
}

/// Positions `start, start+1, ...` for every row: `[batch, len]` — what
/// `GPT2LMHeadModel.forward` uses whatever the padding (adapted batches take theirs from the
/// mask instead, as `generate` does: see [`crate::layout`]).
fn positions_from(start: usize, batch: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<1, Int>::arange(start as i64..(start + len) as i64, device)
        .reshape([1, len])
        .expand([batch, len])
}

impl Decoder for Gpt2 {
    fn n_positions(&self) -> usize {
        self.n_positions
    }

    fn n_layer(&self) -> usize {
        self.h.len()
    }

    fn device(&self) -> Device {
        Gpt2::device(self)
    }

    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        Gpt2::embed_tokens(self, ids)
    }

    fn forward(&self, input: ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor<3> {
        Gpt2::forward(self, input, cache)
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        Gpt2::logits(self, hidden)
    }

    fn token_embeddings(&self) -> Tensor<2> {
        self.wte.weight.val()
    }

    /// GPT-2 ties its head to `wte`.
    fn output_embeddings(&self) -> Tensor<2> {
        self.wte.weight.val()
    }

    fn check_fits(&self, len: usize) -> std::result::Result<(), InputError> {
        Gpt2::check_fits(self, len).map_err(|err| match err {
            Error::Input(message) => InputError(message),
            other => InputError(other.to_string()),
        })
    }
}
