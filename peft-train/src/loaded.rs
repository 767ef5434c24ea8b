//! Loading what every subcommand needs: the device, the base model, its tokenizer and
//! optionally an adapter.

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use peft_core::{Backend, ModelShape, PeftAdapter};
use peft_gpt2::{Gpt2, Gpt2Config, Gpt2Tokenizer, ModelFiles, load_pretrained};

/// A base model ready to run, with its tokenizer.
pub struct LoadedModel {
    pub model: Gpt2,
    pub config: Gpt2Config,
    pub tokenizer: Gpt2Tokenizer,
    pub files: ModelFiles,
    pub device: Device,
}

impl LoadedModel {
    /// Loads `model` (a directory or hub id) onto `backend` (the best compiled one if `None`).
    pub fn load(model: &str, backend: Option<Backend>, autodiff: bool) -> Result<Self> {
        let backend = backend.unwrap_or_else(Backend::best_available);
        let mut device = backend.device()?;
        if autodiff {
            device = device.autodiff();
        }
        let (gpt2, config, files) =
            load_pretrained(model, &device).with_context(|| format!("loading model `{model}`"))?;
        let tokenizer = Gpt2Tokenizer::from_dir(&files.dir).with_context(|| {
            format!(
                "model `{model}` has no tokenizer beside its weights; put tokenizer.json (or \
                 vocab.json and merges.txt) in {}",
                files.dir.display()
            )
        })?;
        Ok(Self {
            model: gpt2,
            config,
            tokenizer,
            files,
            device,
        })
    }

    pub fn shape(&self) -> ModelShape {
        self.config.shape()
    }

    /// Loads the adapter directory if one is named (`--adapter`), else nothing.
    pub fn load_optional_adapter(&self, dir: Option<&Path>) -> Result<Option<PeftAdapter>> {
        dir.map(|dir| self.load_adapter(dir)).transpose()
    }

    /// Loads a PEFT-format adapter directory made for this model.
    pub fn load_adapter(&self, dir: &Path) -> Result<PeftAdapter> {
        PeftAdapter::load(dir, self.shape(), &self.device)
            .with_context(|| format!("loading adapter {}", dir.display()))
    }
}
