//! `peft-train`: train, evaluate and generate with prompt- and prefix-tuned GPT-2.
//!
//! The library half holds everything the binary runs, so that `peft-bench` measures the same
//! training step.
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
//! peft_train::commands::run(cli)?;
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod cli;
pub mod clip;
pub mod commands;
pub mod data;
pub mod demo;
pub mod epochs;
pub mod eval;
pub mod guard;
pub mod plot;
pub mod progress;
pub mod token_cache;
pub mod train;
pub mod trainee;
