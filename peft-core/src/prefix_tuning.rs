//! Prefix tuning (Li & Liang, 2021): trainable keys and values prepended at every layer.
//!
//! Three encoders compute the prefix table `[p, n_layer * 2 * d]` that PEFT saves (`d` is the
//! key/value width of the [`ModelShape`] the config carries): the table itself, PEFT's
//! projection MLP, and peft-rs's per-layer projection ([`PrefixReparameterisation`]). PEFT's
//! file holds the table whichever trained it, so Python's `peft` loads every one of them; the
//! two reparameterisations also keep their own weights in the native file, for resuming.

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

/// How a new prefix is parameterised while it trains. Whichever it is, PEFT's file holds the
/// table `[p, n_layer * 2 * d]` it computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefixReparameterisation {
    /// The table itself is the parameter (PEFT's `prefix_projection=False`).
    #[default]
    Direct,
    /// PEFT's `prefix_projection`: an embedding `[p, d]` through a tanh MLP of this hidden
    /// width.
    Mlp { hidden: usize },
    /// peft-rs's per-layer projection: one embedding `[p, width]` shared by every layer
    /// (projected up to `d` first when `width < d`), mapped to each layer's keys and values by
    /// that layer's own linear layer `d -> 2d`. `width` is at most `d`.
    PerLayer { width: usize },
}

impl std::fmt::Display for PrefixReparameterisation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct => write!(f, "a direct table"),
            Self::Mlp { hidden } => write!(f, "PEFT's projection MLP (hidden width {hidden})"),
            Self::PerLayer { width } => write!(
                f,
                "a per-layer projection of one shared embedding of width {width}"
            ),
        }
    }
}

/// PEFT's `PrefixTuningConfig`, plus the one key peft-rs adds for its per-layer projection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixTuningConfig {
    #[serde(flatten)]
    pub base: PromptLearningConfig,
    /// Hidden width of the reparameterisation MLP (PEFT's `prefix_projection`).
    #[serde(default)]
    pub encoder_hidden_size: Option<usize>,
    #[serde(default)]
    pub prefix_projection: bool,
    /// Width of the shared embedding of peft-rs's per-layer projection
    /// ([`PrefixReparameterisation::PerLayer`]); absent (not written) for PEFT's own kinds.
    ///
    /// It lives in `adapter_config.json` so that the config alone says what the native file
    /// must hold, which bounds what loading it allocates. Python's `peft` (0.21) warns about the
    /// unknown key, ignores it and loads the saved table as a plain prefix (`prefix_projection`
    /// is false); a config it saves again drops the key, and then this crate loads the table as
    /// a direct prefix too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft_rs_layer_projection: Option<usize>,
}

impl PrefixTuningConfig {
    /// The config of a new prefix parameterised as `reparameterisation` says.
    pub fn new(base: PromptLearningConfig, reparameterisation: PrefixReparameterisation) -> Self {
        let (hidden, width) = match reparameterisation {
            PrefixReparameterisation::Direct => (None, None),
            PrefixReparameterisation::Mlp { hidden } => (Some(hidden), None),
            PrefixReparameterisation::PerLayer { width } => (None, Some(width)),
        };
        Self {
            base,
            encoder_hidden_size: hidden,
            prefix_projection: hidden.is_some(),
            peft_rs_layer_projection: width,
        }
    }

    /// What trains the table, as this config says. PEFT reads `encoder_hidden_size` only under
    /// `prefix_projection`, and so does this.
    pub fn reparameterisation(&self) -> PrefixReparameterisation {
        match (self.prefix_projection, self.encoder_hidden_size) {
            (true, Some(hidden)) => PrefixReparameterisation::Mlp { hidden },
            _ => match self.peft_rs_layer_projection {
                Some(width) => PrefixReparameterisation::PerLayer { width },
                None => PrefixReparameterisation::Direct,
            },
        }
    }
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
        let Some(width) = self.peft_rs_layer_projection else {
            return Ok(());
        };
        if self.prefix_projection {
            return Err(
                "prefix_projection and peft_rs_layer_projection are two ways to train the same \
                 table; an adapter has one of them"
                    .into(),
            );
        }
        if width == 0 {
            return Err("peft_rs_layer_projection needs a positive embedding width".into());
        }
        let d = self.base.token_dim;
        if width > d {
            // A [p, width] embedding through a linear layer to d reaches no table that a
            // [p, d] one cannot: the extra width would be parameters that buy nothing.
            return Err(format!(
                "peft_rs_layer_projection {width} is wider than the prefix's key/value width \
                 token_dim {d}; the shared embedding is at most that wide"
            ));
        }
        Ok(())
    }

    /// PEFT saves only the projected table; the embedding and the projection are ours to keep.
    fn uses_native_file(&self) -> bool {
        self.prefix_projection || self.peft_rs_layer_projection.is_some()
    }

    fn native_values(&self) -> Option<usize> {
        let (p, d) = (self.base.num_virtual_tokens, self.base.token_dim);
        let counts = match self.reparameterisation() {
            // A direct prefix has no native file.
            PrefixReparameterisation::Direct => return None,
            PrefixReparameterisation::Mlp { hidden } => {
                let out = self.table_width()?;
                // embedding [p, d], hidden layer [d, hidden] + bias, output [hidden, out] + bias.
                vec![
                    p.checked_mul(d)?,
                    d.checked_mul(hidden)?,
                    hidden,
                    hidden.checked_mul(out)?,
                    out,
                ]
            }
            PrefixReparameterisation::PerLayer { width } => {
                // embedding [p, width]; `up` [width, d] + bias only when narrower than d; each
                // layer [d, 2d] + bias, that is 2d(d + 1).
                let up = if width == d {
                    0
                } else {
                    width.checked_mul(d)?.checked_add(d)?
                };
                let layer = d.checked_mul(2)?.checked_mul(d.checked_add(1)?)?;
                vec![
                    p.checked_mul(width)?,
                    up,
                    layer.checked_mul(self.base.num_layers)?,
                ]
            }
        };
        counts.iter().try_fold(0usize, |sum, &n| sum.checked_add(n))
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

/// peft-rs's per-layer projection ([`PrefixReparameterisation::PerLayer`]): one embedding that
/// every layer shares, and for each layer a linear map from it to that layer's keys and values.
///
/// Like PEFT's MLP it trains the table through a smaller set of parameters rather than directly,
/// but instead of one hidden layer feeding every layer's keys and values through a shared output
/// matrix, each layer gets its own linear map from the shared per-token representation: the
/// layers agree on what each virtual token is and each decides what it contributes there. Its
/// size follows the model (`2d(d + 1)` per layer) rather than a chosen hidden width.
#[derive(Module, Debug)]
pub struct PrefixLayerProjection {
    /// `[p, width]`, shared by every layer.
    pub embedding: Param<Tensor<2>>,
    /// `width -> d`, only when the embedding is narrower than the model's `d`.
    pub up: Option<Linear>,
    /// Layer `l`'s `d -> 2d`: the first `d` outputs are its keys, the next `d` its values.
    pub layers: Vec<Linear>,
}

impl PrefixLayerProjection {
    /// The shared embedding at the model's width `[p, d]`.
    pub fn shared(&self) -> Tensor<2> {
        let embedding = self.embedding.val();
        match &self.up {
            Some(up) => up.forward(embedding),
            None => embedding,
        }
    }

    /// PEFT's table `[p, n_layer * 2 * d]`: `[K_0 | V_0 | K_1 | V_1 | ...]`, the layer-major,
    /// key-before-value layout that [`PrefixKv::from_flat_table`] reads.
    pub fn table(&self) -> Tensor<2> {
        let shared = self.shared();
        if self.layers.is_empty() {
            // `Tensor::cat` needs at least one part; a model without layers has no prefix.
            let [p, _] = shared.dims();
            return Tensor::zeros([p, 0], &shared.device());
        }
        let per_layer = self
            .layers
            .iter()
            .map(|layer| layer.forward(shared.clone()))
            .collect();
        Tensor::cat(per_layer, 1)
    }
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
    /// The table is one shared embedding mapped to each layer by that layer's linear layer.
    PerLayer(PrefixLayerProjection),
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

    /// A per-layer projection ([`PrefixReparameterisation::PerLayer`]) of a `width`-wide shared
    /// embedding: embedding `N(0, 1)` as PEFT's prefix embedding, linear layers as PyTorch
    /// initialises them. `width` should be at most `d` (what [`KindConfig::check`] accepts);
    /// below `d` a linear layer `width -> d` projects the embedding up first.
    pub fn per_layer(
        num_virtual_tokens: usize,
        shape: ModelShape,
        width: usize,
        device: &Device,
    ) -> Self {
        let d = shape.d_model;
        let embedding = Tensor::random(
            [num_virtual_tokens, width],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        PrefixEncoder::PerLayer(PrefixLayerProjection {
            embedding: Param::from_tensor(embedding),
            up: (width != d).then(|| LinearConfig::new(width, d).init(device)),
            layers: (0..shape.n_layer)
                .map(|_| LinearConfig::new(d, 2 * d).init(device))
                .collect(),
        })
    }

    /// A saved table `[p, n_layer * 2 * d]` (PEFT's, projected or not) as a direct prefix.
    pub fn from_table(table: Tensor<2>) -> Self {
        PrefixEncoder::Direct(Param::from_tensor(table))
    }

    /// A freshly initialised encoder of the kind `config` describes.
    pub fn for_config(config: &PrefixTuningConfig, device: &Device) -> Self {
        let (p, shape) = (config.base.num_virtual_tokens, config.base.shape());
        match config.reparameterisation() {
            PrefixReparameterisation::Direct => Self::direct(p, shape, device),
            PrefixReparameterisation::Mlp { hidden } => Self::projected(p, shape, hidden, device),
            PrefixReparameterisation::PerLayer { width } => {
                Self::per_layer(p, shape, width, device)
            }
        }
    }

    /// The prefix table `[p, n_layer * 2 * d]`, computed once per forward pass.
    pub fn table(&self) -> Tensor<2> {
        match self {
            PrefixEncoder::Direct(table) => table.val(),
            PrefixEncoder::Projected(projection) => projection
                .output
                .forward(tanh(projection.hidden.forward(projection.embedding.val()))),
            PrefixEncoder::PerLayer(projection) => projection.table(),
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
            PrefixEncoder::PerLayer(projection) => projection.embedding.dims()[0],
        }
    }

    /// What trains this encoder's table, read off its parameters: what a loaded adapter
    /// actually is, which is less than its config says when the native file was absent or
    /// stale.
    pub fn reparameterisation(&self) -> PrefixReparameterisation {
        match self {
            PrefixEncoder::Direct(_) => PrefixReparameterisation::Direct,
            // Burn's linear weights are `[in, out]`.
            PrefixEncoder::Projected(projection) => PrefixReparameterisation::Mlp {
                hidden: projection.hidden.weight.dims()[1],
            },
            PrefixEncoder::PerLayer(projection) => PrefixReparameterisation::PerLayer {
                width: projection.embedding.dims()[1],
            },
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
        !matches!(self, PrefixEncoder::Direct(_))
    }
}
