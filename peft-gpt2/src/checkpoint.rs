//! Finding and loading Hugging Face GPT-2 checkpoints.
//!
//! A model is named by a local directory (`config.json` plus `model.safetensors` or
//! `pytorch_model.bin`) or by a hub id such as `gpt2` or `openai-community/gpt2-medium`, which
//! resolves through the Hugging Face cache — offline once cached — and is downloaded only when
//! it is not cached and the network is allowed.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{
    ApplyResult, IdentityAdapter, KeyRemapper, ModuleSnapshot, ModuleStore, PytorchStore,
    SafetensorsStore,
};

use crate::config::Gpt2Config;
use crate::error::{Error, Result};
use crate::model::Gpt2;

const CONFIG_FILE: &str = "config.json";
const SAFETENSORS_FILE: &str = "model.safetensors";
const PYTORCH_FILE: &str = "pytorch_model.bin";
/// A sharded checkpoint's list of shards (Llama-family models; GPT-2 loads single files).
const INDEX_FILE: &str = "model.safetensors.index.json";
const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "vocab.json", "merges.txt"];

/// Tensors a GPT-2 checkpoint may hold that are not parameters of [`Gpt2`]: the causal-mask
/// buffers older `transformers` versions saved, and the LM head, which GPT-2 ties to `wte`.
const IGNORED_TENSORS: [&str; 3] = [
    r"\.attn\.bias$",
    r"\.attn\.masked_bias$",
    r"^lm_head\.weight$",
];

/// The files of a model on local disk.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// Directory holding the files (a hub snapshot directory for hub models).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl ModelFiles {
    /// The files in a local directory, or an error naming what is missing.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let config = dir.join(CONFIG_FILE);
        if !config.is_file() {
            return Err(Error::ModelNotFound(format!(
                "{} (no {CONFIG_FILE})",
                dir.display()
            )));
        }
        let weights = [SAFETENSORS_FILE, PYTORCH_FILE]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| {
                Error::ModelNotFound(format!(
                    "{} (no {SAFETENSORS_FILE} or {PYTORCH_FILE}; sharded checkpoints are not \
                     supported)",
                    dir.display()
                ))
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
        })
    }

    /// Resolves a local directory or a Hugging Face hub id to files on disk.
    ///
    /// Hub files are looked up in the local cache (`HF_HUB_CACHE`, or `HF_HOME/hub`, default
    /// `~/.cache/huggingface/hub`) first; only a cache miss downloads, and with `HF_HUB_OFFLINE=1` a miss is an error.
    pub fn resolve(model: &str) -> Result<Self> {
        let as_path = Path::new(model);
        if as_path.is_dir() {
            return Self::in_dir(as_path);
        }
        if as_path.is_absolute() || model.starts_with('.') || model.split('/').count() > 2 {
            return Err(Error::ModelNotFound(model.to_string()));
        }
        resolve_hub(model).map_err(|err| no_such_directory_either(model, err))
    }

    /// The tokenizer files that sit beside the weights, if any.
    pub fn has_tokenizer(&self) -> bool {
        has_tokenizer_files(&self.dir)
    }
}

/// Whether `dir` holds tokenizer files (`tokenizer.json`, or GPT-2's `vocab.json` and
/// `merges.txt`).
pub fn has_tokenizer_files(dir: &Path) -> bool {
    TOKENIZER_FILES.iter().any(|name| dir.join(name).is_file())
}

/// `models/tiny` is both a relative path and a hub id: when neither works, the hub's error
/// says both, so that a mistyped local path does not read as a network problem.
fn no_such_directory_either(model: &str, err: Error) -> Error {
    match err {
        Error::Hub { repo, message } => {
            let here = std::env::current_dir()
                .map_or_else(|_| ".".into(), |dir| dir.display().to_string());
            Error::Hub {
                repo,
                message: format!(
                    "{message}. (There is no directory `{model}` in {here} either: if you \
                     meant a local model, check the path.)"
                ),
            }
        }
        other => other,
    }
}

/// The local directory of a model of any family named by a directory or a hub id: the
/// directory itself, the Hugging Face cache's snapshot (whatever its weight files: one file or
/// shards), or — where the network is allowed — one filled from the hub, shards listed in
/// `model.safetensors.index.json` included.
pub fn resolve_dir(model: &str) -> Result<PathBuf> {
    resolve_any_dir(model).map_err(|err| no_such_directory_either(model, err))
}

fn resolve_any_dir(model: &str) -> Result<PathBuf> {
    let as_path = Path::new(model);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    if as_path.is_absolute() || model.starts_with('.') || model.split('/').count() > 2 {
        return Err(Error::ModelNotFound(model.to_string()));
    }
    let has_weights = |dir: &Path| {
        [SAFETENSORS_FILE, INDEX_FILE, PYTORCH_FILE]
            .iter()
            .any(|name| dir.join(name).is_file())
    };
    let cached = hub_cache().model(model.to_string()).get(CONFIG_FILE);
    if let Some(dir) = cached.and_then(|config| config.parent().map(Path::to_path_buf))
        && has_weights(&dir)
    {
        return Ok(dir);
    }
    if hub_offline() {
        return Err(Error::Hub {
            repo: model.to_string(),
            message: "not in the local cache and HF_HUB_OFFLINE is set; download it once while \
                      online, or pass a local directory"
                .into(),
        });
    }
    let config = download(model, &[CONFIG_FILE])?;
    let dir = config
        .parent()
        .expect("a downloaded file has a directory")
        .to_path_buf();
    if download(model, &[SAFETENSORS_FILE]).is_err() {
        let index = download(model, &[INDEX_FILE])?;
        let text = std::fs::read_to_string(&index).map_err(|error| Error::Io {
            path: index.clone(),
            error,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| Error::Checkpoint {
                path: index.clone(),
                message: err.to_string(),
            })?;
        let shards: std::collections::BTreeSet<&str> = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flat_map(|map| map.values().filter_map(serde_json::Value::as_str))
            .collect();
        for shard in shards {
            download(model, &[shard])?;
        }
    }
    let _ = download(model, &["tokenizer.json"]);
    Ok(dir)
}

/// The Hugging Face cache, located as Python's `huggingface_hub` does: `HF_HUB_CACHE`, else
/// `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
fn hub_cache() -> hf_hub::Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => hf_hub::Cache::new(PathBuf::from(dir)),
        None => hf_hub::Cache::from_env(),
    }
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn resolve_hub(repo: &str) -> Result<ModelFiles> {
    let cached = hub_cache().model(repo.to_string());
    let cached_dir = cached.get(CONFIG_FILE).and_then(|config| {
        let dir = config.parent()?.to_path_buf();
        ModelFiles::in_dir(&dir).ok()
    });
    if let Some(files) = cached_dir {
        // Tokenizer files are optional; fetch them only if we may go online.
        if !files.has_tokenizer() && !hub_offline() {
            let _ = download(repo, &["tokenizer.json"]);
        }
        return Ok(files);
    }
    if hub_offline() {
        return Err(Error::Hub {
            repo: repo.to_string(),
            message: "not in the local cache and HF_HUB_OFFLINE is set; download it once while \
                      online, or pass a local directory with config.json and model.safetensors"
                .into(),
        });
    }
    let config = download(repo, &[CONFIG_FILE])?;
    download(repo, &[SAFETENSORS_FILE, PYTORCH_FILE])?;
    let _ = download(repo, &["tokenizer.json"]).or_else(|_| download(repo, &["vocab.json"]));
    let _ = download(repo, &["merges.txt"]);
    let dir = config.parent().expect("a downloaded file has a directory");
    ModelFiles::in_dir(dir)
}

/// Downloads the first of `candidates` the repo has.
fn download(repo: &str, candidates: &[&str]) -> Result<PathBuf> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(hub_cache());
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder
        .with_progress(false)
        .build()
        .map_err(|err| Error::Hub {
            repo: repo.to_string(),
            message: err.to_string(),
        })?;
    let remote = api.model(repo.to_string());
    let mut last_error = String::new();
    for name in candidates {
        match remote.get(name) {
            Ok(path) => return Ok(path),
            Err(err) => last_error = format!("{name}: {err}"),
        }
    }
    Err(Error::Hub {
        repo: repo.to_string(),
        message: format!(
            "{last_error} (no network? pass a local directory, or run once online to fill the cache)"
        ),
    })
}

/// Maps Hugging Face tensor names onto [`Gpt2`]'s parameter paths.
///
/// GPT-2's `Conv1D` stores weights `[in, out]`, which is already Burn's `Linear` layout, so no
/// tensor is transposed: only the optional `transformer.` prefix goes, and LayerNorm's
/// `weight`/`bias` become `gamma`/`beta`.
fn hf_key_remapper() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(r"^transformer\.", "")
        .and_then(|r| r.add_pattern(r"(ln_[12f])\.weight$", "$1.gamma"))
        .and_then(|r| r.add_pattern(r"(ln_[12f])\.bias$", "$1.beta"))
        .expect("the remapping patterns are valid regexes")
}

/// Loads a checkpoint file into `model`, replacing every parameter.
///
/// Each parameter is read straight from the file (memory-mapped for safetensors) into the
/// model's lazily initialised slot, so the weights exist once in memory. Missing, unexpected
/// or mis-shaped tensors are an error that lists them.
pub fn load_weights(model: Gpt2, path: &Path) -> Result<Gpt2> {
    let is_pytorch = path
        .extension()
        .is_some_and(|ext| ext == "bin" || ext == "pt");
    let loaded = if is_pytorch {
        apply_store(
            model,
            PytorchStore::from_file(path).remap(hf_key_remapper()),
        )
    } else {
        apply_store(
            model,
            SafetensorsStore::from_file(path).remap(hf_key_remapper()),
        )
    };
    let checkpoint_error = |message| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let (model, result) = loaded.map_err(checkpoint_error)?;
    check_complete(&result).map_err(checkpoint_error)?;
    Ok(model)
}

/// Applies every tensor of `store` to `model` as it is stored.
///
/// The stores' own `load_from` would run `PytorchStore`'s PyTorch-to-Burn adapter, which
/// transposes `nn.Linear` weights; GPT-2's `Conv1D` weights are already `[in, out]`, so the
/// tensors are applied here with the identity adapter for both formats.
fn apply_store<S: ModuleStore>(
    mut model: Gpt2,
    mut store: S,
) -> std::result::Result<(Gpt2, ApplyResult), String> {
    let tensors = store
        .get_all_tensors()
        .map_err(|err| err.to_string())?
        .values()
        .cloned()
        .collect();
    drop(store);
    let result = model.apply(tensors, None, Some(Box::new(IdentityAdapter)), false);
    Ok((model, result))
}

/// Turns a partial load into an error naming every tensor that did not fit.
fn check_complete(result: &ApplyResult) -> std::result::Result<(), String> {
    let ignored: Vec<regex::Regex> = IGNORED_TENSORS
        .iter()
        .map(|pattern| regex::Regex::new(pattern).expect("valid regex"))
        .collect();
    peft_decoder::checkpoint::check_complete(
        result,
        |name| ignored.iter().any(|re| re.is_match(name)),
        "GPT-2",
    )
}

/// Loads a model named by a local directory or hub id onto `device`.
pub fn load_pretrained(model: &str, device: &Device) -> Result<(Gpt2, Gpt2Config, ModelFiles)> {
    let files = ModelFiles::resolve(model)?;
    let config = Gpt2Config::from_file(&files.config)?;
    let gpt2 = load_weights(Gpt2::new(&config, device), &files.weights)?;
    Ok((gpt2, config, files))
}

/// Writes `model` as a Hugging Face GPT-2 checkpoint: `config.json` and `model.safetensors`
/// with the hub's tensor names (no `transformer.` prefix), loadable by
/// `GPT2LMHeadModel.from_pretrained` and by [`load_pretrained`].
pub fn save_pretrained(model: &Gpt2, config: &Gpt2Config, dir: &Path) -> Result<()> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| Error::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut json = serde_json::to_value(config).expect("configs serialise");
    json["model_type"] = "gpt2".into();
    json["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    json["n_ctx"] = config.n_positions.into();
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .map_err(io_error(&config_path))?;

    let weights_path = dir.join(SAFETENSORS_FILE);
    let mut store = SafetensorsStore::from_file(&weights_path)
        .overwrite(true)
        // Parameters only (not dropout flags), named as Hugging Face names them.
        .with_regex(r"(weight|bias|gamma|beta)$")
        .with_key_remapping(r"(ln_[12f])\.gamma$", "$1.weight")
        .with_key_remapping(r"(ln_[12f])\.beta$", "$1.bias");
    model
        .save_into(&mut store)
        .map_err(|err| Error::Checkpoint {
            path: weights_path.clone(),
            message: err.to_string(),
        })
}
