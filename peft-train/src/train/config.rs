//! What `peft-train train` is told: the command line, as one config that `OUTPUT_DIR/run.json`
//! records whole and that code (the demo, tests) builds from defaults.
//!
//! The defaults live in one place, the flags' own attributes: [`Default`] for
//! [`TrainSettings`] and [`AdapterSpec`] parses an empty command line.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};
use peft_runtime::DeviceArg;
use peft_runtime::args::{at_least_one, non_negative, positive};
use serde::Serialize;

use crate::data::Overlong;
use crate::train::AdapterSpec;

/// `train`'s arguments: what to train on and where, the adapter, the settings.
#[derive(Args, Debug, Clone, Serialize)]
// `--prompt-dropout -0.1` reaches the value check (and its message) instead of reading as a flag.
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Base model: a directory with config.json + weights + tokenizer, or a hub id.
    #[arg(long)]
    pub model: String,
    /// Training data (JSON Lines).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data (JSON Lines); evaluated after every epoch.
    #[arg(long)]
    pub valid_data: Option<PathBuf>,
    #[arg(long)]
    pub output_dir: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    pub adapter: AdapterSpec,
    #[command(flatten)]
    #[serde(flatten)]
    pub settings: TrainSettings,
    /// Tokenise the data again instead of reading the tokens an earlier run cached (in
    /// $PEFT_RS_CACHE/tokenized, default ~/.cache/peft-rs/tokenized), and cache nothing.
    #[arg(long)]
    #[serde(skip)]
    pub no_token_cache: bool,
    /// Resume from the last checkpoint in OUTPUT_DIR.
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    #[command(flatten)]
    #[serde(skip)]
    pub device: DeviceArg,
}

/// How training runs: its length, batches, optimizer, schedule and data handling.
#[derive(Args, Debug, Clone, Serialize)]
#[command(allow_negative_numbers = true)]
pub struct TrainSettings {
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (the epoch count still bounds the run).
    #[arg(long, value_parser = at_least_one)]
    pub max_steps: Option<usize>,
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-2, value_parser = positive)]
    pub lr: f64,
    #[arg(long, value_enum, default_value = "constant")]
    pub schedule: Schedule,
    /// Linear warm-up steps before the schedule.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay (Hugging Face's Trainer default: 0).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub weight_decay: f64,
    /// AdamW's epsilon (PyTorch's and Hugging Face's default: 1e-8).
    #[arg(long, default_value_t = 1e-8, value_parser = positive)]
    pub adam_epsilon: f64,
    /// Clip the gradients' global norm (all trainable parameters together, as PyTorch's
    /// `clip_grad_norm_`) to this value before each optimizer step.
    #[arg(long, value_parser = positive)]
    pub grad_clip: Option<f64>,
    /// Accumulate gradients over this many batches per optimizer step; the step follows the
    /// mean loss over all their target tokens, as one batch that large would (and as Hugging
    /// Face's Trainer does).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub grad_accumulation: usize,
    /// Stop when the validation loss has not improved for this many epochs; the adapter saved
    /// is then the best epoch's.
    #[arg(long, value_parser = at_least_one)]
    pub early_stopping: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "reject")]
    pub overlong: Overlong,
}

impl Default for TrainSettings {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: TrainSettings,
        }
        Defaults::parse_from(["defaults"]).settings
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_defaults() {
        let settings = TrainSettings::default();
        assert_eq!((settings.epochs, settings.batch_size), (3, 8));
        assert_eq!((settings.lr, settings.adam_epsilon), (3e-2, 1e-8));
        assert_eq!(settings.schedule, Schedule::Constant);
        assert_eq!(settings.grad_clip, None);
        let adapter = AdapterSpec::default();
        assert_eq!(adapter.num_virtual_tokens, 20);
        assert_eq!(adapter.prompt_init_std, 1.0);
    }
}
