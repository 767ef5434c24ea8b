//! The offline demonstration: `cargo run --release -p peft-train` with no arguments.
//!
//! No pretrained GPT-2 can be downloaded here, so the demo ships its own base model: a small
//! GPT-2 pretrained on generated restaurant descriptions in the style of the E2E NLG data
//! ([`base`]). The base model is frozen, and prompt tuning and prefix tuning adapt it to three
//! tasks it never saw ([`tasks`]): data-to-text, a classification it can be steered to, and
//! one that hangs on a negation. Each adapter is scored on held-out data ([`assess`]) next to
//! the frozen model and a full fine-tune of it (the reference adapters are measured against),
//! with the greedy outputs of three held-out inputs side by side.
//!
//! `--study` instead runs the study of prompt tuning's and prefix tuning's knobs
//! ([`study`]), written as a report with plots. With `--model gpt2` the same tasks run on
//! real GPT-2 (from the Hugging Face cache or hub).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use peft_core::PrefixReparameterisation;

use crate::train::plot::LossCurves;
use crate::train::{AdapterSpec, Interrupted, Method, Schedule, TrainArgs, TrainSettings};
use peft_runtime::DeviceArg;

mod assess;
mod base;
mod charts;
mod corpus;
mod study;
mod tasks;

use assess::{Assessment, SAMPLES, assess};
use tasks::{Sizes, Task};

/// The demo's arguments.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Base model; by default the small GPT-2 that ships with the demo.
    #[arg(long)]
    pub model: Option<String>,
    /// Where the demo keeps its data, runs and results.
    #[arg(long, default_value = "artifacts/demo")]
    pub output_dir: PathBuf,
    /// Run the study of the methods' knobs (prompt initialisation and length, the prefix
    /// encoders, prompt dropout, multi-task prompts) instead, and write `report.md` with plots
    /// into the output directory. Takes tens of minutes on a laptop CPU.
    #[arg(long)]
    pub study: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Seed of every training run (batch order, initialisation, dropout): the README's figures
    /// are the default's; another shows how far the results move from run to run.
    #[arg(long, default_value_t = TrainSettings::default().seed)]
    pub seed: u64,
    /// Developer use (`cargo xtask demo-base`): pretrain the demo's base model from scratch
    /// into this directory instead of running the demo.
    #[arg(long, hide = true)]
    pub pretrain_base: Option<PathBuf>,
    /// How many generated documents `--pretrain-base` trains on.
    #[arg(long, hide = true, default_value_t = base::PRETRAIN_TEXTS)]
    pub pretrain_texts: usize,
}

impl Default for DemoArgs {
    /// What `peft-train` with no arguments runs: the flags' own defaults.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            demo: DemoArgs,
        }
        <Defaults as clap::Parser>::parse_from(["defaults"]).demo
    }
}

/// Sizes of the demo: small enough for a 2-core CPU in a few minutes.
struct Plan {
    sizes: Sizes,
    /// Epochs of every run but the next field's.
    epochs: usize,
    /// Epochs of prompt and prefix tuning on data-to-text: writing a description takes an
    /// adapter more steps than choosing a label (prefix tuning wrote 86% of the slots after 3
    /// epochs at 3e-2, 91% after 5 at 2e-2), where full fine-tuning writes 99% in 3.
    writing_adapter_epochs: usize,
    virtual_tokens: usize,
    /// Hidden width of PEFT's prefix MLP.
    prefix_projection: usize,
    prompt_lr: f64,
    /// Lower than the prompt's: PEFT's MLP moves every layer's keys and values at once. At the
    /// prompt's rate the held-out loss ended higher (0.185 against 0.157 at 1e-2, 3 epochs);
    /// over 5 epochs 1e-2 and 2e-2 wrote 89.8% and 91.4% of the slots.
    prefix_lr: f64,
    full_lr: f64,
}

const PLAN: Plan = Plan {
    sizes: Sizes {
        train: 300,
        valid: 60,
    },
    epochs: 3,
    writing_adapter_epochs: 5,
    virtual_tokens: 10,
    prefix_projection: 64,
    prompt_lr: 3e-2,
    prefix_lr: 2e-2,
    full_lr: 1e-3,
};

impl Plan {
    /// The peak learning rate of `method`.
    fn lr(&self, method: Method) -> f64 {
        match method {
            Method::Prompt => self.prompt_lr,
            Method::Prefix => self.prefix_lr,
            Method::Full => self.full_lr,
        }
    }

    /// The epochs of `method` on `task`.
    fn epochs(&self, task: &Task, method: Method) -> usize {
        if method != Method::Full && task.metric == tasks::Metric::SlotAccuracy {
            self.writing_adapter_epochs
        } else {
            self.epochs
        }
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    if args.device.dtype.is_half() {
        bail!(
            "the demo's runs and the figures it reports are f32: run it with --dtype f32 (the \
             default)"
        );
    }
    if let Some(dir) = &args.pretrain_base {
        return base::pretrain(dir, args.pretrain_texts, &args.device);
    }
    let started = Instant::now();
    let out = &args.output_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let model = match &args.model {
        Some(model) => {
            println!("base model: {model}");
            model.clone()
        }
        None => {
            let dir = base::materialise(out)?;
            println!("base model: {} (in {})", base::description(), dir.display());
            dir.to_string_lossy().into_owned()
        }
    };
    let tasks = tasks::write_tasks(&out.join("data"), PLAN.sizes)?;
    if args.study {
        return study::run(&model, &tasks, out, &args.device, args.seed);
    }

    let mut results = Vec::new();
    for task in &tasks {
        let frozen = assess(&model, None, task, &args.device, false)?;
        let mut rows = vec![("frozen base".to_string(), frozen)];
        for method in [Method::Prompt, Method::Prefix, Method::Full] {
            let spec = method_spec(method);
            let label = method_label(&spec);
            let trial = run_trial(
                &model,
                &spec,
                &task.train,
                task,
                &out.join("runs"),
                &args.device,
                args.seed,
            )?;
            rows.push((label, trial.assessment));
        }
        results.push((task, rows));
    }
    let report = report(&results)?;
    println!("{report}");
    println!(
        "adapters (PEFT format) in {}/runs/*/adapter, fully fine-tuned models in runs/*/model; \
         finished in {:.0?}",
        out.display(),
        started.elapsed()
    );
    peft_runtime::write_atomically(&out.join("report.txt"), report.as_bytes())?;
    Ok(())
}

/// The adapter of each method as the demo trains it.
fn method_spec(method: Method) -> AdapterSpec {
    AdapterSpec {
        method,
        num_virtual_tokens: PLAN.virtual_tokens,
        prefix_projection: (method == Method::Prefix).then_some(PLAN.prefix_projection),
        ..AdapterSpec::default()
    }
}

fn method_label(spec: &AdapterSpec) -> String {
    match spec.method {
        Method::Prompt => format!("prompt tuning (p={})", spec.num_virtual_tokens),
        Method::Prefix => format!("prefix tuning (p={})", spec.num_virtual_tokens),
        Method::Full => "full fine-tuning".to_string(),
    }
}

/// One training run and its held-out assessment.
#[derive(Clone)]
struct Trial {
    /// The task [`Trial::assessment`] is of.
    task: &'static str,
    /// The adapter directory, or the model's with full fine-tuning.
    trained: PathBuf,
    whole_model: bool,
    assessment: Assessment,
    curves: LossCurves,
    seconds: f64,
}

/// Trains `spec` over `model` on `train` into a directory under `runs` named after the task
/// and the adapter, and scores it on `task`.
fn run_trial(
    model: &str,
    spec: &AdapterSpec,
    train: &Path,
    task: &Task,
    runs: &Path,
    device: &DeviceArg,
    seed: u64,
) -> Result<Trial> {
    let run_dir = runs.join(run_name(task, spec, train));
    let _ = std::fs::remove_dir_all(&run_dir);
    let started = Instant::now();
    let args = TrainArgs {
        model: model.to_string(),
        data: train.to_path_buf(),
        valid_data: Some(task.valid.clone()),
        output_dir: run_dir.clone(),
        adapter: spec.clone(),
        settings: TrainSettings {
            epochs: PLAN.epochs(task, spec.method),
            // Adapters start from scratch and train few parameters; full fine-tuning moves
            // pretrained weights, which an adapter's rate would wreck.
            lr: PLAN.lr(spec.method),
            schedule: Schedule::Linear,
            warmup_steps: 10,
            grad_clip: Some(1.0),
            seed,
            ..TrainSettings::default()
        },
        no_token_cache: false,
        resume: false,
        device: device.clone(),
    };
    let trained = train_to_end(&args)?;
    let seconds = started.elapsed().as_secs_f64();
    let whole_model = spec.method == Method::Full;
    let assessment = assess_trained(model, &trained, whole_model, task, device)?;
    Ok(Trial {
        task: task.name,
        trained,
        whole_model,
        assessment,
        curves: LossCurves::read(&run_dir.join("train"), PLAN.epochs(task, spec.method)),
        seconds,
    })
}

impl Trial {
    /// The same trained adapter (or model), assessed on another task.
    fn on(&self, model: &str, task: &Task, device: &DeviceArg) -> Result<Trial> {
        Ok(Trial {
            task: task.name,
            assessment: assess_trained(model, &self.trained, self.whole_model, task, device)?,
            ..self.clone()
        })
    }
}

/// Runs a training to its end and returns what it saved; a run the user stops ends the demo,
/// saying where the interrupted run's adapter is.
fn train_to_end(args: &TrainArgs) -> Result<PathBuf> {
    let outcome = crate::train::train(args)?;
    if outcome.interrupted {
        return Err(Interrupted {
            saved: outcome.adapter_dir,
        }
        .into());
    }
    Ok(outcome.adapter_dir)
}

/// Full fine-tuning saves a whole model; an adapter goes over the frozen base.
fn assess_trained(
    model: &str,
    trained: &Path,
    whole_model: bool,
    task: &Task,
    device: &DeviceArg,
) -> Result<Assessment> {
    if whole_model {
        assess(&trained.to_string_lossy(), None, task, device, true)
    } else {
        assess(model, Some(trained), task, device, false)
    }
}

/// A run directory's name: the task (or the mixture trained on) and the adapter's settings.
fn run_name(task: &Task, spec: &AdapterSpec, train: &Path) -> String {
    let data = if train == task.train {
        task.name.to_string()
    } else {
        train
            .file_stem()
            .map_or("data".into(), |stem| stem.to_string_lossy().into_owned())
    };
    let adapter = match spec.method {
        Method::Full => "full".to_string(),
        Method::Prompt => format!(
            "prompt-p{}-{:?}-dropout{}",
            spec.num_virtual_tokens, spec.prompt_init, spec.prompt_dropout
        ),
        Method::Prefix => format!(
            "prefix-p{}-{}",
            spec.num_virtual_tokens,
            match spec.prefix_reparameterisation() {
                PrefixReparameterisation::Direct => "table".to_string(),
                PrefixReparameterisation::Mlp { hidden } => format!("mlp{hidden}"),
                PrefixReparameterisation::PerLayer { width } => format!("per-layer{width}"),
            }
        ),
    };
    format!("{data}-{adapter}").to_lowercase()
}

/// The printed results: one row per task and model, then the sample outputs side by side.
fn report(results: &[(&Task, Vec<(String, Assessment)>)]) -> Result<String> {
    let mut text = String::new();
    writeln!(
        text,
        "{:<16} {:<22} {:>10} {:>11} {:>15}",
        "task", "model", "trainable", "valid loss", "metric"
    )?;
    for (task, rows) in results {
        for (label, a) in rows {
            writeln!(
                text,
                "{:<16} {:<22} {:>10} {:>11.4} {:>15}",
                task.name,
                label,
                a.params,
                a.loss,
                format!("{} {:.1}%", short_metric(task), 100.0 * a.metric)
            )?;
        }
    }
    for (task, rows) in results {
        for (i, held_out) in task.held_out.iter().take(SAMPLES).enumerate() {
            writeln!(
                text,
                "\n{} — held-out input {}:\n  {}",
                task.name,
                i + 1,
                held_out.prompt
            )?;
            for (label, a) in rows {
                let sample = a.samples.get(i).map_or("", String::as_str);
                writeln!(text, "  {label:<22} | {sample}")?;
            }
        }
    }
    Ok(text)
}

fn short_metric(task: &Task) -> &'static str {
    match task.metric {
        tasks::Metric::SlotAccuracy => "slots",
        tasks::Metric::Accuracy => "acc",
    }
}

fn write_jsonl(path: &Path, rows: impl Iterator<Item = serde_json::Value>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
