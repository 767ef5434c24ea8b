//! The [`Adapter`] trait that models and trainers see, and [`PeftAdapter`]: any registered kind
//! (see [`crate::registry`]) with its config, saved and loaded in PEFT's format.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::DType;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::conditioning::Conditioning;
use crate::config::{AdapterShapes, ModelShape, PromptLearningConfig};
use crate::prefix_tuning::{PrefixEncoder, PrefixReparameterisation, PrefixTuningConfig};
use crate::prompt_tuning::{PromptEncoder, PromptInit, PromptTuningConfig};
use crate::registry::{AdapterModule, PeftConfig};

/// PEFT's file names inside an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Our own file beside them, for a reparameterised prefix (PEFT's MLP or peft-rs's per-layer
/// projection): its embedding and projection as trained, so that training can resume (PEFT
/// saves only the projected table). Python's `peft` ignores it.
pub const NATIVE_FILE: &str = "peft_rs_adapter.safetensors";
/// The one tensor PEFT saves for prompt learning methods.
pub const PEFT_TENSOR: &str = "prompt_embeddings";

/// What any adapter gives a frozen model: the one interface that models, the trainer and the
/// server use.
///
/// A model integration only consumes [`Conditioning`], so a new kind of adapter (P-tuning, say)
/// needs no change to any model.
pub trait Adapter {
    /// The PEFT config this adapter saves as `adapter_config.json`.
    fn peft_config(&self) -> &PeftConfig;
    /// Virtual-token embeddings and/or prefix keys/values for one forward pass, computed once
    /// and shared by every row of the batch.
    fn conditioning(&self) -> Conditioning;
    fn num_virtual_tokens(&self) -> usize;
    fn num_trainable_params(&self) -> usize;
}

impl Conditioning {
    /// What an optional adapter contributes: its conditioning, or none.
    pub fn of<A: Adapter>(adapter: Option<&A>) -> Self {
        adapter.map_or_else(Self::none, Adapter::conditioning)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    // The I/O error is part of the message, not a separate cause, so that a chain of
    // contexts prints it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "the adapter in {path} was made for a model with {adapter}, but this model has {model}; \
         use the base model it was trained on"
    )]
    ShapeMismatch {
        path: PathBuf,
        adapter: ModelShape,
        model: ModelShape,
    },
}

pub type AdapterResult<T> = Result<T, AdapterError>;

/// An adapter with its PEFT config: what is trained, saved, loaded and applied.
#[derive(Module, Debug)]
pub struct PeftAdapter {
    pub module: AdapterModule,
    #[module(skip)]
    pub config: PeftConfig,
}

impl Adapter for PeftAdapter {
    fn peft_config(&self) -> &PeftConfig {
        &self.config
    }

    fn conditioning(&self) -> Conditioning {
        self.module
            .encoder()
            .conditioning(self.config.base().shape())
    }

    fn num_virtual_tokens(&self) -> usize {
        self.config.base().num_virtual_tokens
    }

    fn num_trainable_params(&self) -> usize {
        self.num_params()
    }
}

impl PeftAdapter {
    /// A new prompt-tuning adapter whose table starts as `init` says; `config` records that
    /// init the way PEFT does.
    pub fn prompt_tuning(
        config: PromptTuningConfig,
        init: PromptInit,
        dropout: f64,
        device: &Device,
    ) -> Self {
        let base = config.base.shape();
        Self {
            module: AdapterModule::Prompt(PromptEncoder::new(
                config.base.num_virtual_tokens,
                base.d_model,
                init,
                dropout,
                device,
            )),
            config: PeftConfig::PromptTuning(config),
        }
    }

    /// A new prefix-tuning adapter whose table trains as `reparameterisation` says: directly,
    /// through PEFT's projection MLP, or through peft-rs's per-layer projection; config and
    /// encoder always agree. Sizes are not checked here: one that
    /// [`PrefixTuningConfig::check`](crate::KindConfig::check) refuses (a zero width, a
    /// per-layer embedding wider than the model) would save an adapter that does not load, so
    /// code that takes them from users checks the config first, as `peft-train` does.
    pub fn prefix_tuning(
        base: PromptLearningConfig,
        reparameterisation: PrefixReparameterisation,
        device: &Device,
    ) -> Self {
        let config = PrefixTuningConfig::new(base, reparameterisation);
        Self {
            module: AdapterModule::Prefix(PrefixEncoder::for_config(&config, device)),
            config: PeftConfig::PrefixTuning(config),
        }
    }

    /// The table PEFT saves as `prompt_embeddings`: the prompt, or the (projected) prefix.
    pub fn peft_table(&self) -> Tensor<2> {
        self.module.encoder().peft_table()
    }

    /// Writes the adapter as PEFT does (`adapter_config.json`, `adapter_model.safetensors`)
    /// plus the native checkpoint. Each file is written to a temporary name and renamed, so an
    /// interrupted save never leaves a half-written adapter behind.
    pub fn save(&self, dir: &Path) -> AdapterResult<()> {
        std::fs::create_dir_all(dir).map_err(|source| AdapterError::Io {
            path: dir.to_path_buf(),
            error: source,
        })?;
        // PEFT marks saved adapters inference-only; for a projected prefix that is what makes
        // it read the saved table as already projected.
        let mut config = self.config.clone();
        config.base_mut().inference_mode = true;
        let json = serde_json::to_string_pretty(&config).expect("configs serialise");
        write_atomically(&dir.join(CONFIG_FILE), json.as_bytes())?;

        let table = self.peft_table();
        let shape = table.dims().to_vec();
        let values: Vec<f32> = table
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|err| format_error(dir, format!("cannot read the adapter table: {err:?}")))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(safetensors::Dtype::F32, shape, &bytes)
            .expect("shape matches the data");
        let encoded = safetensors::serialize([(PEFT_TENSOR, view)], None)
            .map_err(|err| format_error(dir, err.to_string()))?;
        write_atomically(&dir.join(WEIGHTS_FILE), &encoded)?;

        let native_path = dir.join(NATIVE_FILE);
        if !self.has_reparameterisation() {
            // The PEFT table is the whole adapter; drop a stale native file from an earlier save.
            return match std::fs::remove_file(&native_path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(AdapterError::Io {
                    path: native_path,
                    error: err,
                }),
                _ => Ok(()),
            };
        }
        let mut store = SafetensorsStore::from_bytes(None);
        self.save_into(&mut store)
            .map_err(|err| format_error(dir, err.to_string()))?;
        let native = store
            .get_bytes()
            .map_err(|err| format_error(dir, err.to_string()))?;
        write_atomically(&native_path, &native)
    }

    /// Whether the trainable parameters are more than the table PEFT saves.
    pub fn has_reparameterisation(&self) -> bool {
        self.module.encoder().has_reparameterisation()
    }

    /// Loads an adapter directory written here or by PEFT's `save_pretrained`, for a model of
    /// `shapes` (a [`ModelShape`] where prompt and prefix agree with the same one).
    ///
    /// A reparameterised prefix with its native checkpoint comes back trainable, projection
    /// included; otherwise the PEFT table is loaded, which for a reparameterised prefix is the
    /// projected result, ready for inference.
    pub fn load(
        dir: &Path,
        shapes: impl Into<AdapterShapes>,
        device: &Device,
    ) -> AdapterResult<Self> {
        let shapes = shapes.into();
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|source| AdapterError::Io {
            path: config_path.clone(),
            error: source,
        })?;
        let config: PeftConfig = serde_json::from_str(&text).map_err(|err| {
            format_error(
                &config_path,
                format!("not a PEFT prompt/prefix tuning config: {err}"),
            )
        })?;
        check_config(&config, &shapes, &config_path)?;

        // The PEFT table first: it is always there, and its shape bounds every size the
        // config claims before anything of that size is allocated.
        let weights_path = dir.join(WEIGHTS_FILE);
        let (table, saved_dtype) = read_peft_table(&weights_path, device)?;
        let base = config.base();
        let expected = config.kind().table_width().map(|width| {
            [
                base.num_virtual_tokens * base.num_transformer_submodules,
                width,
            ]
        });
        if expected.is_none_or(|expected| table.dims() != expected) {
            return Err(format_error(
                &weights_path,
                format!(
                    "`{PEFT_TENSOR}` has shape {:?}, but {CONFIG_FILE} implies {}",
                    table.dims(),
                    expected
                        .map_or_else(|| "a size too large to count".into(), |e| format!("{e:?}"))
                ),
            ));
        }
        if !table.clone().is_finite().all().into_scalar::<bool>() {
            return Err(format_error(
                &weights_path,
                format!(
                    "`{PEFT_TENSOR}` holds NaN or infinite values: the adapter is damaged or \
                     comes from a diverged run"
                ),
            ));
        }

        let native_path = dir.join(NATIVE_FILE);
        if config.kind().uses_native_file() && native_path.is_file() {
            let (adapter, native_dtype) = Self::load_native(&config, &native_path, device)?;
            // Python's `peft` re-saves only the PEFT table: a native file that no longer
            // projects to it is stale, and the PEFT table is what the adapter now is.
            let difference = max_difference(adapter.peft_table(), table.clone());
            if difference <= table_tolerance(&[saved_dtype, native_dtype], &table) {
                return Ok(adapter);
            }
            tracing::warn!(
                "{}: its projection gives a table up to {difference:.3e} away from {}'s \
                 `{PEFT_TENSOR}`, which was saved after it (by Python's peft, say); loading \
                 the PEFT table (ready for inference, but without the projection that \
                 resuming training needs)",
                native_path.display(),
                weights_path.display()
            );
        }
        let module = config.module_of_peft_table(table);
        Ok(Self { module, config })
    }

    /// A reparameterised adapter (a prefix with its MLP or per-layer projection) from the
    /// native file, and the float type the file holds it in (f32 unless every tensor was
    /// saved in a half type); sizes are checked against the file before anything is allocated.
    fn load_native(
        config: &PeftConfig,
        path: &Path,
        device: &Device,
    ) -> AdapterResult<(Self, DType)> {
        let bytes = read_file(path)?;
        let file =
            SafeTensors::deserialize(&bytes).map_err(|err| format_error(path, err.to_string()))?;
        let stored: usize = file
            .tensors()
            .iter()
            .map(|(_, view)| view.shape().iter().product::<usize>())
            .sum();
        let needed = config.kind().native_values();
        if needed != Some(stored) {
            return Err(format_error(
                path,
                format!(
                    "holds {stored} values, but the {} adapter of {CONFIG_FILE} needs {}: it \
                     belongs to another adapter; delete it to load the PEFT table",
                    config.peft_type(),
                    needed.map_or_else(|| "more than can be counted".into(), |n| n.to_string())
                ),
            ));
        }
        let (converted, saved_dtype) = in_f32(&file, path)?;
        let bytes = converted.unwrap_or(bytes);
        let mut adapter = Self {
            module: config.untrained(device),
            config: config.clone(),
        };
        let mut store = SafetensorsStore::from_bytes(Some(bytes));
        adapter
            .load_from(&mut store)
            .map_err(|err| format_error(path, err.to_string()))?;
        Ok((adapter, saved_dtype))
    }
}

/// The largest absolute difference between two tables of the same shape.
fn max_difference(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// How far a table recomputed in f32 may be from the one saved: rounding of the recomputation,
/// or of the saved types when a file (PEFT's table, the native MLP) held half precision.
fn table_tolerance(saved: &[DType], table: &Tensor<2>) -> f32 {
    let scale = table.clone().abs().max().into_scalar::<f32>().max(1.0);
    let relative = if saved.iter().all(|dtype| *dtype == DType::F32) {
        1e-5
    } else {
        1e-2
    };
    relative * scale
}

/// Checks what `adapter_config.json` says against the model it is loaded into.
fn check_config(config: &PeftConfig, shapes: &AdapterShapes, path: &Path) -> AdapterResult<()> {
    let shape = config.kind().model_shape(shapes);
    let base = config.base();
    if base.num_virtual_tokens == 0 {
        return Err(format_error(
            path,
            "num_virtual_tokens is 0: an adapter needs at least one virtual token".into(),
        ));
    }
    config
        .kind()
        .check()
        .map_err(|message| format_error(path, message))?;
    if base.task_type != crate::config::CAUSAL_LM {
        return Err(format_error(
            path,
            format!(
                "task_type `{}` is not supported; only CAUSAL_LM",
                base.task_type
            ),
        ));
    }
    if base.num_transformer_submodules != 1 {
        return Err(format_error(
            path,
            "num_transformer_submodules must be 1 for a decoder-only model".into(),
        ));
    }
    if base.shape() != shape {
        return Err(AdapterError::ShapeMismatch {
            path: path.to_path_buf(),
            adapter: base.shape(),
            model: shape,
        });
    }
    Ok(())
}

/// Reads `prompt_embeddings` from a PEFT `adapter_model.safetensors` as f32, with the type it
/// was saved in.
fn read_peft_table(path: &Path, device: &Device) -> AdapterResult<(Tensor<2>, DType)> {
    let bytes = read_file(path)?;
    let file =
        SafeTensors::deserialize(&bytes).map_err(|err| format_error(path, err.to_string()))?;
    let view = file.tensor(PEFT_TENSOR).map_err(|_| {
        format_error(
            path,
            format!("no `{PEFT_TENSOR}` tensor; is this a prompt or prefix tuning adapter?"),
        )
    })?;
    let dtype = float_dtype(PEFT_TENSOR, &view, path)?;
    let shape = view.shape().to_vec();
    if shape.len() != 2 {
        return Err(format_error(
            path,
            format!("`{PEFT_TENSOR}` has shape {shape:?}; expected two dimensions"),
        ));
    }
    Ok((Tensor::from_data(f32_data(&view, dtype), device), dtype))
}

/// The Burn type of a stored float tensor; other types are an error naming the tensor.
fn float_dtype(name: &str, view: &TensorView, path: &Path) -> AdapterResult<DType> {
    match view.dtype() {
        safetensors::Dtype::F32 => Ok(DType::F32),
        safetensors::Dtype::F16 => Ok(DType::F16),
        safetensors::Dtype::BF16 => Ok(DType::BF16),
        other => Err(format_error(
            path,
            format!("`{name}` has dtype {other:?}; expected F32, F16 or BF16"),
        )),
    }
}

fn f32_data(view: &TensorView, dtype: DType) -> TensorData {
    TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype).convert::<f32>()
}

/// `file` again with every tensor in f32 (`None` when it already is), and the half type it
/// held, if any: an adapter's trainable parameters are f32 whatever type a file holds them in
/// (mixed precision keeps them so, and PEFT's table is read the same way), and Burn's store
/// would otherwise load a half-precision parameter as it is.
fn in_f32(file: &SafeTensors, path: &Path) -> AdapterResult<(Option<Vec<u8>>, DType)> {
    let tensors = file.tensors();
    let dtypes = tensors
        .iter()
        .map(|(name, view)| float_dtype(name, view, path))
        .collect::<AdapterResult<Vec<_>>>()?;
    let Some(&saved_dtype) = dtypes.iter().find(|dtype| **dtype != DType::F32) else {
        return Ok((None, DType::F32));
    };
    let converted: Vec<_> = tensors
        .iter()
        .zip(dtypes)
        .map(|((name, view), dtype)| (name.clone(), f32_data(view, dtype), view.shape().to_vec()))
        .collect();
    let views = converted
        .iter()
        .map(|(name, data, shape)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), data.as_bytes())
                .map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format_error(path, err.to_string()))?;
    let bytes =
        safetensors::serialize(views, None).map_err(|err| format_error(path, err.to_string()))?;
    Ok((Some(bytes), saved_dtype))
}

fn read_file(path: &Path) -> AdapterResult<Vec<u8>> {
    std::fs::read(path).map_err(|source| AdapterError::Io {
        path: path.to_path_buf(),
        error: source,
    })
}

fn format_error(path: &Path, message: String) -> AdapterError {
    AdapterError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes `path` through a temporary file in the same directory and a rename, so readers see
/// either the old file or the complete new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> AdapterResult<()> {
    let io_error = |source| AdapterError::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes).map_err(io_error)?;
    std::fs::rename(&temporary, path).map_err(io_error)
}
