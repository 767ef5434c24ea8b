//! The adapters served over one frozen base model, by name. An adapter costs only its own
//! parameters and its conditioning (the prompt embeddings or the per-layer prefix keys and
//! values), computed once when it is loaded and shared by every request that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use peft_core::{Adapter, AdapterShapes, Conditioning, PeftAdapter};
use serde::Serialize;

/// What `/v1/models` reports about an adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub path: PathBuf,
    pub peft_type: String,
    pub num_virtual_tokens: usize,
    pub parameters: usize,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no adapter named `{0}` is loaded; GET /v1/models lists what is")]
    NotFound(String),
    #[error("an adapter named `{0}` is already loaded; unload it first or pick another name")]
    AlreadyLoaded(String),
    #[error(
        "`{0}` is not a usable adapter name: use letters, digits, `-`, `_` and `.`, and not the \
         base model's name"
    )]
    BadName(String),
    #[error("cannot load adapter `{name}` from {path}: {message}")]
    Load {
        name: String,
        path: PathBuf,
        message: String,
    },
}

struct Served {
    info: AdapterInfo,
    conditioning: Conditioning,
}

pub struct Registry {
    base_name: String,
    shapes: AdapterShapes,
    device: Device,
    adapters: BTreeMap<String, Served>,
}

impl Registry {
    /// An empty registry for a base model whose adapters agree with `shapes` on `device`, which requests call
    /// `base_name`.
    pub fn new(
        base_name: impl Into<String>,
        shapes: impl Into<AdapterShapes>,
        device: Device,
    ) -> Self {
        let shapes = shapes.into();
        Self {
            base_name: base_name.into(),
            shapes,
            device,
            adapters: BTreeMap::new(),
        }
    }

    pub fn base_name(&self) -> &str {
        &self.base_name
    }

    /// Loads a PEFT-format adapter directory under `name`. An adapter made for a model of
    /// another shape is refused with both shapes in the message.
    pub fn load(&mut self, name: &str, dir: &Path) -> Result<AdapterInfo, RegistryError> {
        let usable = !name.is_empty()
            && name != self.base_name
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !usable {
            return Err(RegistryError::BadName(name.to_string()));
        }
        if self.adapters.contains_key(name) {
            return Err(RegistryError::AlreadyLoaded(name.to_string()));
        }
        let adapter = PeftAdapter::load(dir, self.shapes, &self.device).map_err(|err| {
            RegistryError::Load {
                name: name.to_string(),
                path: dir.to_path_buf(),
                message: err.to_string(),
            }
        })?;
        let info = AdapterInfo {
            name: name.to_string(),
            path: dir.to_path_buf(),
            peft_type: adapter.config.peft_type().to_string(),
            num_virtual_tokens: adapter.num_virtual_tokens(),
            parameters: adapter.num_trainable_params(),
        };
        // Inference never changes the adapter: its conditioning is computed here once.
        let conditioning = adapter.conditioning();
        self.adapters.insert(
            name.to_string(),
            Served {
                info: info.clone(),
                conditioning,
            },
        );
        Ok(info)
    }

    pub fn unload(&mut self, name: &str) -> Result<AdapterInfo, RegistryError> {
        self.adapters
            .remove(name)
            .map(|served| served.info)
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))
    }

    /// The conditioning a request naming `model` runs under: none for the base model.
    pub fn conditioning(&self, model: &str) -> Result<Conditioning, RegistryError> {
        if model == self.base_name {
            return Ok(Conditioning::none());
        }
        self.adapters
            .get(model)
            .map(|served| served.conditioning.clone())
            .ok_or_else(|| RegistryError::NotFound(model.to_string()))
    }

    pub fn infos(&self) -> Vec<AdapterInfo> {
        self.adapters.values().map(|s| s.info.clone()).collect()
    }
}
