//! Loading what every subcommand needs: the device, the base model of any family, its
//! tokenizer and optionally an adapter.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use peft_core::{AdapterShapes, PeftAdapter};
use peft_decoder::precision::cast_floats;
use peft_gpt2::{Gpt2Tokenizer, has_tokenizer_files, resolve_dir};

use crate::args::{DeviceArg, Precision};
use crate::backend::ComputeBackend;
use crate::family::{Model, ModelConfig, load_model_dir};

/// A base model ready to run, with its tokenizer when it has one.
pub struct LoadedModel {
    pub model: Model,
    pub config: ModelConfig,
    /// `None` for a model directory without tokenizer files: enough for data given as
    /// `input_ids`, which needs none.
    pub tokenizer: Option<Gpt2Tokenizer>,
    /// The directory the model was read from (a hub snapshot for a hub id).
    pub dir: PathBuf,
    pub device: Device,
    /// The backend of `device`.
    pub backend: ComputeBackend,
    /// The float type the model runs in (`--dtype`): its weights' type too, unless loaded by
    /// [`Self::load_weights_in`] in another.
    pub precision: Precision,
    /// The `--model` argument, for messages.
    pub name: String,
}

impl LoadedModel {
    /// Loads `model` (a directory or hub id; `config.json` picks the family) onto the device
    /// `device` names, its weights in the float type it names.
    pub fn load(model: &str, device: &DeviceArg, autodiff: bool) -> Result<Self> {
        Self::load_weights_in(model, device, device.dtype, autodiff)
    }

    /// [`Self::load`] with the weights in `weights` whatever `--dtype` says: f32 master weights
    /// for full fine-tuning in mixed precision, whose forward passes alone run in `--dtype`.
    pub fn load_weights_in(
        model: &str,
        device: &DeviceArg,
        weights: Precision,
        autodiff: bool,
    ) -> Result<Self> {
        let weights_dtype = weights.dtype();
        let precision = device.dtype;
        let backend = device.backend();
        let device = device.open(autodiff)?;
        let loading = || format!("loading model `{model}`");
        // A directory, or a hub id: the Hugging Face cache first, a download only where allowed.
        let dir = resolve_dir(model).with_context(loading)?;
        let (weights, config) = load_model_dir(&dir, &device).with_context(loading)?;
        let weights = cast_floats(weights, weights_dtype);
        let tokenizer = has_tokenizer_files(&dir)
            .then(|| {
                Gpt2Tokenizer::from_dir_for(&dir, config.eos_token_id())
                    .and_then(|t| t.for_model(config.vocab_size(), &dir))
                    .with_context(|| format!("loading the tokenizer of model `{model}`"))
            })
            .transpose()?;
        Ok(Self {
            model: weights,
            config,
            tokenizer,
            dir,
            device,
            backend,
            precision,
            name: model.to_string(),
        })
    }

    /// The tokenizer, or an error that says where to put one.
    pub fn tokenizer(&self) -> Result<&Gpt2Tokenizer> {
        self.tokenizer.as_ref().with_context(|| {
            format!(
                "model `{}` has no tokenizer beside its weights; put tokenizer.json (or \
                 vocab.json and merges.txt) in {}, or give the data as `input_ids`",
                self.name,
                self.dir.display()
            )
        })
    }

    /// The id that pads batches: the tokenizer's end-of-text token, or the config's
    /// `eos_token_id` without a tokenizer (padding is masked: any id in the vocabulary
    /// serves).
    pub fn pad_id(&self) -> u32 {
        match (&self.tokenizer, self.config.eos_token_id()) {
            (Some(tokenizer), _) => tokenizer.eos_id(),
            (None, Some(eos)) if (eos as usize) < self.config.vocab_size() => eos,
            (None, _) => 0,
        }
    }

    /// The tokenizer and the size every token id must stay under, for reading datasets.
    pub fn vocabulary(&self) -> Vocabulary<'_> {
        Vocabulary {
            tokenizer: self.tokenizer.as_ref(),
            size: self.config.vocab_size(),
        }
    }

    /// The shapes adapters of this model agree with.
    pub fn shapes(&self) -> AdapterShapes {
        self.config.adapter_shapes()
    }

    /// Loads the adapter directory if one is named (`--adapter`), else nothing.
    pub fn load_optional_adapter(&self, dir: Option<&Path>) -> Result<Option<PeftAdapter>> {
        dir.map(|dir| self.load_adapter(dir)).transpose()
    }

    /// Loads a PEFT-format adapter directory made for this model.
    pub fn load_adapter(&self, dir: &Path) -> Result<PeftAdapter> {
        PeftAdapter::load(dir, self.shapes(), &self.device)
            .with_context(|| format!("loading adapter {}", dir.display()))
    }
}

/// What turns a dataset's text into the model's token ids.
#[derive(Clone, Copy, Debug)]
pub struct Vocabulary<'a> {
    /// `None` for a model without a tokenizer: only `input_ids` data can be read then.
    pub tokenizer: Option<&'a Gpt2Tokenizer>,
    /// Rows of the model's token-embedding table: every id must be below this.
    pub size: usize,
}

impl<'a> Vocabulary<'a> {
    /// The tokenizer, or an error for the data line `at` that says how to do without one.
    pub fn tokenizer(&self, at: &str) -> Result<&'a Gpt2Tokenizer> {
        self.tokenizer.with_context(|| {
            format!(
                "{at}: text needs a tokenizer, and the model has none; put tokenizer.json (or \
                 vocab.json and merges.txt) in the model directory, or give the example as \
                 `input_ids`"
            )
        })
    }
}
