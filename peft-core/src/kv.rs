//! Per-layer key/value tensors that a model's attention prepends to its own keys and values.
//!
//! Prefix tuning hands these to every attention layer; a KV cache holds the same thing for
//! tokens already processed. The batch dimension is `1` when one adapter serves the whole batch
//! (the tensor is broadcast, never copied per example) or `B` when rows differ.

use burn::prelude::*;

/// Keys and values for one attention layer, each `[1 or B, heads, len, head_dim]`.
#[derive(Clone, Debug)]
pub struct LayerKv {
    pub key: Tensor<4>,
    pub value: Tensor<4>,
}

impl LayerKv {
    pub fn new(key: Tensor<4>, value: Tensor<4>) -> Self {
        debug_assert_eq!(key.dims(), value.dims(), "key and value shapes differ");
        Self { key, value }
    }

    /// Batch size of the tensors: 1 for a shared (broadcast) entry.
    pub fn batch(&self) -> usize {
        self.key.dims()[0]
    }

    /// Number of key/value positions.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One [`LayerKv`] per transformer layer.
#[derive(Clone, Debug)]
pub struct PrefixKv {
    pub layers: Vec<LayerKv>,
}

impl PrefixKv {
    pub fn new(layers: Vec<LayerKv>) -> Self {
        Self { layers }
    }

    /// Number of prefix positions (the same at every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits a flat table of prefix activations into per-layer keys and values.
    ///
    /// `table` is `[batch, p, n_layer * 2 * n_head * head_dim]`, in Hugging Face PEFT's layout:
    /// for each virtual token, layer-major, then key before value, then head, then head
    /// dimension. This is how PEFT's `PrefixEncoder` output is viewed as `past_key_values`.
    pub fn from_flat_table(table: Tensor<3>, n_layer: usize, n_head: usize) -> Self {
        let [batch, p, width] = table.dims();
        assert_eq!(
            width % (n_layer * 2 * n_head),
            0,
            "prefix table width {width} is not a multiple of n_layer*2*n_head"
        );
        let head_dim = width / (n_layer * 2 * n_head);
        // [batch, p, layer*kv, head, head_dim] -> [layer*kv, batch, head, p, head_dim]
        let per_layer = table
            .reshape([batch, p, n_layer * 2, n_head, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let layers = (0..n_layer)
            .map(|layer| {
                let take = |kv: usize| {
                    per_layer
                        .clone()
                        .narrow(0, layer * 2 + kv, 1)
                        .reshape([batch, n_head, p, head_dim])
                };
                LayerKv::new(take(0), take(1))
            })
            .collect();
        Self { layers }
    }
}
