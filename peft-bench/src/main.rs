//! `peft-bench`: training steps and batched generation of prompt- and prefix-tuned GPT-2,
//! timed through the same code `peft-train` runs, reported in the JSON schema the Python
//! reference (`scripts/reference/bench_peft.py`) prints. `cargo xtask bench` runs both.

mod attention;
mod infer;
mod load;
mod loss;
mod mixed;
mod report;
mod setup;
mod train;

use anyhow::Result;

/// mimalloc, as in `peft-train` and `peft-serve` (see the workspace's Cargo.toml for why): the
/// benchmark measures what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Timed training steps (forward, backward, optimizer) on random tokens.
    Train(train::TrainBench),
    /// Timed batched generation: prefill and KV-cached decode.
    Infer(infer::InferBench),
    /// Generation for requests that each use a different adapter: one mixed batch, vs the
    /// same batch with a single adapter, vs one batch per adapter.
    Mixed(mixed::MixedBench),
    /// Load-test a running `peft-serve`: concurrent clients over several adapters.
    Load(load::LoadBench),
    /// The attention operation alone, forward and backward, on random operands.
    Attention(attention::AttentionBench),
    /// The language-modelling loss alone (LM head and cross-entropy), forward and backward.
    Loss(loss::LossBench),
}

fn main() {
    peft_runtime::allocator::keep_freed_memory();
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let record = match Cli::parse().command {
        Command::Load(args) => {
            println!("{}", serde_json::to_string(&load::run(&args)?)?);
            return Ok(());
        }
        Command::Attention(args) => {
            println!("{}", serde_json::to_string(&attention::run(&args)?)?);
            return Ok(());
        }
        Command::Loss(args) => {
            println!("{}", serde_json::to_string(&loss::run(&args)?)?);
            return Ok(());
        }
        Command::Train(args) => train::run(&args)?,
        Command::Infer(args) => infer::run(&args)?,
        Command::Mixed(args) => mixed::run(&args)?,
    };
    println!("{}", serde_json::to_string(&record)?);
    Ok(())
}
