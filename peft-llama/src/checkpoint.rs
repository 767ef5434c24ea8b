//! Loading a Llama-family checkpoint from a local directory: `config.json` and either
//! `model.safetensors` or shards listed in `model.safetensors.index.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore,
};

use peft_decoder::checkpoint::check_complete;

use crate::config::{ConfigError, LlamaConfig};
use crate::model::Llama;

const CONFIG_FILE: &str = "config.json";
const SAFETENSORS_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {message}")]
    Files { path: PathBuf, message: String },
    #[error("checkpoint {path} does not fit the model config: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

/// The weight files of a model directory: one file, or the shards its index names.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let single = dir.join(SAFETENSORS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(INDEX_FILE);
    let files_error = |path: &Path, message: String| LoadError::Files {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(&index).map_err(|_| {
        files_error(
            dir,
            format!("no {SAFETENSORS_FILE} or {INDEX_FILE}: not a safetensors checkpoint"),
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| files_error(&index, err.to_string()))?;
    let shards: BTreeSet<&str> = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| files_error(&index, "no `weight_map` object".into()))?
        .values()
        .filter_map(serde_json::Value::as_str)
        .collect();
    shards
        .into_iter()
        .map(|name| {
            // A shard is a file beside the index, never a path elsewhere.
            let path = dir.join(name);
            if name.contains('/') || name.contains('\\') || !path.is_file() {
                return Err(files_error(
                    &index,
                    format!("shard `{name}` is not a file in {}", dir.display()),
                ));
            }
            Ok(path)
        })
        .collect()
}

/// Loads the model in `dir` onto `device`.
pub fn load_pretrained(dir: &Path, device: &Device) -> Result<(Llama, LlamaConfig), LoadError> {
    let config = LlamaConfig::from_file(&dir.join(CONFIG_FILE))?;
    let model = load_weights(&config, dir, device)?;
    Ok((model, config))
}

/// A model of `config` with the weights of the checkpoint in `dir` (one file or shards).
pub fn load_weights(config: &LlamaConfig, dir: &Path, device: &Device) -> Result<Llama, LoadError> {
    let files = weight_files(dir)?;
    let mut model = Llama::new(config, device);
    let mut snapshots = Vec::new();
    for path in &files {
        let mut store = SafetensorsStore::from_file(path);
        let tensors = store
            .get_all_tensors()
            .map_err(|err| LoadError::Checkpoint {
                path: path.clone(),
                message: err.to_string(),
            })?;
        snapshots.extend(tensors.values().cloned());
    }
    // Hugging Face stores `nn.Linear` weights `[out, in]`; the adapter transposes them to
    // Burn's `[in, out]` and reads RMSNorm's `weight` as Burn's `gamma`.
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    // Older checkpoints carry the rotary frequencies as a buffer; they are recomputed here.
    let family = format!("{:?}", config.family);
    check_complete(
        &result,
        |name| name.ends_with("rotary_emb.inv_freq"),
        &family,
    )
    .map_err(|message| LoadError::Checkpoint {
        path: dir.to_path_buf(),
        message,
    })?;
    Ok(model)
}

/// Writes `model` (a fully fine-tuned one) as a Hugging Face checkpoint in `dir`: the
/// `config.json` of the model it was loaded from, and `model.safetensors` with Hugging Face's
/// names and layouts, loadable by `from_pretrained` and by [`load_pretrained`].
pub fn save_pretrained(model: &Llama, source_config: &Path, dir: &Path) -> Result<(), LoadError> {
    let files_error = |path: &Path, message: String| LoadError::Files {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|err| files_error(dir, err.to_string()))?;
    let config = dir.join(CONFIG_FILE);
    std::fs::copy(source_config, &config).map_err(|err| files_error(&config, err.to_string()))?;
    let weights = dir.join(SAFETENSORS_FILE);
    let mut store = SafetensorsStore::from_file(&weights)
        .overwrite(true)
        // Parameters only, transposed back to `nn.Linear`'s `[out, in]`, RMSNorm's `gamma`
        // named `weight`.
        .with_regex(r"(weight|bias|gamma)$")
        .with_to_adapter(BurnToPyTorchAdapter);
    model
        .save_into(&mut store)
        .map_err(|err| files_error(&weights, err.to_string()))
}
