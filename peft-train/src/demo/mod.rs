//! The offline demonstration: `cargo run --release -p peft-train` with no arguments.
//!
//! No pretrained GPT-2 can be downloaded here, so the demo makes its own base model: a small
//! GPT-2 (3 layers, width 96) pretrained once on generated restaurant descriptions in the
//! style of the E2E NLG data, cached in the output directory and reused by later runs. The base
//! model is then frozen, and prompt tuning and prefix tuning adapt it to two tasks it never saw:
//!
//! - data-to-text: a meaning representation (`The Mill | pub | Indian | ...`) to a
//!   description, scored by the loss on held-out descriptions;
//! - classification: whether a described restaurant is family friendly (` yes` / ` no`),
//!   scored by held-out accuracy.
//!
//! Each tuned adapter is compared on the same held-out data with the frozen model and with a
//! full fine-tune of it (the reference adapters are measured against), and saved.
//! With `--model gpt2` the same tasks run on real GPT-2 (from the Hugging Face cache or hub).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use peft_core::Adapter;
use peft_decoder::Adapted;
use peft_gpt2::{Gpt2, Gpt2Config, save_pretrained};
use peft_runtime::ComputeBackend;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::data::{Overlong, read_examples, tokenize};
use crate::eval::evaluate;
use crate::train::Interrupted;
use crate::train::trainee::{ExampleBatcher, Trainee};
use crate::train::{AdapterSpec, Method, Schedule, TrainArgs, TrainSettings};
use peft_runtime::{DeviceArg, LoadedModel};

/// The restaurant-domain BPE tokenizer the fixtures use (320 tokens).
/// The demo's arguments.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Base model; by default a small GPT-2 pretrained here once on a generated corpus.
    #[arg(long)]
    pub model: Option<String>,
    /// Where the demo keeps its cache and results.
    #[arg(long, default_value = "artifacts/demo")]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
}

const TOKENIZER_JSON: &str = include_str!("../../../fixtures/tokenizer/tokenizer.json");

const NAMES_FIRST: [&str; 10] = [
    "The", "Blue", "Golden", "Old", "Little", "Red", "Green", "Royal", "Silver", "Happy",
];
const NAMES_SECOND: [&str; 10] = [
    "Eagle",
    "Mill",
    "Phoenix",
    "Wrestlers",
    "Punter",
    "Cricketers",
    "Plough",
    "Rice Boat",
    "Vaults",
    "Olive Grove",
];
const KINDS: [&str; 3] = ["pub", "restaurant", "coffee shop"];
const FOODS: [&str; 7] = [
    "Indian",
    "Italian",
    "French",
    "Chinese",
    "English",
    "Japanese",
    "fast food",
];
const PRICES: [&str; 3] = ["cheap", "moderately priced", "expensive"];
const AREAS: [&str; 2] = ["city centre", "riverside"];

#[derive(Clone, Debug)]
struct Restaurant {
    name: String,
    kind: &'static str,
    food: &'static str,
    price: &'static str,
    area: &'static str,
    family: bool,
}

impl Restaurant {
    fn random(rng: &mut StdRng) -> Self {
        Self {
            name: format!(
                "{} {}",
                NAMES_FIRST.choose(rng).unwrap(),
                NAMES_SECOND.choose(rng).unwrap()
            ),
            kind: KINDS.choose(rng).unwrap(),
            food: FOODS.choose(rng).unwrap(),
            price: PRICES.choose(rng).unwrap(),
            area: AREAS.choose(rng).unwrap(),
            family: rng.random_bool(0.5),
        }
    }

    fn family_phrase(&self) -> &'static str {
        if self.family {
            "is family friendly"
        } else {
            "is not family friendly"
        }
    }

    /// The canonical description: the data-to-text target.
    fn describe(&self) -> String {
        format!(
            "{} is a {} {} serving {} food in the {}. It {}.",
            self.name,
            self.price,
            self.kind,
            self.food,
            self.area,
            self.family_phrase()
        )
    }

    /// Varied descriptions for pretraining.
    fn describe_varied(&self, rng: &mut StdRng) -> String {
        match rng.random_range(0..3) {
            0 => self.describe(),
            1 => format!(
                "In the {} there is a {} {} called {}. It serves {} food and {}.",
                self.area,
                self.price,
                self.kind,
                self.name,
                self.food,
                self.family_phrase()
            ),
            _ => format!(
                "{} serves {} food. This {} {} is in the {} and {}.",
                self.name,
                self.food,
                self.price,
                self.kind,
                self.area,
                self.family_phrase()
            ),
        }
    }

    fn meaning(&self) -> String {
        format!(
            "name[{}], eatType[{}], food[{}], priceRange[{}], area[{}], familyFriendly[{}]",
            self.name,
            self.kind,
            self.food,
            self.price,
            self.area,
            if self.family { "yes" } else { "no" }
        )
    }
}

/// Sizes of the demo; small enough for a 2-core CPU in a few minutes.
struct Plan {
    pretrain_texts: usize,
    /// Of which held out to validate the pretraining.
    pretrain_valid: usize,
    pretrain_epochs: usize,
    task_train: usize,
    task_valid: usize,
    task_epochs: usize,
    virtual_tokens: usize,
}

const PLAN: Plan = Plan {
    pretrain_texts: 1760,
    pretrain_valid: 160,
    pretrain_epochs: 2,
    task_train: 240,
    task_valid: 60,
    task_epochs: 3,
    virtual_tokens: 10,
};

pub fn run(args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let out = &args.output_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let model = match &args.model {
        Some(model) => {
            println!("base model: {model}");
            model.clone()
        }
        None => pretrained_base(out, &args.device)?,
    };
    let data = write_task_data(&out.join("data"))?;
    let mut report = String::new();
    writeln!(
        report,
        "\n{:<16} {:<22} {:>10} {:>11} {:>9}",
        "task", "model", "trainable", "valid loss", "accuracy"
    )?;
    for task in ["data-to-text", "family-friendly"] {
        let (train, valid) = (
            &data.join(format!("{task}-train.jsonl")),
            &data.join(format!("{task}-valid.jsonl")),
        );
        let frozen = score(&model, None, valid, &args.device)?;
        writeln!(
            report,
            "{:<16} {:<22} {:>10} {:>11.4} {:>9}",
            task,
            "frozen base",
            0,
            frozen.loss,
            accuracy(frozen.accuracy)
        )?;
        for (method, label) in [
            (Method::Prompt, "prompt tuning"),
            (Method::Prefix, "prefix tuning"),
            (Method::Full, "full fine-tuning"),
        ] {
            let run_dir = out
                .join("runs")
                .join(format!("{task}-{label}").replace(' ', "-"));
            let _ = std::fs::remove_dir_all(&run_dir);
            let outcome = crate::train::train(&task_args(
                &model,
                method,
                train,
                valid,
                &run_dir,
                &args.device,
            ))?;
            if outcome.interrupted {
                return Err(Interrupted {
                    saved: outcome.adapter_dir,
                }
                .into());
            }
            // Full fine-tuning saves a whole model; an adapter goes over the frozen base.
            let (name, scored, trainable) = if method == Method::Full {
                let trained = outcome.adapter_dir.to_string_lossy();
                let scored = score(&trained, None, valid, &args.device)?;
                let trainable = scored.all_params;
                (label.to_string(), scored, trainable)
            } else {
                let scored = score(&model, Some(&outcome.adapter_dir), valid, &args.device)?;
                let trainable = scored.adapter_params;
                let name = format!("{label} (p={})", PLAN.virtual_tokens);
                (name, scored, trainable)
            };
            writeln!(
                report,
                "{:<16} {:<22} {:>10} {:>11.4} {:>9}",
                task,
                name,
                trainable,
                scored.loss,
                accuracy(scored.accuracy)
            )?;
        }
    }
    println!("{report}");
    println!(
        "adapters (PEFT format) in {}/runs/*/adapter, fully fine-tuned models in runs/*/model; \
         finished in {:.0?}",
        out.display(),
        started.elapsed()
    );
    std::fs::write(out.join("report.txt"), report)?;
    Ok(())
}

fn accuracy(value: Option<f64>) -> String {
    value.map_or("-".into(), |a| format!("{:.1}%", 100.0 * a))
}

/// The demo's own base model, pretrained once and cached in `out/base/model`.
fn pretrained_base(out: &Path, device: &DeviceArg) -> Result<String> {
    // Versioned: a change to the corpus or the shape must not reuse an old cache.
    let base_dir = out.join("base-v2");
    let model_dir = base_dir.join("model");
    if model_dir.join("model.safetensors").is_file() {
        println!(
            "base model: the demo's small GPT-2, cached in {}",
            model_dir.display()
        );
        return Ok(model_dir.to_string_lossy().into_owned());
    }
    println!(
        "base model: a small GPT-2 (3 layers, width 96, vocabulary 320), pretrained now on {} \
         generated restaurant descriptions (cached for later runs)",
        PLAN.pretrain_texts
    );
    let init_dir = base_dir.join("init");
    let mut config = Gpt2Config::new(320, 192, 96, 3, 4);
    config.eos_token_id = 0;
    config.bos_token_id = 0;
    let backend = device.device.unwrap_or_else(ComputeBackend::best_available);
    let init_device = backend.device()?;
    init_device.seed(7);
    save_pretrained(&Gpt2::new(&config, &init_device), &config, &init_dir)?;
    std::fs::write(init_dir.join("tokenizer.json"), TOKENIZER_JSON)?;

    let mut rng = StdRng::seed_from_u64(1);
    let texts: Vec<String> = (0..PLAN.pretrain_texts)
        .map(|_| Restaurant::random(&mut rng).describe_varied(&mut rng))
        .collect();
    let (train_texts, valid_texts) = texts.split_at(texts.len() - PLAN.pretrain_valid);
    let corpus = base_dir.join("corpus.jsonl");
    write_jsonl(&corpus, train_texts.iter().map(|t| json!({ "text": t })))?;
    let corpus_valid = base_dir.join("corpus-valid.jsonl");
    write_jsonl(
        &corpus_valid,
        valid_texts.iter().map(|t| json!({ "text": t })),
    )?;
    let run_dir = base_dir.join("pretrain");
    let _ = std::fs::remove_dir_all(&run_dir);
    let task = task_args(
        &init_dir.to_string_lossy(),
        Method::Full,
        &corpus,
        &corpus,
        &run_dir,
        device,
    );
    let args = TrainArgs {
        valid_data: None,
        settings: TrainSettings {
            epochs: PLAN.pretrain_epochs,
            lr: 3e-3,
            batch_size: 16,
            schedule: Schedule::Cosine,
            warmup_steps: 20,
            ..task.settings
        },
        ..task
    };
    let outcome = crate::train::train(&args)?;
    if outcome.interrupted {
        return Err(Interrupted {
            saved: outcome.adapter_dir,
        }
        .into());
    }
    std::fs::rename(&outcome.adapter_dir, &model_dir)?;
    Ok(model_dir.to_string_lossy().into_owned())
}

fn task_args(
    model: &str,
    method: Method,
    train: &Path,
    valid: &Path,
    output_dir: &Path,
    device: &DeviceArg,
) -> TrainArgs {
    TrainArgs {
        model: model.to_string(),
        data: train.to_path_buf(),
        valid_data: Some(valid.to_path_buf()),
        output_dir: output_dir.to_path_buf(),
        adapter: AdapterSpec {
            method,
            num_virtual_tokens: PLAN.virtual_tokens,
            prefix_projection: (method == Method::Prefix).then_some(64),
            ..AdapterSpec::default()
        },
        settings: TrainSettings {
            epochs: PLAN.task_epochs,
            // Adapters start from scratch and train few parameters; full fine-tuning moves
            // pretrained weights, which a rate this high would wreck.
            lr: if method == Method::Full { 1e-3 } else { 3e-2 },
            schedule: Schedule::Linear,
            warmup_steps: 10,
            grad_clip: Some(1.0),
            ..TrainSettings::default()
        },
        no_token_cache: false,
        resume: false,
        device: device.clone(),
    }
}

/// Held-out data for both tasks, from restaurants disjoint from each other's splits.
fn write_task_data(dir: &Path) -> Result<PathBuf> {
    let mut rng = StdRng::seed_from_u64(2);
    let restaurants: Vec<Restaurant> = (0..PLAN.task_train + PLAN.task_valid)
        .map(|_| Restaurant::random(&mut rng))
        .collect();
    let (train, valid) = restaurants.split_at(PLAN.task_train);
    for (split, rows) in [("train", train), ("valid", valid)] {
        write_jsonl(
            &dir.join(format!("data-to-text-{split}.jsonl")),
            rows.iter().map(|r| json!({ "prompt": format!("{} =>", r.meaning()), "completion": format!(" {}", r.describe()) })),
        )?;
        write_jsonl(
            &dir.join(format!("family-friendly-{split}.jsonl")),
            rows.iter().map(|r| {
                let mut rng = StdRng::seed_from_u64(r.name.len() as u64);
                json!({ "text": format!("{} Family friendly?", r.describe_varied(&mut rng)), "label": if r.family { "yes" } else { "no" } })
            }),
        )?;
    }
    Ok(dir.to_path_buf())
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

/// How a model (with its adapter, if any) does on held-out data.
struct Score {
    /// Mean next-token loss over every target token.
    loss: f64,
    /// When the data is labelled.
    accuracy: Option<f64>,
    adapter_params: usize,
    /// The base model's and the adapter's together.
    all_params: usize,
}

fn score(model: &str, adapter: Option<&Path>, valid: &Path, device: &DeviceArg) -> Result<Score> {
    let loaded = LoadedModel::load(model, device.device, false)?;
    let adapter = loaded.load_optional_adapter(adapter)?;
    let max_len = loaded
        .config
        .positions_after(adapter.as_ref().map_or(0, Adapter::num_virtual_tokens))?;
    let dataset = tokenize(
        valid,
        read_examples(valid)?,
        loaded.vocabulary(),
        max_len,
        Overlong::Reject,
        None,
    )?;
    let model = Adapted::new(loaded.model.clone(), adapter);
    let params = model.parameter_count();
    let report = evaluate(&model, &dataset.examples, loaded.pad_id(), 16)?;
    let accuracy = match &dataset.verbalizer {
        None => None,
        Some(verbalizer) => {
            let trainee = Trainee::new(model, Some(verbalizer.deciding_tokens()), None);
            let batcher = ExampleBatcher {
                shared_label_prefix: verbalizer.shared_prefix,
            };
            let mut correct = 0usize;
            for chunk in dataset.examples.chunks(16) {
                use burn::data::dataloader::batcher::Batcher;
                let batch = batcher.batch(chunk.to_vec(), &loaded.device);
                let (scores, classes) = trainee.forward(batch).classes.expect("labelled data");
                let predicted = scores.argmax(1).reshape([chunk.len()]);
                correct += predicted.equal(classes).int().sum().into_scalar::<i64>() as usize;
            }
            Some(correct as f64 / dataset.examples.len() as f64)
        }
    };
    Ok(Score {
        loss: report.mean_loss,
        accuracy,
        adapter_params: params.trainable,
        all_params: params.total,
    })
}
