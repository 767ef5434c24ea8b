//! `peft-train`: train, evaluate and generate with prompt- and prefix-tuned GPT-2.
//!
//! The library half holds everything the binary runs, so that `peft-bench` measures the same
//! training step and `peft-serve` loads models the same way.

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod demo;
pub mod eval;
pub mod loaded;
pub mod progress;
pub mod train;
pub mod trainee;
