//! Prefix tuning (Li & Liang, 2021): trainable keys and values prepended at every layer.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::tanh;

use crate::config::{ModelShape, PrefixTuningConfig};
use crate::kv::PrefixKv;

/// The reparameterisation of PEFT's `prefix_projection`: a small embedding pushed through a
/// two-layer tanh MLP, which trains more stably than the raw table.
#[derive(Module, Debug)]
pub struct PrefixProjection {
    /// `[p, d]`.
    pub embedding: Param<Tensor<2>>,
    /// `d -> hidden`.
    pub hidden: Linear,
    /// `hidden -> n_layer * 2 * d`.
    pub output: Linear,
}

/// Where the prefix table comes from.
// One value per adapter, never in a hot collection; boxing would hide the variant from
// Burn's Module derive.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum PrefixEncoder {
    /// The table `[p, n_layer * 2 * d]` itself is the parameter.
    Direct(Param<Tensor<2>>),
    /// The table is computed from a smaller embedding by an MLP.
    Projected(PrefixProjection),
}

impl PrefixEncoder {
    /// A direct table, initialised as PEFT's `nn.Embedding` (standard normal).
    pub fn direct(num_virtual_tokens: usize, shape: ModelShape, device: &Device) -> Self {
        let width = shape.n_layer * 2 * shape.d_model;
        let table = Tensor::random(
            [num_virtual_tokens, width],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        PrefixEncoder::Direct(Param::from_tensor(table))
    }

    /// A projected prefix: embedding `N(0, 1)`, linear layers as PyTorch initialises them.
    pub fn projected(
        num_virtual_tokens: usize,
        shape: ModelShape,
        hidden_size: usize,
        device: &Device,
    ) -> Self {
        let d = shape.d_model;
        let embedding = Tensor::random(
            [num_virtual_tokens, d],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        PrefixEncoder::Projected(PrefixProjection {
            embedding: Param::from_tensor(embedding),
            hidden: LinearConfig::new(d, hidden_size).init(device),
            output: LinearConfig::new(hidden_size, shape.n_layer * 2 * d).init(device),
        })
    }

    /// A freshly initialised encoder of the kind `config` describes.
    pub fn for_config(config: &PrefixTuningConfig, device: &Device) -> Self {
        let base = &config.base;
        match config.encoder_hidden_size {
            Some(hidden) if config.prefix_projection => {
                Self::projected(base.num_virtual_tokens, base.shape(), hidden, device)
            }
            _ => Self::direct(base.num_virtual_tokens, base.shape(), device),
        }
    }

    /// The prefix table `[p, n_layer * 2 * d]`, computed once per forward pass.
    pub fn table(&self) -> Tensor<2> {
        match self {
            PrefixEncoder::Direct(table) => table.val(),
            PrefixEncoder::Projected(projection) => projection
                .output
                .forward(tanh(projection.hidden.forward(projection.embedding.val()))),
        }
    }

    /// Per-layer keys and values `[1, heads, p, head_dim]`, shared by every row of a batch.
    pub fn forward(&self, shape: ModelShape) -> PrefixKv {
        PrefixKv::from_flat_table(self.table().unsqueeze_dim(0), shape.n_layer, shape.n_head)
    }

    pub fn num_virtual_tokens(&self) -> usize {
        match self {
            PrefixEncoder::Direct(table) => table.dims()[0],
            PrefixEncoder::Projected(projection) => projection.embedding.dims()[0],
        }
    }
}
