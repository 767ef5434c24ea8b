//! `peft-train train`: adapter (or full) training through Burn's `SupervisedTraining` and
//! `Learner`, with adapter-only checkpoints, resume, and at the end a PEFT-format adapter,
//! `metrics.json` and `loss.png`.

mod adapter_spec;
pub mod checkpoint;
pub mod clip;
mod config;
pub mod epochs;
pub mod guard;
pub mod plot;
pub mod progress;
pub mod trainee;

pub use adapter_spec::{AdapterSpec, BaseModel, Method, PromptInitArg};
pub use config::{Schedule, TrainArgs, TrainSettings};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::module::{ModuleVisitor, Param};
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::prelude::*;
use burn::train::checkpoint::Checkpointer;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, LearnerSummary, MetricEarlyStoppingStrategy,
    StoppingCondition, SupervisedTraining,
};
use peft_gpt2::AdaptedGpt2;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data::Dataset;
use crate::data::token_cache::TokenCache;
use crate::data::token_cache::load_tokenized;
use crate::train::checkpoint::{
    AtomicCheckpointer, ModelCheckpointer, OPTIMIZER, SCHEDULER, TimedKeepLast,
    checkpointed_epochs, last_intact_epoch,
};
use crate::train::epochs::{EpochClock, EpochShuffled};
use crate::train::guard::Divergence;
use crate::train::plot::LossCurves;
use crate::train::progress::PlainProgress;
use crate::train::trainee::{ExampleBatcher, Trainee};
use peft_runtime::LoadedModel;

/// What a run was started with, kept whole in `OUTPUT_DIR/run.json`: `--resume` continues
/// only the same run.
#[derive(Serialize)]
struct RunRecord<'a> {
    #[serde(flatten)]
    args: &'a TrainArgs,
    /// The training data's contents, so that an edited file is not silently resumed on.
    data_sha256: String,
}

/// Settings a resumed run may change: how long it trains and what it is validated on.
const CHANGEABLE_ON_RESUME: [&str; 5] = [
    "epochs",
    "max_steps",
    "valid_data",
    "early_stopping",
    "output_dir",
];

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

/// A run stopped by Ctrl-C or SIGTERM, after saving the adapter as it was: the binary says
/// so and exits with status 130, so that scripts can tell it from a finished run.
#[derive(Debug)]
pub struct Interrupted {
    pub saved: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: the adapter as it was is in {}; `--resume` continues from the last \
             epoch checkpoint",
            self.saved.display()
        )
    }
}

impl std::error::Error for Interrupted {}

pub struct TrainOutcome {
    /// `OUTPUT_DIR/adapter` (PEFT format), or `OUTPUT_DIR/model` for full fine-tuning.
    pub adapter_dir: PathBuf,
    /// Stopped by the user before the last epoch.
    pub interrupted: bool,
}

pub fn train(args: &TrainArgs) -> Result<TrainOutcome> {
    let loaded = LoadedModel::load(&args.model, args.device.device, true)?;
    let device = loaded.device.clone();
    device.seed(args.settings.seed);
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let _lock = OutputLock::acquire(&args.output_dir)?;
    let checkpoint_dir = args.output_dir.join("train").join("checkpoint");
    let resume_epoch = check_resume(args, &checkpoint_dir)?;

    let model = args.adapter.model(BaseModel::of(&loaded))?;
    let virtual_tokens = model
        .adapter
        .as_ref()
        .map_or(0, |a| a.config.base().num_virtual_tokens);
    let max_len = loaded.config.positions_after(virtual_tokens)?;
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

    println!("{}", model.parameter_count());
    let trainee = Trainee::new(
        model,
        train_set.verbalizer.as_ref().map(|v| v.deciding_tokens()),
        args.settings.grad_clip.map(|clip| clip as f32),
    )
    .accumulating(args.settings.grad_accumulation);

    let steps_per_epoch = train_set
        .examples
        .len()
        .div_ceil(args.settings.batch_size)
        .div_ceil(args.settings.grad_accumulation)
        .max(1);
    let (epochs, items_per_epoch) = plan_epochs(args, train_set.examples.len(), steps_per_epoch);
    let total_steps = epochs
        * steps_per_epoch.min(
            items_per_epoch.div_ceil(args.settings.batch_size * args.settings.grad_accumulation),
        );
    let train_tokens_per_epoch: usize = train_set
        .examples
        .iter()
        .take(items_per_epoch)
        .map(|e| e.ids.len())
        .sum();

    let batcher = ExampleBatcher {
        shared_label_prefix: train_set.verbalizer.as_ref().map_or(0, |v| v.shared_prefix),
    };
    // Epoch orders and dropout follow from (seed, epoch), so a resumed run matches.
    let clock = EpochClock::new(device.clone(), args.settings.seed);
    let mut train_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(args.settings.batch_size)
        .build(EpochShuffled::new(
            train_set.examples.clone(),
            clock.clone(),
        ));
    if items_per_epoch < train_set.examples.len() {
        train_loader = train_loader.slice(0, items_per_epoch);
    }
    let valid_loader = DataLoaderBuilder::new(batcher)
        .batch_size(args.settings.batch_size)
        .build(InMemDataset::new(valid_set.examples.clone()));

    let optimizer = adamw(args.settings.weight_decay, args.settings.adam_epsilon);
    let scheduler = ModuleLrSchedulerConfig::new(lr_schedule(args, total_steps))
        .init()
        .map_err(|e| anyhow::anyhow!("invalid learning-rate schedule: {e}"))?;

    let keep_prefix = (args.adapter.method != Method::Full).then(|| "model.adapter".to_string());
    let model_checkpoints = ModelCheckpointer {
        dir: checkpoint_dir.clone(),
        keep_prefix,
    };
    let epoch_ends = Arc::new(Mutex::new(Vec::new()));
    let interrupter = Interrupter::new();
    install_ctrl_c(interrupter.clone());
    let divergence = Divergence::new(interrupter.clone(), clock.clone());
    let mut training =
        SupervisedTraining::new(args.output_dir.join("train"), train_loader, valid_loader)
            .metric_train_numeric(divergence.loss_metric("training"))
            .metric_valid_numeric(divergence.loss_metric("validation"))
            .metric_train_numeric(LearningRateMetric::new())
            .with_custom_checkpointers(
                model_checkpoints.clone(),
                AtomicCheckpointer {
                    dir: checkpoint_dir.clone(),
                    name: OPTIMIZER,
                },
                AtomicCheckpointer {
                    dir: checkpoint_dir.clone(),
                    name: SCHEDULER,
                },
            )
            .with_checkpointing_strategy(TimedKeepLast::new(
                epoch_ends.clone(),
                clock.clone(),
                args.settings.early_stopping.is_some(),
                checkpointed_epochs(&checkpoint_dir),
            ))
            .grads_accumulation(args.settings.grad_accumulation)
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
    if let Some(patience) = args.settings.early_stopping {
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
    // What was trained: the adapter, or the whole model for full fine-tuning.
    let saved = if args.adapter.method == Method::Full {
        "model"
    } else {
        "adapter"
    };
    if let Some(where_) = divergence.first() {
        let kept = match last_intact_epoch(&checkpoint_dir).0 {
            Some(epoch) => format!("the checkpoint of epoch {epoch} is intact"),
            None => "no epoch had finished".to_string(),
        };
        bail!(
            "training diverged: {where_} (--lr {}). Nothing was saved over {}; {kept}. Lower \
             --lr (or set --grad-clip) and start again, or continue the last checkpoint with \
             --resume",
            args.settings.lr,
            args.output_dir.join(saved).display()
        );
    }
    let interrupted = result.interrupted.is_some();
    let mut trainee = result.model;
    let epochs = epoch_metrics(
        &args.output_dir.join("train"),
        &epoch_ends,
        started,
        train_tokens_per_epoch,
        classification,
    );
    if args.settings.early_stopping.is_some() && !interrupted {
        trainee = with_best_epoch(trainee, &epochs, &model_checkpoints)?;
    }
    let trained = trainee.model;
    let adapter_dir = if interrupted {
        args.output_dir.join(format!("{saved}-interrupted"))
    } else {
        args.output_dir.join(saved)
    };
    ensure_finite(&trained).with_context(|| {
        format!(
            "not saving {}: training left non-finite weights (lower --lr or set --grad-clip)",
            adapter_dir.display()
        )
    })?;
    save_trained(&trained, &loaded, &adapter_dir)?;
    let json = serde_json::to_string_pretty(&epochs)?;
    peft_runtime::write_atomically(&args.output_dir.join("metrics.json"), json.as_bytes())?;
    // The plot is a convenience: failing to draw it must not fail a finished run.
    let plot = args.output_dir.join("loss.png");
    if let Err(err) =
        LossCurves::read(&args.output_dir.join("train"), epochs.len()).write_png(&plot)
    {
        tracing::warn!("no loss plot at {}: {err:#}", plot.display());
    }
    Ok(TrainOutcome {
        adapter_dir,
        interrupted,
    })
}

/// With early stopping, the run ends with the adapter of its epoch of lowest validation loss
/// (as Hugging Face's `load_best_model_at_end`), not the last epoch's, which early stopping
/// only reaches after several epochs without improvement.
fn with_best_epoch(
    trainee: Trainee,
    epochs: &[EpochMetrics],
    checkpoints: &ModelCheckpointer,
) -> Result<Trainee> {
    let best = epochs
        .iter()
        .filter_map(|e| e.valid_loss.map(|loss| (e.epoch, loss)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let (Some((best, loss)), Some(last)) = (best, epochs.last()) else {
        return Ok(trainee);
    };
    if best == last.epoch {
        return Ok(trainee);
    }
    let record = checkpoints.restore(best).with_context(|| {
        format!("early stopping: cannot read the checkpoint of the best epoch, {best}")
    })?;
    let trainee = trainee
        .try_load_record(record)
        .map_err(|err| anyhow::anyhow!("early stopping: loading epoch {best}'s adapter: {err}"))?;
    println!(
        "early stopping: keeping epoch {best}'s weights, whose validation loss {loss:.4} was the \
         lowest (the last epoch, {}, had {:.4})",
        last.epoch,
        last.valid_loss.unwrap_or(f64::NAN)
    );
    Ok(trainee)
}

/// Fails if any trained parameter is NaN or infinite: such weights are never saved.
fn ensure_finite(model: &AdaptedGpt2) -> Result<()> {
    struct Finite(bool);
    impl ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !self.0 {
                return;
            }
            let all_finite = param.val().is_finite().all().into_scalar::<bool>();
            self.0 &= all_finite;
        }
    }
    let mut finite = Finite(true);
    match &model.adapter {
        Some(adapter) => adapter.visit(&mut finite),
        None => model.base.visit(&mut finite),
    }
    if finite.0 {
        Ok(())
    } else {
        bail!("a parameter holds NaN or infinite values")
    }
}

/// Holds `OUTPUT_DIR/.lock` for as long as a run trains there, so that a second run into the
/// same directory is refused instead of clobbering the first one's checkpoints and adapter.
/// The operating system releases the lock when the process ends, however it ends.
struct OutputLock(#[allow(dead_code)] std::fs::File);

impl OutputLock {
    fn acquire(dir: &Path) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "another peft-train (process {}) is training into {}; wait for it to \
                     finish, or choose another --output-dir",
                    holder.trim(),
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message above; the lock, not the text, is what counts.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Self(file))
    }
}

/// Refuses to start over a previous run's checkpoints unless resuming it, and to resume it
/// with settings that would make it another run. Returns the epoch to resume after.
fn check_resume(args: &TrainArgs, checkpoint_dir: &Path) -> Result<Option<usize>> {
    let data = std::fs::read(&args.data)
        .with_context(|| format!("cannot read dataset {}", args.data.display()))?;
    let record = serde_json::to_value(RunRecord {
        args,
        data_sha256: Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })?;
    let record_path = args.output_dir.join("run.json");
    if !args.resume {
        if let Some(epoch) = checkpointed_epochs(checkpoint_dir).first() {
            bail!(
                "{} already holds checkpoints (up to epoch {epoch}) of an earlier run; pass \
                 --resume to continue it, or choose another --output-dir",
                args.output_dir.display()
            );
        }
        let json = serde_json::to_string_pretty(&record)?;
        peft_runtime::write_atomically(&record_path, json.as_bytes())?;
        return Ok(None);
    }
    let (epoch, passed_over) = last_intact_epoch(checkpoint_dir);
    for why in &passed_over {
        tracing::warn!("{why}; resuming from an earlier epoch");
        println!("warning: {why}");
    }
    let Some(epoch) = epoch else {
        bail!(
            "--resume: no complete checkpoint in {}{}",
            checkpoint_dir.display(),
            if passed_over.is_empty() {
                String::new()
            } else {
                format!(" ({})", passed_over.join("; "))
            }
        );
    };
    let recorded: serde_json::Value = std::fs::read_to_string(&record_path)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(serde_json::from_str(&text)?))
        .with_context(|| format!("--resume: reading {}", record_path.display()))?;
    let differences = resume_differences(&recorded, &record);
    if !differences.is_empty() {
        bail!(
            "--resume: {} holds a run started with other settings ({}); resume with the \
             settings it was started with (only {} may change), or start a new run in another \
             --output-dir",
            args.output_dir.display(),
            differences.join(", "),
            CHANGEABLE_ON_RESUME[..4]
                .iter()
                .map(|key| format!("--{}", key.replace('_', "-")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(Some(epoch))
}

/// The settings of `now` that differ from those a run was `recorded` with, as
/// "--flag: then, now"; settings the record lacks (an older peft-train wrote it) are not
/// compared.
fn resume_differences(recorded: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (Some(recorded), Some(now)) = (recorded.as_object(), now.as_object()) else {
        return vec!["run.json is not a JSON object".into()];
    };
    now.iter()
        .filter(|(key, _)| !CHANGEABLE_ON_RESUME.contains(&key.as_str()))
        .filter_map(|(key, value)| {
            let then = recorded.get(key)?;
            (then != value).then(|| match key.as_str() {
                "data_sha256" => "the --data file's contents have changed".to_string(),
                _ => format!("--{} was {then}, now {value}", key.replace('_', "-")),
            })
        })
        .collect()
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
        loaded.vocabulary(),
        max_len,
        args.settings.overlong,
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

/// The optimizer every training run uses (and `peft-bench` measures): PyTorch's `AdamW`
/// (betas 0.9, 0.999) with this weight decay and epsilon — Burn's own default epsilon is
/// 1e-5, PyTorch's 1e-8. Gradient clipping is the trainee's (by the global norm, see
/// [`crate::train::clip`]), not Burn's per-tensor clipping.
pub fn adamw(weight_decay: f64, epsilon: f64) -> AdamWConfig {
    AdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .with_epsilon(epsilon as f32)
}

/// Epochs to run and training items per epoch, honouring `--max-steps`.
fn plan_epochs(args: &TrainArgs, items: usize, steps_per_epoch: usize) -> (usize, usize) {
    match args.settings.max_steps {
        Some(steps) if steps < steps_per_epoch => (
            1,
            (steps * args.settings.batch_size * args.settings.grad_accumulation).min(items),
        ),
        Some(steps) => (
            args.settings
                .epochs
                .min(steps.div_ceil(steps_per_epoch))
                .max(1),
            items,
        ),
        None => (args.settings.epochs.max(1), items),
    }
}

/// Linear warm-up to `--lr`, then constant, linear decay to 0 or cosine decay to 0.
fn lr_schedule(args: &TrainArgs, total_steps: usize) -> LrSchedulerConfig {
    let warmup = args
        .settings
        .warmup_steps
        .min(total_steps.saturating_sub(1));
    let rest = total_steps.saturating_sub(warmup).max(1);
    let after: LrSchedulerConfig = match args.settings.schedule {
        Schedule::Constant => LrSchedulerConfig::Constant(args.settings.lr),
        Schedule::Linear => LinearLrSchedulerConfig::new(args.settings.lr, 0.0, rest).into(),
        Schedule::Cosine => CosineAnnealingLrSchedulerConfig::new(args.settings.lr, rest).into(),
    };
    if warmup == 0 {
        return after;
    }
    let ramp =
        LinearLrSchedulerConfig::new(args.settings.lr / warmup as f64, args.settings.lr, warmup)
            .into();
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
