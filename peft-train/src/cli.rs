//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use peft_core::Backend;

use crate::data::Overlong;

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

/// The compute backend: any compiled in; by default the best one.
#[derive(Args, Debug, Clone)]
pub struct DeviceArg {
    /// flex, ndarray, vulkan, tch, tch-cuda or cuda (each needs its cargo feature).
    #[arg(long, value_parser = parse_backend)]
    pub device: Option<Backend>,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    let backend: Backend = s
        .parse()
        .map_err(|e: peft_core::DeviceError| e.to_string())?;
    backend.device().map_err(|e| e.to_string())?;
    Ok(backend)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Soft prompt prepended to the input embeddings.
    Prompt,
    /// Keys and values prepended at every layer.
    Prefix,
    /// Every weight of the model (the baseline adapters are compared with).
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PromptInitArg {
    Random,
    SampleVocab,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Base model: a directory with config.json + weights + tokenizer, or a hub id.
    #[arg(long)]
    pub model: String,
    #[arg(long, value_enum, default_value = "prompt")]
    pub method: Method,
    #[arg(long, default_value_t = 20)]
    pub num_virtual_tokens: usize,
    /// Training data (JSON Lines).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data (JSON Lines); evaluated after every epoch.
    #[arg(long)]
    pub valid_data: Option<PathBuf>,
    #[arg(long)]
    pub output_dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (the epoch count still bounds the run).
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-2)]
    pub lr: f64,
    #[arg(long, value_enum, default_value = "constant")]
    pub schedule: Schedule,
    /// Linear warm-up steps before the schedule.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the gradients' global norm (all trainable parameters together, as PyTorch's
    /// `clip_grad_norm_`) to this value before each optimizer step.
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Tokenise the data again instead of reading the tokens an earlier run cached (in
    /// $PEFT_RS_CACHE/tokenized, default ~/.cache/peft-rs/tokenized), and cache nothing.
    #[arg(long)]
    pub no_token_cache: bool,
    /// Accumulate gradients over this many batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accumulation: usize,
    /// Stop when the validation loss has not improved for this many epochs.
    #[arg(long)]
    pub early_stopping: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Resume from the last checkpoint in OUTPUT_DIR.
    #[arg(long)]
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
    #[arg(long, default_value_t = 1.0)]
    pub prompt_init_std: f64,
    /// Start from an existing adapter's prompt (transfer).
    #[arg(long)]
    pub prompt_init_from: Option<PathBuf>,
    /// Dropout on the soft prompt during training.
    #[arg(long, default_value_t = 0.0)]
    pub prompt_dropout: f64,
    /// Prefix tuning through PEFT's reparameterisation MLP of this hidden width.
    #[arg(long)]
    pub prefix_projection: Option<usize>,
    #[command(flatten)]
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
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value = "reject")]
    pub overlong: Overlong,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The text to continue; several may be given and are generated as one batch.
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    #[arg(long, default_value_t = 40)]
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
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
