//! `peft-train`: train, evaluate and generate with prompt- and prefix-tuned GPT-2.

use clap::Parser;
use peft_train::cli::Cli;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(err) = peft_train::commands::run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
