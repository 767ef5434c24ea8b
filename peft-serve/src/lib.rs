//! `peft-serve`: many prompt- and prefix-tuning adapters over one frozen GPT-2, over HTTP.
//!
//! The base weights exist once; each adapter adds only its own parameters. Requests naming
//! different adapters that arrive close together run as one mixed-adapter batch
//! ([`peft_gpt2::generate_mixed_streaming`]), each row getting exactly what it would get alone;
//! tokens are sent as they are chosen, so responses can stream.
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use peft_serve::api::{AppState, router};
//! use peft_serve::engine::{BatchLimits, Engine};
//! use peft_serve::registry::Registry;
//! use peft_runtime::{DeviceArg, LoadedModel};
//!
//! # fn main() -> anyhow::Result<()> {
//! let loaded = LoadedModel::load("gpt2", &DeviceArg::default(), false)?;
//! let tokenizer = loaded.tokenizer()?.clone();
//! let mut registry = Registry::new("gpt2", loaded.shapes(), loaded.device.clone());
//! registry.load("support", Path::new("runs/support/adapter"))?;
//! let limits = BatchLimits { max_batch: 8, max_wait: Duration::from_millis(10) };
//! let engine = Engine::start(loaded.model, registry, tokenizer.eos_id(), limits);
//! let app = router(Arc::new(AppState::new(engine, tokenizer)));
//! // Serve it: `axum::serve(tokio::net::TcpListener::bind("127.0.0.1:8080").await?, app)`.
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod engine;
pub mod registry;
pub mod text;
