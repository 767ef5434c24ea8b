//! `peft-train`: train, evaluate and generate with prompt- and prefix-tuned GPT-2.

use clap::Parser;
use peft_train::cli::Cli;
use peft_train::train::Interrupted;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    peft_runtime::allocator::keep_freed_memory();
    peft_runtime::init_logging();
    if let Err(err) = peft_train::run(Cli::parse()) {
        if err.downcast_ref::<Interrupted>().is_some() {
            // What the shell reports for a process stopped by SIGINT.
            eprintln!("{err}");
            std::process::exit(130);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
