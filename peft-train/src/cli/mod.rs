//! The command line: its subcommands and their arguments (`train`'s are its config,
//! [`TrainArgs`]; the demo's, [`DemoArgs`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use peft_runtime::DeviceArg;
use peft_runtime::args::{at_least_one, temperature, top_p};

use crate::data::Overlong;
use crate::demo::DemoArgs;
use crate::train::TrainArgs;

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

// One value per process, parsed once from the command line: boxing `train`'s many flags would
// only add indirection to the code that reads them.
#[allow(clippy::large_enum_variant)]
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
