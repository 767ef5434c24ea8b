//! What a decoder-only model family implements to take adapters: token embeddings, a forward
//! pass over embeddings with explicit positions, a key mask, per-layer prefix keys/values and a
//! KV cache, and the LM head. Everything else here (batch layout, mixed-adapter batches,
//! generation) is written once against it.

use burn::prelude::*;
use peft_core::{LayerKv, PrefixKv};

use crate::attention::AttentionMask;
use crate::error::InputError;

/// A decoder-only language model that adapters can condition.
pub trait Decoder {
    /// How many positions the model can attend over (prefix, cached and new tokens together).
    fn n_positions(&self) -> usize;
    fn n_layer(&self) -> usize;
    fn device(&self) -> Device;
    /// Token embeddings `[B, T, d]` for token ids `[B, T]`.
    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3>;
    /// Final hidden states `[B, T, d]` (after the last norm). Panics if the positions do not
    /// fit; callers check with [`Decoder::check_fits`] first.
    fn forward(&self, input: ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor<3>;
    /// Next-token logits `[B, T, vocab]` from hidden states.
    fn logits(&self, hidden: Tensor<3>) -> Tensor<3>;
    /// The token-embedding table `[vocab, d]` (a prompt may start from its rows).
    fn token_embeddings(&self) -> Tensor<2>;
    /// The LM head as a `[vocab, d]` table (the token embeddings when they are tied), for a
    /// loss that runs the head only where a label is predicted.
    fn output_embeddings(&self) -> Tensor<2>;

    /// Fails when `len` positions (prefix, cached and new tokens together) exceed the model's.
    fn check_fits(&self, len: usize) -> Result<(), InputError> {
        if len > self.n_positions() {
            return Err(InputError(format!(
                "sequence of {len} positions (virtual tokens included) is longer than the \
                 model's {} positions; shorten the input or use fewer virtual tokens",
                self.n_positions()
            )));
        }
        Ok(())
    }
}

/// Everything a forward pass reads besides the weights.
#[derive(Clone, Debug)]
pub struct ForwardInput<'a> {
    /// Input embeddings `[B, T, d]`: [`Decoder::embed_tokens`], possibly with an adapter's
    /// virtual-token embeddings prepended. The model adds its own position information
    /// (learned position embeddings, rotary phases) from `positions`.
    pub embeddings: Tensor<3>,
    /// Position index of every input, `[B, T]`.
    pub positions: Tensor<2, Int>,
    /// Which keys are real tokens, `[B, prefix + past + T]` (Hugging Face's
    /// `attention_mask`, prefix entries included); `None` means all of them.
    pub key_mask: Option<Tensor<2, Bool>>,
    /// Keys/values every query sees before its own tokens, one entry per layer.
    pub prefix: Option<&'a PrefixKv>,
}

/// Keys and values of tokens already processed, one entry per layer.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); n_layer],
        }
    }

    /// Number of cached token positions.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |layer| layer.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the rows `keep` (for dropping finished sequences from a batch).
    pub fn select_rows(&mut self, keep: Tensor<1, Int>) {
        for layer in &mut self.layers {
            if let Some(kv) = &mut layer.buffer {
                *kv = LayerKv::new(
                    kv.key.clone().select(0, keep.clone()),
                    kv.value.clone().select(0, keep.clone()),
                );
            }
        }
    }
}

/// One layer's cached keys and values: `[B, heads, capacity, head_dim]` buffers holding, in
/// order, the prefix of a prefix-tuning adapter (written once, by the first call) and the keys
/// and values of the tokens processed so far — the order in which attention reads them, so
/// that no call joins them anew. Each call's keys and values are written into the free
/// positions, in place where the backend can (flex, LibTorch: the buffer is not shared between
/// calls); a full buffer is copied once into one twice as large.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    buffer: Option<LayerKv>,
    prefix_len: usize,
    /// Token positions held after the prefix.
    len: usize,
}

/// Positions a layer's first buffer has room for at least, so that a short prompt's first
/// decoded tokens do not each grow it.
const MIN_CACHE_CAPACITY: usize = 64;

impl LayerCache {
    /// Appends `new` (`[B, heads, T, head_dim]`) and returns every held key and value: the
    /// prefix, then the tokens, the new ones last. The first call also writes `prefix`
    /// (`[1 or B, heads, P, head_dim]`) ahead of its tokens; later calls are given the same
    /// prefix (the batch's adapters do not change during generation) and do not write it again.
    pub fn append(&mut self, new: LayerKv, prefix: Option<&LayerKv>) -> LayerKv {
        let [batch, heads, added, head_dim] = new.key.dims();
        let prefix = match self.buffer {
            None => prefix.filter(|prefix| !prefix.is_empty()),
            Some(_) => None,
        };
        if let Some(prefix) = prefix {
            self.prefix_len = prefix.len();
        }
        let start = self.prefix_len + self.len;
        let end = start + added;
        let buffer = match self.buffer.take() {
            Some(buffer) if buffer.len() >= end => buffer,
            held => {
                let capacity = end.next_power_of_two().max(MIN_CACHE_CAPACITY);
                let zeros = |len: usize, like: &Tensor<4>| {
                    Tensor::<4>::zeros([batch, heads, len, head_dim], &like.device())
                        .cast(like.dtype())
                };
                // A first buffer is all free (a prefix is written into it below); a full one
                // keeps its held positions.
                let room = |past: Option<Tensor<4>>, like: &Tensor<4>| match past {
                    Some(past) => Tensor::cat(
                        vec![past.narrow(2, 0, start), zeros(capacity - start, like)],
                        2,
                    ),
                    None => zeros(capacity, like),
                };
                let (key, value) = held.map(|held| (held.key, held.value)).unzip();
                LayerKv::new(room(key, &new.key), room(value, &new.value))
            }
        };
        let write = |buffer: Tensor<4>, from: usize, values: Tensor<4>| {
            let [_, _, len, _] = values.dims();
            let values = values
                .expand([batch, heads, len, head_dim])
                .cast(buffer.dtype());
            buffer.slice_assign([0..batch, 0..heads, from..from + len, 0..head_dim], values)
        };
        let (mut key, mut value) = (buffer.key, buffer.value);
        if let Some(prefix) = prefix {
            key = write(key, 0, prefix.key.clone());
            value = write(value, 0, prefix.value.clone());
        }
        let buffer = LayerKv::new(write(key, start, new.key), write(value, start, new.value));
        let held = LayerKv::new(
            buffer.key.clone().narrow(2, 0, end),
            buffer.value.clone().narrow(2, 0, end),
        );
        self.buffer = Some(buffer);
        self.len += added;
        held
    }
}

impl ForwardInput<'_> {
    /// The attention mask over `[prefix | cached | new]` keys, its bias `[B or 1, 1, T, keys]`
    /// (see [`AttentionMask::new`]), after checking that the input fits `model`: its
    /// positions, and a prefix entry for every layer. Panics otherwise — user input is checked
    /// before it gets here, so a failure is a bug.
    pub fn attention_mask(&self, model: &impl Decoder, cache: Option<&KvCache>) -> AttentionMask {
        let [_, len, _] = self.embeddings.dims();
        let prefix_len = self.prefix.map_or(0, PrefixKv::len);
        let past_len = cache.map_or(0, KvCache::len);
        if let Err(err) = model.check_fits(prefix_len + past_len + len) {
            panic!("{err}");
        }
        if let Some(prefix) = self.prefix {
            assert_eq!(
                prefix.layers.len(),
                model.n_layer(),
                "prefix has {} layers, model has {}",
                prefix.layers.len(),
                model.n_layer()
            );
        }
        // Built in f32 and used in the activations' type (half in mixed precision), once per
        // forward pass rather than at every layer.
        AttentionMask::new(
            prefix_len,
            past_len,
            len,
            self.key_mask.clone(),
            &self.embeddings.device(),
        )
        .cast(self.embeddings.dtype())
    }
}

impl KvCache {
    /// The cache of layer `layer`, for that layer's attention to read and extend.
    pub fn layer_mut(&mut self, layer: usize) -> &mut LayerCache {
        &mut self.layers[layer]
    }
}
