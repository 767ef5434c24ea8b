//! Prefix tuning (Li & Liang, 2021): trainable keys and values prepended at every layer.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::tanh;

use serde::{Deserialize, Serialize};

use crate::conditioning::Conditioning;
use crate::config::{AdapterShapes, ModelShape, PromptLearningConfig};
use crate::kind::{Encoder, KindConfig};
use crate::kv::PrefixKv;

/// PEFT's `PrefixTuningConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixTuningConfig {
    #[serde(flatten)]
    pub base: PromptLearningConfig,
    /// Hidden width of the reparameterisation MLP (PEFT's `prefix_projection`).
    #[serde(default)]
    pub encoder_hidden_size: Option<usize>,
    #[serde(default)]
    pub prefix_projection: bool,
}

impl KindConfig for PrefixTuningConfig {
    fn peft_type(&self) -> &'static str {
        "PREFIX_TUNING"
    }

    fn base(&self) -> &PromptLearningConfig {
        &self.base
    }

    fn base_mut(&mut self) -> &mut PromptLearningConfig {
        &mut self.base
    }

    fn model_shape(&self, shapes: &AdapterShapes) -> ModelShape {
        shapes.prefix
    }

    /// Keys and values of every layer.
    fn table_width(&self) -> Option<usize> {
        self.base
            .num_layers
            .checked_mul(2)?
            .checked_mul(self.base.token_dim)
    }

    fn check(&self) -> Result<(), String> {
        if self.prefix_projection && self.encoder_hidden_size.is_none_or(|h| h == 0) {
            return Err("prefix_projection needs a positive encoder_hidden_size".into());
        }
        Ok(())
    }

    /// PEFT saves only the projected table; the embedding and MLP are ours to keep.
    fn uses_native_file(&self) -> bool {
        self.prefix_projection
    }

    fn native_values(&self) -> Option<usize> {
        let (p, d) = (self.base.num_virtual_tokens, self.base.token_dim);
        let hidden = self.encoder_hidden_size.unwrap_or(0);
        let out = self.table_width()?;
        // embedding [p, d], hidden layer [d, hidden] + bias, output layer [hidden, out] + bias.
        [
            p.checked_mul(d)?,
            d.checked_mul(hidden)?,
            hidden,
            hidden.checked_mul(out)?,
            out,
        ]
        .iter()
        .try_fold(0usize, |sum, &n| sum.checked_add(n))
    }
}

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

    /// A saved table `[p, n_layer * 2 * d]` (PEFT's, projected or not) as a direct prefix.
    pub fn from_table(table: Tensor<2>) -> Self {
        PrefixEncoder::Direct(Param::from_tensor(table))
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

impl Encoder for PrefixEncoder {
    fn conditioning(&self, shape: ModelShape) -> Conditioning {
        Conditioning {
            prompt: None,
            prefix: Some(self.forward(shape)),
        }
    }

    fn peft_table(&self) -> Tensor<2> {
        self.table()
    }

    fn has_reparameterisation(&self) -> bool {
        matches!(self, PrefixEncoder::Projected(_))
    }
}
