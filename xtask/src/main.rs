//! `cargo xtask <command>`: developer chores that need more than cargo.
//!
//! The Python reference side (Hugging Face `transformers` + `peft`) lives in a virtual
//! environment outside the repository — `$PEFT_REFERENCE_VENV`, by default
//! `~/.cache/peft-rs/venv` — created from `scripts/reference/requirements.txt` on first use.

mod bench;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Developer automation for peft-rs")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate the tiny GPT-2 and Llama-family checkpoints, their PEFT adapters and the
    /// Hugging Face reference outputs in `fixtures/`.
    Fixtures,
    /// Save an adapter of each kind from Rust (`fixtures/rust-adapters/`), then load each in
    /// Python's `peft` and compare losses; writes `fixtures/rust-adapters/peft_check.txt`.
    PeftCheck,
    /// Benchmark `peft-bench` against Hugging Face PEFT on the same shapes, alternating runs;
    /// prints the ratio table (for BENCHMARKS.md) and keeps the raw records.
    Bench(bench::BenchArgs),
    /// Print the reference virtual environment's Python (creating the venv if needed).
    ReferencePython,
}

fn main() -> Result<()> {
    let root = repo_root();
    match Cli::parse().command {
        Task::Fixtures => {
            let python = reference_python(&root)?;
            // The Llama families reuse the tokenizer the GPT-2 script trains: it runs first.
            run(Command::new(&python).arg(root.join("scripts/reference/make_fixtures.py")))?;
            run(Command::new(&python).arg(root.join("scripts/reference/make_llama_fixtures.py")))
        }
        Task::PeftCheck => {
            run(Command::new(env!("CARGO")).current_dir(&root).args([
                "run",
                "--quiet",
                "-p",
                "peft-gpt2",
                "--example",
                "export_adapters",
            ]))?;
            let python = reference_python(&root)?;
            run(Command::new(python)
                .arg(root.join("scripts/reference/make_fixtures.py"))
                .arg("--check-rust-adapters"))
        }
        Task::Bench(args) => bench::run(&root, &reference_python(&root)?, &args),
        Task::ReferencePython => {
            println!("{}", reference_python(&root)?.display());
            Ok(())
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

fn venv_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PEFT_REFERENCE_VENV") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set PEFT_REFERENCE_VENV")?;
    Ok(PathBuf::from(home).join(".cache/peft-rs/venv"))
}

/// The venv's Python, after making sure the pinned reference packages are installed.
fn reference_python(root: &Path) -> Result<PathBuf> {
    let venv = venv_dir()?;
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("creating the reference venv in {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    let ready = Command::new(&python)
        .args(["-c", "import torch, transformers, peft, safetensors"])
        .status()
        .with_context(|| format!("running {}", python.display()))?
        .success();
    if !ready {
        eprintln!("installing scripts/reference/requirements.txt (torch is a large download)");
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-r"])
            .arg(root.join("scripts/reference/requirements.txt")))?;
    }
    Ok(python)
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
