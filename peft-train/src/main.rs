//! `peft-train`: train, evaluate and generate with prompt- and prefix-tuned GPT-2.

use clap::Parser;
use peft_train::cli::Cli;

fn main() {
    peft_train::init_logging();
    if let Err(err) = peft_train::commands::run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
