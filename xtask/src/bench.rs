//! `cargo xtask bench`: `peft-bench` and the Python PEFT reference on the same shapes, run
//! alternately in separate processes (so peak memory is each run's own), then one table of
//! ratios. Every raw record is kept as JSON lines beside the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Each case runs this many times per implementation, alternating; medians are reported.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Timed training steps per run (after two warm-up steps).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// CPU threads for both implementations (rayon and torch); every core by default.
    #[arg(long)]
    threads: Option<usize>,
    /// Batch × sequence shapes, e.g. `4x128,8x256`.
    #[arg(long, default_value = "4x128", value_delimiter = ',')]
    shapes: Vec<String>,
    #[arg(long, default_value = "gpt2")]
    model: String,
    /// Training methods to measure.
    #[arg(long, default_value = "prompt,prefix,full", value_delimiter = ',')]
    train: Vec<String>,
    /// Methods whose generation (prefill + 32 decoded tokens) to measure.
    #[arg(long, default_value = "none,prompt,prefix", value_delimiter = ',')]
    infer: Vec<String>,
    /// Cargo features for `peft-bench` (its backend).
    #[arg(long, default_value = "flex")]
    features: String,
    /// `peft-bench --device`.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Where the Markdown table goes (the raw records go beside it, `.jsonl`).
    #[arg(long, default_value = "target/bench/cpu.md")]
    out: PathBuf,
}

struct Case {
    mode: &'static str,
    method: String,
    batch: usize,
    seq: usize,
}

pub fn run(root: &Path, python: &Path, args: &BenchArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    crate::run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "peft-bench",
        "--no-default-features",
        "--features",
        &args.features,
    ]))?;
    let bench = root.join("target/release/peft-bench");
    let script = root.join("scripts/reference/bench_peft.py");

    let mut cases = Vec::new();
    for shape in &args.shapes {
        let (batch, seq) = shape
            .split_once('x')
            .and_then(|(b, s)| Some((b.parse().ok()?, s.parse().ok()?)))
            .with_context(|| format!("shape `{shape}` is not BATCHxSEQ, e.g. 4x128"))?;
        for (mode, methods) in [("train", &args.train), ("infer", &args.infer)] {
            for method in methods.iter().filter(|m| !m.is_empty()) {
                cases.push(Case {
                    mode,
                    method: method.clone(),
                    batch,
                    seq,
                });
            }
        }
    }

    let mut records: Vec<Value> = Vec::new();
    for round in 1..=args.rounds {
        for case in &cases {
            let common = [
                case.mode.to_string(),
                "--model".into(),
                args.model.clone(),
                "--method".into(),
                case.method.clone(),
                "--batch".into(),
                case.batch.to_string(),
                "--seq".into(),
                case.seq.to_string(),
            ];
            let timing: Vec<String> = match case.mode {
                "train" => vec!["--steps".into(), args.steps.to_string()],
                _ => vec![],
            };
            eprintln!(
                "round {round}/{}: {} {} {}x{}",
                args.rounds, case.mode, case.method, case.batch, case.seq
            );
            let ours = json_line(
                Command::new(&bench)
                    .args(&common)
                    .args(&timing)
                    .args(["--device", &args.device])
                    .env("RAYON_NUM_THREADS", threads.to_string()),
            )?;
            let reference = json_line(
                Command::new(python)
                    .arg(&script)
                    .args(&common)
                    .args(&timing)
                    .args(["--threads", &threads.to_string()]),
            )?;
            records.extend([ours, reference]);
        }
    }

    let table = render(&cases, &records, &machine(python), threads, &args.model);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, &table).with_context(|| format!("writing {}", args.out.display()))?;
    let raw: String = records.iter().map(|r| format!("{r}\n")).collect();
    let raw_path = args.out.with_extension("jsonl");
    std::fs::write(&raw_path, raw).with_context(|| format!("writing {}", raw_path.display()))?;
    println!("{table}");
    eprintln!(
        "table: {}; records: {}",
        args.out.display(),
        raw_path.display()
    );
    Ok(())
}

/// Runs a benchmark process and parses the JSON line it prints last.
fn json_line(command: &mut Command) -> Result<Value> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}:\n{}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{command:?} printed no JSON line:\n{stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing `{line}`"))
}

/// The machine, in words: CPU model and count, and the reference's library versions.
fn machine(python: &Path) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let versions = Command::new(python)
        .args([
            "-c",
            "import torch, transformers, peft; \
             print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{model}, {cpus} CPUs; reference: {versions}")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn render(cases: &[Case], records: &[Value], machine: &str, threads: usize, model: &str) -> String {
    // (mode, method, batch, seq, implementation) -> the runs' records
    let mut runs: BTreeMap<(String, String, u64, u64, String), Vec<&Value>> = BTreeMap::new();
    for record in records {
        let key = (
            record["mode"].as_str().unwrap_or_default().to_string(),
            record["method"].as_str().unwrap_or_default().to_string(),
            record["batch"].as_u64().unwrap_or_default(),
            record["seq"].as_u64().unwrap_or_default(),
            record["implementation"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        runs.entry(key).or_default().push(record);
    }
    let stat = |case: &Case, implementation: &str, field: &str| -> f64 {
        let key = (
            case.mode.to_string(),
            case.method.clone(),
            case.batch as u64,
            case.seq as u64,
            implementation.to_string(),
        );
        median(
            runs.get(&key)
                .map(|rs| rs.iter().filter_map(|r| r[field].as_f64()).collect())
                .unwrap_or_default(),
        )
    };
    let mut out = format!(
        "Machine: {machine}. Threads: {threads} for both. Model `{model}` (shape only: random \
         weights), 20 virtual tokens, f32; medians of {} runs each, alternating.\n\n",
        records.len() / (2 * cases.len().max(1))
    );
    out.push_str(
        "Training steps (forward, backward, AdamW), tokens/s = batch × seq / median step time:\n\n\
         | method | batch×seq | peft-rs tok/s | HF PEFT tok/s | ratio | peft-rs peak RSS MiB | HF PEFT peak RSS MiB | memory ratio |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for case in cases.iter().filter(|c| c.mode == "train") {
        let (ours, theirs) = (
            stat(case, "peft-rs", "tokens_per_s"),
            stat(case, "hf-peft", "tokens_per_s"),
        );
        let (our_mem, their_mem) = (
            stat(case, "peft-rs", "peak_rss_mib"),
            stat(case, "hf-peft", "peak_rss_mib"),
        );
        out.push_str(&format!(
            "| {} | {}×{} | {ours:.1} | {theirs:.1} | {:.2}× | {our_mem:.0} | {their_mem:.0} | {:.2}× |\n",
            case.method,
            case.batch,
            case.seq,
            ours / theirs,
            our_mem / their_mem
        ));
    }
    out.push_str(
        "\nGeneration (greedy, KV cache), prefill = prompt tokens/s of the first pass, decode = \
         new tokens/s after it:\n\n\
         | adapter | batch×prompt | peft-rs prefill | HF PEFT prefill | ratio | peft-rs decode | HF PEFT decode | ratio | peft-rs peak RSS MiB | HF PEFT peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for case in cases.iter().filter(|c| c.mode == "infer") {
        let ours_prefill = stat(case, "peft-rs", "prefill_tokens_per_s");
        let theirs_prefill = stat(case, "hf-peft", "prefill_tokens_per_s");
        let ours_decode = stat(case, "peft-rs", "tokens_per_s");
        let theirs_decode = stat(case, "hf-peft", "tokens_per_s");
        out.push_str(&format!(
            "| {} | {}×{} | {ours_prefill:.0} | {theirs_prefill:.0} | {:.2}× | {ours_decode:.1} | {theirs_decode:.1} | {:.2}× | {:.0} | {:.0} |\n",
            case.method,
            case.batch,
            case.seq,
            ours_prefill / theirs_prefill,
            ours_decode / theirs_decode,
            stat(case, "peft-rs", "peak_rss_mib"),
            stat(case, "hf-peft", "peak_rss_mib"),
        ));
    }
    out
}
