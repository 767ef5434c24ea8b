//! `peft-train train`: adapter (or full) training through Burn's `SupervisedTraining` and
//! `Learner`, with adapter-only checkpoints, resume, and at the end a PEFT-format adapter,
//! `metrics.json` and `loss.png`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::prelude::*;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, LearnerSummary, MetricEarlyStoppingStrategy,
    StoppingCondition, SupervisedTraining,
};
use peft_core::{
    AdapterModule, PeftAdapter, PromptInit, PromptLearningConfig, PromptTuningConfig,
    PromptTuningInit,
};
use peft_gpt2::AdaptedGpt2;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    AtomicCheckpointer, ModelCheckpointer, OPTIMIZER, SCHEDULER, TimedKeepLast, last_complete_epoch,
};
use crate::cli::{Method, PromptInitArg, Schedule, TrainArgs};
use crate::data::{Dataset, load_tokenized};
use crate::epochs::{EpochClock, EpochShuffled};
use crate::loaded::LoadedModel;
use crate::plot::LossCurves;
use crate::progress::PlainProgress;
use crate::token_cache::TokenCache;
use crate::trainee::{ExampleBatcher, Trainee};

/// What identifies a run, kept in `OUTPUT_DIR/run.json` so `--resume` continues the same one.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RunIdentity {
    model: String,
    method: String,
    num_virtual_tokens: usize,
    prefix_projection: Option<usize>,
}

/// Per-epoch figures written to `metrics.json`.
#[derive(Debug, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    /// Training tokens per second over the epoch (its validation included).
    pub tokens_per_second: Option<f64>,
    /// Seconds since this process started training.
    pub elapsed_seconds: Option<f64>,
}

pub struct TrainOutcome {
    /// `OUTPUT_DIR/adapter` (PEFT format), or `OUTPUT_DIR/model` for full fine-tuning.
    pub adapter_dir: PathBuf,
    /// Stopped by the user before the last epoch.
    pub interrupted: bool,
}

pub fn train(args: &TrainArgs) -> Result<TrainOutcome> {
    let loaded = LoadedModel::load(&args.model, args.device.device, true)?;
    let device = loaded.device.clone();
    device.seed(args.seed);
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let checkpoint_dir = args.output_dir.join("train").join("checkpoint");
    let resume_epoch = check_resume(args, &checkpoint_dir)?;

    let adapter = match args.method {
        Method::Full => None,
        _ => Some(new_adapter(args, &loaded)?),
    };
    let virtual_tokens = adapter
        .as_ref()
        .map_or(0, |a| a.config.base().num_virtual_tokens);
    let max_len = loaded
        .config
        .n_positions
        .checked_sub(virtual_tokens)
        .filter(|&n| n > 1)
        .with_context(|| {
            format!(
                "{virtual_tokens} virtual tokens leave no room in the model's {} positions",
                loaded.config.n_positions
            )
        })?;
    let train_set = load_dataset(&args.data, &loaded, max_len, args, None)?;
    let valid_set = match &args.valid_data {
        Some(path) => load_dataset(path, &loaded, max_len, args, train_set.verbalizer.clone())?,
        None => {
            tracing::warn!("no --valid-data: validating on the training data");
            train_set.clone()
        }
    };
    let classification =
        train_set.verbalizer.is_some() && valid_set.examples.iter().all(|e| e.class.is_some());

    let base = loaded.model.clone();
    let model = match adapter {
        Some(adapter) => AdaptedGpt2::new(base, Some(adapter)),
        None => AdaptedGpt2::full_finetune(base),
    };
    println!("{}", model.parameter_count());
    let trainee = Trainee {
        model,
        class_tokens: train_set.verbalizer.as_ref().map(|v| v.deciding_tokens()),
        max_grad_norm: args.grad_clip.map(|clip| clip as f32),
    };

    let steps_per_epoch = train_set
        .examples
        .len()
        .div_ceil(args.batch_size)
        .div_ceil(args.grad_accumulation)
        .max(1);
    let (epochs, items_per_epoch) = plan_epochs(args, train_set.examples.len(), steps_per_epoch);
    let total_steps = epochs
        * steps_per_epoch.min(items_per_epoch.div_ceil(args.batch_size * args.grad_accumulation));
    let train_tokens_per_epoch: usize = train_set
        .examples
        .iter()
        .take(items_per_epoch)
        .map(|e| e.ids.len())
        .sum();

    let batcher = ExampleBatcher {
        pad_id: loaded.tokenizer.eos_id(),
        shared_label_prefix: train_set.verbalizer.as_ref().map_or(0, |v| v.shared_prefix),
    };
    // Epoch orders and dropout follow from (seed, epoch), so a resumed run matches.
    let clock = EpochClock::new(device.clone(), args.seed);
    let mut train_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(args.batch_size)
        .build(EpochShuffled::new(
            train_set.examples.clone(),
            clock.clone(),
        ));
    if items_per_epoch < train_set.examples.len() {
        train_loader = train_loader.slice(0, items_per_epoch);
    }
    let valid_loader = DataLoaderBuilder::new(batcher)
        .batch_size(args.batch_size)
        .build(InMemDataset::new(valid_set.examples.clone()));

    let optimizer = adamw(args.weight_decay);
    let scheduler = ModuleLrSchedulerConfig::new(lr_schedule(args, total_steps))
        .init()
        .map_err(|e| anyhow::anyhow!("invalid learning-rate schedule: {e}"))?;

    let keep_prefix = (args.method != Method::Full).then(|| "model.adapter".to_string());
    let epoch_ends = Arc::new(Mutex::new(Vec::new()));
    let interrupter = Interrupter::new();
    install_ctrl_c(interrupter.clone());
    let mut training =
        SupervisedTraining::new(args.output_dir.join("train"), train_loader, valid_loader)
            .metric_train_numeric(LossMetric::new())
            .metric_valid_numeric(LossMetric::new())
            .metric_train_numeric(LearningRateMetric::new())
            .with_custom_checkpointers(
                ModelCheckpointer {
                    dir: checkpoint_dir.clone(),
                    keep_prefix,
                },
                AtomicCheckpointer {
                    dir: checkpoint_dir.clone(),
                    name: OPTIMIZER,
                },
                AtomicCheckpointer {
                    dir: checkpoint_dir.clone(),
                    name: SCHEDULER,
                },
            )
            .with_checkpointing_strategy(TimedKeepLast::new(epoch_ends.clone(), clock.clone()))
            .grads_accumulation(args.grad_accumulation)
            .with_training_strategy(ExecutionStrategy::single(device.clone()).into())
            .with_interrupter(interrupter)
            .with_application_logger(None)
            .num_epochs(epochs);
    if !std::io::stdout().is_terminal() {
        training = training.renderer(Box::new(PlainProgress::default()));
    }
    if classification {
        training = training
            .metric_train_numeric(AccuracyMetric::new())
            .metric_valid_numeric(AccuracyMetric::new());
    }
    if let Some(patience) = args.early_stopping {
        training = training.early_stopping(MetricEarlyStoppingStrategy::new(
            &LossMetric::new(),
            Aggregate::Mean,
            Direction::Lowest,
            Split::Valid,
            StoppingCondition::NoImprovementSince { n_epochs: patience },
        ));
    }
    if let Some(epoch) = resume_epoch {
        println!(
            "resuming after epoch {epoch} from {}",
            checkpoint_dir.display()
        );
        training = training.checkpoint(epoch);
        clock.epoch_completed(epoch);
    }

    let started = Instant::now();
    let result = training.launch(Learner::new(trainee, optimizer.init(), scheduler));
    if let Some(error) = result.error {
        bail!("training failed: {error}");
    }
    let interrupted = result.interrupted.is_some();
    let trained = result.model.model;
    // What was trained: the adapter, or the whole model for full fine-tuning.
    let saved = if trained.adapter.is_some() {
        "adapter"
    } else {
        "model"
    };
    let adapter_dir = if interrupted {
        args.output_dir.join(format!("{saved}-interrupted"))
    } else {
        args.output_dir.join(saved)
    };
    save_trained(&trained, &loaded, &adapter_dir)?;
    let epochs = epoch_metrics(
        &args.output_dir.join("train"),
        &epoch_ends,
        started,
        train_tokens_per_epoch,
        classification,
    );
    let json = serde_json::to_string_pretty(&epochs)?;
    peft_core::adapter::write_atomically(&args.output_dir.join("metrics.json"), json.as_bytes())?;
    // The plot is a convenience: failing to draw it must not fail a finished run.
    let plot = args.output_dir.join("loss.png");
    if let Err(err) =
        LossCurves::read(&args.output_dir.join("train"), epochs.len()).write_png(&plot)
    {
        tracing::warn!("no loss plot at {}: {err:#}", plot.display());
    }
    if interrupted {
        println!(
            "interrupted: the adapter as it was is in {}; `--resume` continues from the last checkpoint",
            adapter_dir.display()
        );
    }
    Ok(TrainOutcome {
        adapter_dir,
        interrupted,
    })
}

/// Refuses to start over a previous run's checkpoints unless resuming it, and to resume a
/// different run. Returns the epoch to resume after.
fn check_resume(args: &TrainArgs, checkpoint_dir: &Path) -> Result<Option<usize>> {
    let identity = RunIdentity {
        model: args.model.clone(),
        method: format!("{:?}", args.method).to_lowercase(),
        num_virtual_tokens: args.num_virtual_tokens,
        prefix_projection: args.prefix_projection,
    };
    let identity_path = args.output_dir.join("run.json");
    let last = last_complete_epoch(checkpoint_dir);
    if !args.resume {
        if let Some(epoch) = last {
            bail!(
                "{} already holds checkpoints (up to epoch {epoch}) of an earlier run; pass \
                 --resume to continue it, or choose another --output-dir",
                args.output_dir.display()
            );
        }
        let json = serde_json::to_string_pretty(&identity)?;
        peft_core::adapter::write_atomically(&identity_path, json.as_bytes())?;
        return Ok(None);
    }
    let Some(epoch) = last else {
        bail!(
            "--resume: no complete checkpoint in {}",
            checkpoint_dir.display()
        );
    };
    let recorded: RunIdentity = serde_json::from_str(
        &std::fs::read_to_string(&identity_path)
            .with_context(|| format!("reading {}", identity_path.display()))?,
    )
    .with_context(|| format!("reading {}", identity_path.display()))?;
    if recorded != identity {
        bail!(
            "--resume: {} was a different run ({recorded:?}); rerun with the same --model, \
             --method, --num-virtual-tokens and --prefix-projection",
            args.output_dir.display()
        );
    }
    Ok(Some(epoch))
}

fn load_dataset(
    path: &Path,
    loaded: &LoadedModel,
    max_len: usize,
    args: &TrainArgs,
    verbalizer: Option<crate::data::Verbalizer>,
) -> Result<Dataset> {
    let cache = if args.no_token_cache {
        None
    } else {
        TokenCache::default_location()
    };
    let (dataset, cached) = load_tokenized(
        path,
        &loaded.tokenizer,
        max_len,
        args.overlong,
        verbalizer,
        cache.as_ref(),
    )?;
    println!(
        "{}: {} examples{}{}",
        path.display(),
        dataset.examples.len(),
        if dataset.truncated > 0 {
            format!(", {} truncated to {max_len} tokens", dataset.truncated)
        } else {
            String::new()
        },
        if cached {
            " (tokens from the cache)"
        } else {
            ""
        }
    );
    Ok(dataset)
}

/// An adapter of the requested kind, initialised as asked.
fn new_adapter(args: &TrainArgs, loaded: &LoadedModel) -> Result<PeftAdapter> {
    let shape = loaded.shape();
    let device = &loaded.device;
    let p = args.num_virtual_tokens;
    if p == 0 {
        bail!("--num-virtual-tokens must be at least 1");
    }
    let base = PromptLearningConfig::new(p, shape).for_base_model(&args.model);
    match args.method {
        Method::Prompt => {
            let token_table = || loaded.model.wte.weight.val().detach();
            let (init, kind) = if let Some(dir) = &args.prompt_init_from {
                let from = loaded.load_adapter(dir)?;
                let table = match &from.module {
                    AdapterModule::Prompt(prompt) => prompt.embedding.val().detach(),
                    AdapterModule::Prefix(_) => bail!(
                        "--prompt-init-from {} is a prefix adapter, not a prompt",
                        dir.display()
                    ),
                };
                if table.dims()[0] != p {
                    bail!(
                        "--prompt-init-from {} has {} virtual tokens, --num-virtual-tokens is {p}",
                        dir.display(),
                        table.dims()[0]
                    );
                }
                (PromptInit::From { prompt: table }, PromptTuningInit::Random)
            } else {
                match args.prompt_init {
                    PromptInitArg::Random => (
                        PromptInit::Random {
                            std: args.prompt_init_std,
                        },
                        PromptTuningInit::Random,
                    ),
                    PromptInitArg::SampleVocab => (
                        PromptInit::SampleVocab {
                            token_embeddings: token_table(),
                        },
                        PromptTuningInit::SampleVocab,
                    ),
                    PromptInitArg::Text => {
                        let text = args
                            .prompt_init_text
                            .as_deref()
                            .context("--prompt-init text needs --prompt-init-text")?;
                        let ids: Vec<i64> = loaded
                            .tokenizer
                            .encode(text)?
                            .into_iter()
                            .map(i64::from)
                            .collect();
                        if ids.is_empty() {
                            bail!("--prompt-init-text has no tokens");
                        }
                        let ids = Tensor::<1, Int>::from_data(
                            TensorData::new(ids.clone(), [ids.len()]),
                            device,
                        );
                        (
                            PromptInit::Text {
                                text_embeddings: token_table().select(0, ids),
                            },
                            PromptTuningInit::Text,
                        )
                    }
                }
            };
            let config = PromptTuningConfig {
                base,
                prompt_tuning_init: kind,
                prompt_tuning_init_text: (kind == PromptTuningInit::Text)
                    .then(|| args.prompt_init_text.clone())
                    .flatten(),
                tokenizer_name_or_path: (kind == PromptTuningInit::Text)
                    .then(|| args.model.clone()),
            };
            Ok(PeftAdapter::prompt_tuning(
                config,
                init,
                args.prompt_dropout,
                device,
            ))
        }
        Method::Prefix => Ok(PeftAdapter::prefix_tuning(
            base,
            args.prefix_projection,
            device,
        )),
        Method::Full => unreachable!("full fine-tuning has no adapter"),
    }
}

/// The optimizer every training run uses (and `peft-bench` measures). Gradient clipping is
/// the trainee's (by the global norm, see [`crate::clip`]), not Burn's per-tensor clipping.
pub fn adamw(weight_decay: f64) -> AdamWConfig {
    AdamWConfig::new().with_weight_decay(weight_decay as f32)
}

/// Epochs to run and training items per epoch, honouring `--max-steps`.
fn plan_epochs(args: &TrainArgs, items: usize, steps_per_epoch: usize) -> (usize, usize) {
    match args.max_steps {
        Some(steps) if steps < steps_per_epoch => (
            1,
            (steps * args.batch_size * args.grad_accumulation).min(items),
        ),
        Some(steps) => (
            args.epochs.min(steps.div_ceil(steps_per_epoch)).max(1),
            items,
        ),
        None => (args.epochs.max(1), items),
    }
}

/// Linear warm-up to `--lr`, then constant, linear decay to 0 or cosine decay to 0.
fn lr_schedule(args: &TrainArgs, total_steps: usize) -> LrSchedulerConfig {
    let warmup = args.warmup_steps.min(total_steps.saturating_sub(1));
    let rest = total_steps.saturating_sub(warmup).max(1);
    let after: LrSchedulerConfig = match args.schedule {
        Schedule::Constant => LrSchedulerConfig::Constant(args.lr),
        Schedule::Linear => LinearLrSchedulerConfig::new(args.lr, 0.0, rest).into(),
        Schedule::Cosine => CosineAnnealingLrSchedulerConfig::new(args.lr, rest).into(),
    };
    if warmup == 0 {
        return after;
    }
    let ramp = LinearLrSchedulerConfig::new(args.lr / warmup as f64, args.lr, warmup).into();
    SequentialLrSchedulerConfig::new(vec![ramp, after], vec![warmup]).into()
}

/// Saves what was trained: the adapter in PEFT format, or the whole model for full fine-tuning.
fn save_trained(model: &AdaptedGpt2, loaded: &LoadedModel, dir: &Path) -> Result<()> {
    match &model.adapter {
        Some(adapter) => adapter
            .save(dir)
            .with_context(|| format!("saving the adapter to {}", dir.display()))?,
        None => {
            peft_gpt2::checkpoint::save_pretrained(&model.base, &loaded.config, dir)?;
            let tokenizer_json = loaded.files.dir.join("tokenizer.json");
            if tokenizer_json.is_file() {
                std::fs::copy(&tokenizer_json, dir.join("tokenizer.json"))?;
            }
        }
    }
    println!("saved {}", dir.display());
    Ok(())
}

fn epoch_metrics(
    train_dir: &Path,
    epoch_ends: &Mutex<Vec<(usize, Instant)>>,
    started: Instant,
    tokens_per_epoch: usize,
    classification: bool,
) -> Vec<EpochMetrics> {
    let names: &[&str] = if classification {
        &["Loss", "Accuracy"]
    } else {
        &["Loss"]
    };
    let summary = LearnerSummary::new(train_dir, names).ok();
    let value = |split: &[burn::train::MetricSummary], name: &str, epoch: usize| {
        split
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.entries.iter().find(|e| e.step == epoch))
            .map(|e| e.value)
    };
    let ends = epoch_ends.lock().expect("training has finished").clone();
    let epochs = summary.as_ref().map_or(0, |s| s.epochs);
    (1..=epochs)
        .map(|epoch| {
            let s = summary.as_ref().expect("epochs > 0 implies a summary");
            let end = ends.iter().find(|(e, _)| *e == epoch).map(|(_, t)| *t);
            let start = ends
                .iter()
                .find(|(e, _)| *e + 1 == epoch)
                .map_or(Some(started), |(_, t)| Some(*t));
            let seconds = end
                .zip(start)
                .map(|(end, start)| end.duration_since(start).as_secs_f64());
            EpochMetrics {
                epoch,
                train_loss: value(&s.metrics.train, "Loss", epoch),
                valid_loss: value(&s.metrics.valid, "Loss", epoch),
                valid_accuracy: value(&s.metrics.valid, "Accuracy", epoch),
                tokens_per_second: seconds.map(|s| tokens_per_epoch as f64 / s),
                elapsed_seconds: end.map(|t| t.duration_since(started).as_secs_f64()),
            }
        })
        .collect()
}

/// The training run Ctrl-C stops: the latest one (the demo trains several in one process,
/// and a process has only one signal handler).
static CURRENT_RUN: Mutex<Option<Interrupter>> = Mutex::new(None);

fn install_ctrl_c(interrupter: Interrupter) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    *CURRENT_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(interrupter);
    INSTALL.call_once(|| {
        // A second Ctrl-C (or a kill) ends the process; checkpoints already written survive.
        let result = ctrlc::set_handler(|| {
            eprintln!(
                "\ninterrupt: finishing the current step, then saving; press Ctrl-C again to quit now"
            );
            let current = CURRENT_RUN
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            match current {
                Some(run) if !run.should_stop() => run.stop(Some("interrupted by the user")),
                _ => std::process::exit(130),
            }
        });
        if let Err(err) = result {
            tracing::warn!("cannot install the Ctrl-C handler: {err}");
        }
    });
}
