//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use peft_runtime::args::parse_number as number;
pub use peft_runtime::args::{DeviceArg, at_least_one};
use serde::Serialize;

use crate::data::Overlong;

pub mod commands;

#[derive(Parser, Debug)]
#[command(
    name = "peft-train",
    version,
    about = "Prompt tuning and prefix tuning of frozen GPT-2 models on Burn",
    long_about = "Prompt tuning and prefix tuning of frozen GPT-2 models on Burn.\n\n\
                  With no subcommand, runs the offline demonstration: pretrains a small GPT-2 on a \
                  generated restaurant corpus (cached), then prompt- and prefix-tunes it on held-out \
                  tasks and compares them with the frozen model and a full fine-tune."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an adapter (or fully fine-tune) on a JSON Lines dataset.
    Train(TrainArgs),
    /// Per-example losses of a dataset, as JSON.
    Eval(EvalArgs),
    /// Continue a text with the model and an optional adapter.
    Generate(GenerateArgs),
    /// Shapes and parameter counts of a model and an adapter.
    Info(InfoArgs),
    /// The offline demonstration (also what runs with no subcommand).
    Demo(DemoArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Soft prompt prepended to the input embeddings.
    Prompt,
    /// Keys and values prepended at every layer.
    Prefix,
    /// Every weight of the model (the baseline adapters are compared with).
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptInitArg {
    Random,
    SampleVocab,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// `train`'s settings; also what `OUTPUT_DIR/run.json` records of a run (less the flags
/// that do not change what is trained).
#[derive(Args, Debug, Clone, Serialize)]
// `--prompt-dropout -0.1` reaches the value check (and its message) instead of reading as a flag.
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Base model: a directory with config.json + weights + tokenizer, or a hub id.
    #[arg(long)]
    pub model: String,
    #[arg(long, value_enum, default_value = "prompt")]
    pub method: Method,
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub num_virtual_tokens: usize,
    /// Training data (JSON Lines).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data (JSON Lines); evaluated after every epoch.
    #[arg(long)]
    pub valid_data: Option<PathBuf>,
    #[arg(long)]
    pub output_dir: PathBuf,
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
    /// Tokenise the data again instead of reading the tokens an earlier run cached (in
    /// $PEFT_RS_CACHE/tokenized, default ~/.cache/peft-rs/tokenized), and cache nothing.
    #[arg(long)]
    #[serde(skip)]
    pub no_token_cache: bool,
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
    /// Resume from the last checkpoint in OUTPUT_DIR.
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    #[arg(long, value_enum, default_value = "reject")]
    pub overlong: Overlong,
    /// Prompt tuning init.
    #[arg(long, value_enum, default_value = "sample-vocab")]
    pub prompt_init: PromptInitArg,
    /// Text for `--prompt-init text`.
    #[arg(long)]
    pub prompt_init_text: Option<String>,
    /// Standard deviation for `--prompt-init random`.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub prompt_init_std: f64,
    /// Start from an existing adapter's prompt (transfer).
    #[arg(long)]
    pub prompt_init_from: Option<PathBuf>,
    /// Dropout on the soft prompt during training, in [0, 1).
    #[arg(long, default_value_t = 0.0, value_parser = dropout_probability)]
    pub prompt_dropout: f64,
    /// Prefix tuning through PEFT's reparameterisation MLP of this hidden width.
    #[arg(long, value_parser = at_least_one)]
    pub prefix_projection: Option<usize>,
    #[command(flatten)]
    #[serde(skip)]
    pub device: DeviceArg,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    #[arg(long)]
    pub model: String,
    /// A PEFT-format adapter directory; without it, the frozen base model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value = "reject")]
    pub overlong: Overlong,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Args, Debug, Clone)]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The text to continue; several may be given and are generated as one batch.
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    #[arg(long, default_value_t = 40, value_parser = at_least_one)]
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0, value_parser = temperature)]
    pub temperature: f32,
    #[arg(long, value_parser = at_least_one)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to this, in (0, 1].
    #[arg(long, value_parser = top_p)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Base model; by default a small GPT-2 pretrained here once on a generated corpus.
    #[arg(long)]
    pub model: Option<String>,
    /// Where the demo keeps its cache and results.
    #[arg(long, default_value = "artifacts/demo")]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
}

// Value checks for numeric flags, so that a bad value is a usage error naming the flag rather
// than a division by zero, an assertion deep in Burn, or a silently useless run.

fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = number(s)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("must be a finite number above 0, not {s}"))
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let x: f64 = number(s)?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("must be a finite number, 0 or more, not {s}"))
    }
}

fn dropout_probability(s: &str) -> Result<f64, String> {
    let p: f64 = number(s)?;
    // 1 would drop every value of the prompt: nothing left to train.
    if (0.0..1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("must be at least 0 and below 1, not {s}"))
    }
}

fn temperature(s: &str) -> Result<f32, String> {
    let t: f32 = number(s)?;
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(format!("must be 0 (greedy) or a positive number, not {s}"))
    }
}

fn top_p(s: &str) -> Result<f32, String> {
    let p: f32 = number(s)?;
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err(format!("must be above 0 and at most 1, not {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_flags_refuse_values_that_would_break_a_run() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(positive("3e-2"), Ok(3e-2));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("NaN").is_err());
        assert_eq!(dropout_probability("0"), Ok(0.0));
        assert_eq!(dropout_probability("0.5"), Ok(0.5));
        for bad in ["1", "1.5", "-0.1", "NaN"] {
            assert!(dropout_probability(bad).is_err(), "{bad}");
        }
        assert_eq!(temperature("0"), Ok(0.0));
        assert!(temperature("-0.5").is_err());
        assert!(temperature("NaN").is_err());
        assert_eq!(top_p("1"), Ok(1.0));
        assert!(top_p("0").is_err());
        assert!(top_p("1.1").is_err());
    }
}
