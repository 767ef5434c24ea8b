//! What every peft-rs command does before its own work: choose the compute backend at run time,
//! load a base model with its tokenizer (from a directory or the Hugging Face cache) and the
//! adapters named for it, and write result files atomically.
//!
//! Backends are cargo features of this crate (`flex` by default, `ndarray`, `tch`, `vulkan`,
//! `cuda`); the adapter and model crates below it name none, since Burn 0.22 keeps the backend
//! in the run-time [`Device`](burn::prelude::Device).
//!
//! ```no_run
//! use std::path::Path;
//!
//! use peft_runtime::{ComputeBackend, DeviceArg, LoadedModel, Precision};
//!
//! # fn main() -> anyhow::Result<()> {
//! // `--device flex --dtype bf16`; `DeviceArg::default()` picks the best backend, in f32.
//! let device = DeviceArg { device: Some("flex".parse::<ComputeBackend>()?), dtype: Precision::Bf16 };
//! let loaded = LoadedModel::load("gpt2", &device, false)?;
//! let adapter = loaded.load_adapter(Path::new("runs/task/adapter"))?;
//! let ids = loaded.tokenizer()?.encode("name[The Mill], eatType[pub] =>")?;
//! println!("{} tokens for {} under {}", ids.len(), loaded.name, adapter.config.peft_type());
//! # Ok(())
//! # }
//! ```

pub mod allocator;
pub mod args;
pub mod backend;
pub mod family;
pub mod files;
pub mod loaded;
pub mod memory;

pub use args::{DeviceArg, Precision};
pub use backend::{ComputeBackend, DeviceError};
pub use family::{Model, ModelConfig, load_model_dir};
pub use files::write_atomically;
pub use loaded::{LoadedModel, Vocabulary};

/// Log warnings and errors (or what `RUST_LOG` asks for) to stderr, coloured on a terminal:
/// the command-line tools' logging.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
