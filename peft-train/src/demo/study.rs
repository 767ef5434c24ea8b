//! `peft-train demo --study`: the knobs of prompt and prefix tuning, each varied alone on the
//! demo's held-out data, written as `report.md` with loss curves and metric bars.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use peft_runtime::{DeviceArg, LoadedModel};

use super::tasks::{self, DATA_TO_TEXT, FOOD, Task};
use super::{PLAN, Trial, method_label, method_spec, run_name, run_trial};
use crate::train::{AdapterSpec, Method, PromptInitArg};

/// Text of the task-text initialisation: what a person would write to ask for the task.
const INIT_TEXT: &str = "Describe the restaurant from its attributes.";

/// One varied knob: the configurations compared, each trained on a task's data.
struct Section {
    slug: &'static str,
    title: &'static str,
    question: &'static str,
    configurations: Vec<(String, AdapterSpec)>,
}

pub fn run(model: &str, tasks: &[Task], out: &Path, device: &DeviceArg, seed: u64) -> Result<()> {
    let started = Instant::now();
    let find = |name| {
        tasks
            .iter()
            .find(|t| t.name == name)
            .with_context(|| format!("the demo has no task {name}"))
    };
    let (data_to_text, food) = (find(DATA_TO_TEXT)?, find(FOOD)?);
    let figures = out.join("study");
    std::fs::create_dir_all(&figures)?;
    let mut trials = Trials {
        model,
        runs: out.join("study-runs"),
        device,
        seed,
        done: HashMap::new(),
    };

    let mut report = format!(
        "# Prompt and prefix tuning on the demo's base model: a study\n\n\
         Each section varies one knob and keeps the rest at the demo's settings \
         ({} virtual tokens, {} epochs over {} training examples ({} for full fine-tuning and the \
         food question), learning rate {:e} for prompts, {:e} for prefixes and {:e} for full \
         fine-tuning). Every figure is measured on held-out data of the **{}** task ({} meaning \
         representations the adapters never saw): the mean next-token loss of the reference \
         descriptions, and the slot accuracy of greedy outputs (the share of attribute values \
         the generated text mentions). Written by `peft-train demo --study`.\n",
        PLAN.virtual_tokens,
        PLAN.writing_adapter_epochs,
        PLAN.sizes.train,
        PLAN.epochs,
        PLAN.prompt_lr,
        PLAN.prefix_lr,
        PLAN.full_lr,
        DATA_TO_TEXT,
        PLAN.sizes.valid,
    );

    // The per-layer projection's shared embedding at half the prefix's width.
    let half_width = LoadedModel::load(model, device, false)?
        .shapes()
        .prefix
        .d_model
        / 2;
    for section in sections(half_width.max(1)) {
        let mut rows = Vec::new();
        for (label, spec) in &section.configurations {
            rows.push((
                label.clone(),
                trials.get(spec, &data_to_text.train, data_to_text)?,
            ));
        }
        write_section(&mut report, &figures, &section, &rows)?;
    }

    // Multi-task: one prompt trained on both tasks' data against one prompt per task.
    let mixture = out.join("data").join("data-to-text-and-food.jsonl");
    tasks::write_mixture(&[data_to_text, food], &mixture)?;
    let prompt = method_spec(Method::Prompt);
    let separate = (
        trials.get(&prompt, &data_to_text.train, data_to_text)?,
        trials.get(&prompt, &food.train, food)?,
    );
    let shared = (
        trials.get(&prompt, &mixture, data_to_text)?,
        trials.get(&prompt, &mixture, food)?,
    );
    writeln!(
        report,
        "\n## Multi-task: one prompt for two tasks\n\n\
         Does one soft prompt, trained on the data-to-text and food examples shuffled together, \
         do both tasks as well as a prompt per task? (The food task asks which cuisine a \
         description names; its metric is held-out accuracy.)\n\n\
         | prompts | trainable | data-to-text loss | slot accuracy | food loss | food accuracy |\n\
         |---|---:|---:|---:|---:|---:|"
    )?;
    for (label, (text, food), trainable) in [
        ("one per task", &separate, 2 * separate.0.assessment.params),
        ("one shared", &shared, shared.0.assessment.params),
    ] {
        writeln!(
            report,
            "| {label} | {trainable} | {:.4} | {:.1}% | {:.4} | {:.1}% |",
            text.assessment.loss,
            100.0 * text.assessment.metric,
            food.assessment.loss,
            100.0 * food.assessment.metric
        )?;
    }
    writeln!(
        report,
        "\n---\nAll runs on {}, in {:.0} s. Each run's adapter, metrics and loss plot are in \
         `study-runs/`.",
        format!(
            "{:?}",
            device
                .device
                .unwrap_or_else(peft_runtime::ComputeBackend::best_available)
        )
        .to_lowercase(),
        started.elapsed().as_secs_f64()
    )?;
    let path = out.join("report.md");
    peft_runtime::write_atomically(&path, report.as_bytes())?;
    println!("{report}\nthe study is in {}", path.display());
    Ok(())
}

/// Trials run so far, by run directory: a configuration that several sections share, or a
/// mixture that several tasks are assessed on, is trained once.
struct Trials<'a> {
    model: &'a str,
    runs: std::path::PathBuf,
    device: &'a DeviceArg,
    seed: u64,
    done: HashMap<String, Trial>,
}

impl Trials<'_> {
    fn get(&mut self, spec: &AdapterSpec, train: &Path, task: &Task) -> Result<Trial> {
        let key = run_name(task, spec, train);
        if let Some(trial) = self.done.get(&key) {
            if trial.task == task.name {
                return Ok(trial.clone());
            }
            // One run trained on several tasks' data, assessed on another of them.
            return trial.on(self.model, task, self.device);
        }
        println!("study: {key}");
        let trial = run_trial(
            self.model,
            spec,
            train,
            task,
            &self.runs,
            self.device,
            self.seed,
        )?;
        self.done.insert(key, trial.clone());
        Ok(trial)
    }
}

fn sections(per_layer_width: usize) -> Vec<Section> {
    let prompt = method_spec(Method::Prompt);
    let prefix = method_spec(Method::Prefix);
    let methods = [Method::Prompt, Method::Prefix, Method::Full]
        .map(|m| (method_label(&method_spec(m)), method_spec(m)));
    let init = |init, text: Option<&str>| AdapterSpec {
        prompt_init: init,
        prompt_init_text: text.map(str::to_string),
        ..prompt.clone()
    };
    vec![
        Section {
            slug: "methods",
            title: "The methods",
            question: "How far do prompt tuning and prefix tuning get towards full fine-tuning?",
            configurations: methods.to_vec(),
        },
        Section {
            slug: "prompt-init",
            title: "Prompt initialisation",
            question: "Does it matter where the soft prompt starts: random vectors (N(0, 1), \
                       PEFT's `RANDOM`), embeddings of tokens sampled from the vocabulary, or \
                       the embeddings of a task description (PEFT's `TEXT`, here \
                       \"Describe the restaurant from its attributes.\")?",
            configurations: vec![
                ("random".into(), init(PromptInitArg::Random, None)),
                (
                    "sampled vocabulary".into(),
                    init(PromptInitArg::SampleVocab, None),
                ),
                (
                    "task text".into(),
                    init(PromptInitArg::Text, Some(INIT_TEXT)),
                ),
            ],
        },
        Section {
            slug: "prompt-length",
            title: "Prompt length",
            question: "How many virtual tokens does the prompt need?",
            configurations: [5, 10, 20, 50]
                .map(|p| {
                    (
                        format!("p = {p}"),
                        AdapterSpec {
                            num_virtual_tokens: p,
                            ..prompt.clone()
                        },
                    )
                })
                .to_vec(),
        },
        Section {
            slug: "prefix-encoders",
            title: "Prefix encoders",
            question: "Does the prefix train better as a direct table of keys and values, \
                       through PEFT's MLP, or through one shared embedding projected to each \
                       layer?",
            configurations: vec![
                (
                    "direct table".into(),
                    AdapterSpec {
                        prefix_projection: None,
                        ..prefix.clone()
                    },
                ),
                (
                    format!("PEFT's MLP (hidden {})", PLAN.prefix_projection),
                    prefix.clone(),
                ),
                (
                    format!("per-layer projection (width {per_layer_width})"),
                    AdapterSpec {
                        prefix_projection: None,
                        prefix_layer_projection: Some(per_layer_width),
                        ..prefix.clone()
                    },
                ),
            ],
        },
        Section {
            slug: "prompt-dropout",
            title: "Prompt dropout",
            question: "Does dropout on the soft prompt's vectors during training help on \
                       held-out data?",
            configurations: [0.0, 0.1, 0.3]
                .map(|rate| {
                    (
                        format!("dropout {rate}"),
                        AdapterSpec {
                            prompt_dropout: rate,
                            ..prompt.clone()
                        },
                    )
                })
                .to_vec(),
        },
    ]
}

/// A section's table, its loss curves and its metric bars.
fn write_section(
    report: &mut String,
    figures: &Path,
    section: &Section,
    rows: &[(String, Trial)],
) -> Result<()> {
    writeln!(
        report,
        "\n## {}\n\n{}\n\n\
         | configuration | trainable | valid loss | slot accuracy | training time |\n\
         |---|---:|---:|---:|---:|",
        section.title, section.question
    )?;
    for (label, trial) in rows {
        let a = &trial.assessment;
        writeln!(
            report,
            "| {label} | {} | {:.4} | {:.1}% | {:.0} s |",
            a.params,
            a.loss,
            100.0 * a.metric,
            trial.seconds
        )?;
    }
    let curves_png = format!("{}-loss.png", section.slug);
    let runs: Vec<(String, Vec<(f64, f64)>)> = rows
        .iter()
        .map(|(label, trial)| (label.clone(), trial.curves.train.clone()))
        .collect();
    super::charts::loss_curves(&figures.join(&curves_png), section.title, &runs, 10)?;
    let metric_png = format!("{}-slots.png", section.slug);
    let values: Vec<(String, f64)> = rows
        .iter()
        .map(|(label, trial)| (label.clone(), trial.assessment.metric))
        .collect();
    super::charts::bars(
        &figures.join(&metric_png),
        &format!("{}: held-out slot accuracy", section.title),
        "slot accuracy (%)",
        &values,
    )?;
    writeln!(
        report,
        "\n![training loss]({0}/{curves_png}) ![slot accuracy]({0}/{metric_png})",
        figures
            .file_name()
            .map_or("study".into(), |name| name.to_string_lossy())
    )?;
    Ok(())
}
