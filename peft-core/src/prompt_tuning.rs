//! Prompt tuning (Lester et al., 2021): `p` trainable embeddings prepended to the input.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::conditioning::Conditioning;
use crate::config::{AdapterShapes, ModelShape, PromptLearningConfig};
use crate::kind::{Encoder, KindConfig};

/// How PEFT initialises a soft prompt (`prompt_tuning_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PromptTuningInit {
    Random,
    Text,
    SampleVocab,
}

/// PEFT's `PromptTuningConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptTuningConfig {
    #[serde(flatten)]
    pub base: PromptLearningConfig,
    pub prompt_tuning_init: PromptTuningInit,
    #[serde(default)]
    pub prompt_tuning_init_text: Option<String>,
    #[serde(default)]
    pub tokenizer_name_or_path: Option<String>,
}

impl PromptTuningConfig {
    /// A freshly initialised prompt of this config's shape, to load a saved one into.
    pub fn untrained(&self, device: &Device) -> PromptEncoder {
        PromptEncoder::new(
            self.base.num_virtual_tokens,
            self.base.token_dim,
            PromptInit::Random { std: 1.0 },
            0.0,
            device,
        )
    }
}

impl KindConfig for PromptTuningConfig {
    fn peft_type(&self) -> &'static str {
        "PROMPT_TUNING"
    }

    fn base(&self) -> &PromptLearningConfig {
        &self.base
    }

    fn base_mut(&mut self) -> &mut PromptLearningConfig {
        &mut self.base
    }

    fn model_shape(&self, shapes: &AdapterShapes) -> ModelShape {
        shapes.prompt
    }

    fn table_width(&self) -> Option<usize> {
        Some(self.base.token_dim)
    }
}

/// How the soft prompt starts.
#[derive(Clone, Debug)]
pub enum PromptInit {
    /// Normal noise with this standard deviation (PEFT's `RANDOM` uses `nn.Embedding`'s 1.0).
    Random { std: f64 },
    /// Rows of the model's token-embedding table `[vocab, d]`, chosen uniformly at random with
    /// the device's seed (PEFT's `SAMPLE_VOCAB`).
    SampleVocab { token_embeddings: Tensor<2> },
    /// The embeddings of an init text's tokens, `[n, d]`, repeated or cut to `p` rows
    /// (PEFT's `TEXT`).
    Text { text_embeddings: Tensor<2> },
    /// A copy of an existing prompt `[p, d]` (transfer from another task).
    From { prompt: Tensor<2> },
}

#[derive(Module, Debug)]
pub struct PromptEncoder {
    /// The soft prompt, `[p, d]`; PEFT saves it as `prompt_embeddings`.
    pub embedding: Param<Tensor<2>>,
    dropout: Dropout,
}

impl PromptEncoder {
    pub fn new(
        num_virtual_tokens: usize,
        d_model: usize,
        init: PromptInit,
        dropout: f64,
        device: &Device,
    ) -> Self {
        let (p, d) = (num_virtual_tokens, d_model);
        let table = match init {
            PromptInit::Random { std } => {
                Tensor::random([p, d], Distribution::Normal(0.0, std), device)
            }
            PromptInit::SampleVocab { token_embeddings } => {
                let vocab = token_embeddings.dims()[0];
                let rows =
                    Tensor::<1>::random([p], Distribution::Uniform(0.0, vocab as f64), device)
                        .int()
                        .clamp(0, vocab as i64 - 1);
                token_embeddings.select(0, rows)
            }
            PromptInit::Text { text_embeddings } => {
                let n = text_embeddings.dims()[0];
                assert!(n > 0, "the init text has no tokens");
                let rows: Vec<i64> = (0..p).map(|i| (i % n) as i64).collect();
                let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [p]), device);
                text_embeddings.select(0, rows)
            }
            PromptInit::From { prompt } => prompt,
        };
        assert_eq!(table.dims(), [p, d], "initial prompt has the wrong shape");
        Self {
            embedding: Param::from_tensor(table.detach()),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// Loads a trained prompt `[p, d]`.
    pub fn from_table(table: Tensor<2>) -> Self {
        Self {
            embedding: Param::from_tensor(table),
            dropout: DropoutConfig::new(0.0).init(),
        }
    }

    /// The prompt as a batch of one, `[1, p, d]`, broadcast over the batch by the model.
    pub fn forward(&self) -> Tensor<3> {
        self.dropout.forward(self.embedding.val()).unsqueeze_dim(0)
    }

    pub fn num_virtual_tokens(&self) -> usize {
        self.embedding.dims()[0]
    }
}

impl Encoder for PromptEncoder {
    fn conditioning(&self, _shape: ModelShape) -> Conditioning {
        Conditioning {
            prompt: Some(self.forward()),
            prefix: None,
        }
    }

    fn peft_table(&self) -> Tensor<2> {
        self.embedding.val()
    }
}
