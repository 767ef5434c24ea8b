//! `peft-train`: train, evaluate and generate with prompt- and prefix-tuned GPT-2.
//!
//! The library half holds everything the binary runs, so that `peft-bench` measures the same
//! training step. Its rooms:
//!
//! - [`cli`]: the command line (arguments, value checks) and the commands it runs;
//! - [`data`]: JSON Lines datasets — their shapes, tokenising, verbalizers, the token cache;
//! - [`train`]: the training engine — the adapter to train ([`train::AdapterSpec`]), the
//!   module Burn's `Learner` steps, checkpoints, resume, divergence guard, plots;
//! - [`eval`]: per-example losses of a dataset;
//! - [`demo`]: the offline demonstration (its corpus, pretraining and task runs).
//!
//! ```no_run
//! use clap::Parser;
//! use peft_train::cli::Cli;
//!
//! # fn main() -> anyhow::Result<()> {
//! // What the binary runs: a command line, parsed and carried out.
//! let cli = Cli::parse_from([
//!     "peft-train", "train", "--model", "gpt2", "--method", "prefix",
//!     "--data", "train.jsonl", "--output-dir", "runs/task",
//! ]);
//! peft_train::run(cli)?;
//! # Ok(())
//! # }
//! ```

pub mod cli;
pub mod data;
pub mod demo;
pub mod eval;
pub mod train;

pub use cli::commands::run;
