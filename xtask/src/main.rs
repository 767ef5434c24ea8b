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
    /// Save an adapter of each kind from Rust (`fixtures/rust-adapters/`: GPT-2 ones from the
    /// library, Llama-family ones trained by `peft-train`), then load each in Python's `peft`
    /// and compare losses; writes `peft_check.txt` and `peft_check_llama.txt` there.
    PeftCheck,
    /// Benchmark `peft-bench` against Hugging Face PEFT on the same shapes, alternating runs;
    /// prints the ratio table (for BENCHMARKS.md) and keeps the raw records.
    Bench(bench::BenchArgs),
    /// Print the reference virtual environment's Python (creating the venv if needed).
    ReferencePython,
    /// Pretrain the offline demo's base model from scratch (its BPE tokenizer included) and
    /// replace the one the demo ships in `peft-train/demo-base/`. Seeded, so it gives the same
    /// corpus and tokenizer every time and the same model up to float rounding; about 30
    /// minutes on 2 CPU cores. Every version stays in git history: retrain rarely.
    DemoBase,
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
            run(Command::new(&python)
                .arg(root.join("scripts/reference/make_fixtures.py"))
                .arg("--check-rust-adapters"))?;
            train_llama_family_adapters(&root)?;
            run(Command::new(&python)
                .arg(root.join("scripts/reference/make_llama_fixtures.py"))
                .arg("--check-rust-adapters"))
        }
        Task::Bench(args) => bench::run(&root, &reference_python(&root)?, &args),
        Task::DemoBase => {
            let scratch = root.join("target/demo-base");
            run(Command::new(env!("CARGO"))
                .current_dir(&root)
                .args([
                    "run",
                    "--release",
                    "-p",
                    "peft-train",
                    "--",
                    "demo",
                    "--pretrain-base",
                ])
                .arg(&scratch))?;
            for file in ["config.json", "tokenizer.json", "model.safetensors"] {
                let to = root.join("peft-train/demo-base").join(file);
                std::fs::copy(scratch.join(file), &to)
                    .with_context(|| format!("replacing {}", to.display()))?;
            }
            println!("replaced peft-train/demo-base/; rebuild peft-train to ship it");
            Ok(())
        }
        Task::ReferencePython => {
            println!("{}", reference_python(&root)?.display());
            Ok(())
        }
    }
}

/// Trains a prompt, a prefix, a projected-prefix and a per-layer-projected prefix adapter on
/// each tiny Llama-family model with `peft-train` (two epochs of `fixtures/data/text.jsonl`),
/// and records `peft-train eval`'s per-example losses beside each, in
/// `fixtures/rust-adapters/FAMILY-KIND/`. The per-layer one is 8 wide, below every family's
/// key/value width (16 or 32), so its `up` layer and grouped-query layout are both exercised.
fn train_llama_family_adapters(root: &Path) -> Result<()> {
    let data = root.join("fixtures/data/text.jsonl");
    let scratch = std::env::temp_dir().join(format!("peft-check-{}", std::process::id()));
    for family in ["tiny-llama", "tiny-qwen2", "tiny-qwen3"] {
        let model = root.join("fixtures").join(family);
        for (kind, extra) in [
            ("prompt", &["--method", "prompt"][..]),
            ("prefix", &["--method", "prefix"][..]),
            (
                "prefix-projection",
                &["--method", "prefix", "--prefix-projection", "16"][..],
            ),
            (
                "prefix-layer-projection",
                &["--method", "prefix", "--prefix-layer-projection", "8"][..],
            ),
        ] {
            let run_dir = scratch.join(format!("{family}-{kind}"));
            let out = root
                .join("fixtures/rust-adapters")
                .join(format!("{family}-{kind}"));
            let peft_train = |args: &[&std::ffi::OsStr]| {
                run(Command::new(env!("CARGO"))
                    .current_dir(root)
                    .args(["run", "--quiet", "-p", "peft-train", "--"])
                    .args(args))
            };
            let mut train: Vec<&std::ffi::OsStr> = vec![
                "train".as_ref(),
                "--model".as_ref(),
                model.as_os_str(),
                "--data".as_ref(),
                data.as_os_str(),
                "--output-dir".as_ref(),
                run_dir.as_os_str(),
                "--num-virtual-tokens".as_ref(),
                "4".as_ref(),
                "--epochs".as_ref(),
                "2".as_ref(),
                "--batch-size".as_ref(),
                "4".as_ref(),
            ];
            train.extend(extra.iter().map(std::ffi::OsStr::new));
            peft_train(&train)?;
            if out.exists() {
                std::fs::remove_dir_all(&out)?;
            }
            std::fs::create_dir_all(&out)?;
            for file in std::fs::read_dir(run_dir.join("adapter"))? {
                let file = file?;
                std::fs::copy(file.path(), out.join(file.file_name()))?;
            }
            let report = out.join("rust_eval.json");
            peft_train(&[
                "eval".as_ref(),
                "--model".as_ref(),
                model.as_os_str(),
                "--adapter".as_ref(),
                out.as_os_str(),
                "--data".as_ref(),
                data.as_os_str(),
                "--output".as_ref(),
                report.as_os_str(),
            ])?;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
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
