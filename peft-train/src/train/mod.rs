//! `peft-train train`: adapter (or full) training through Burn's `SupervisedTraining` and
//! `Learner`, with adapter-only checkpoints, resume, and at the end a PEFT-format adapter,
//! `metrics.json` and `loss.png`.

mod adapter_spec;
pub mod checkpoint;
pub mod clip;
mod config;
pub mod epochs;
pub mod guard;
mod interrupt;
mod outcome;
pub mod plot;
pub mod progress;
mod run_dir;
mod schedule;
pub mod trainee;

pub use adapter_spec::{AdapterSpec, BaseModel, Method, PromptInitArg};
pub use config::{Schedule, TrainArgs, TrainSettings};
pub use interrupt::Interrupted;
pub use outcome::{EpochMetrics, TrainOutcome};
pub use schedule::adamw;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::prelude::*;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, LearningResult, MetricEarlyStoppingStrategy,
    StoppingCondition, SupervisedTraining,
};
use peft_runtime::LoadedModel;

use crate::data::Dataset;
use crate::data::token_cache::{TokenCache, load_tokenized};
use crate::train::checkpoint::{
    AtomicCheckpointer, ModelCheckpointer, OPTIMIZER, SCHEDULER, TimedKeepLast,
    checkpointed_epochs, last_intact_epoch,
};
use crate::train::epochs::{EpochClock, EpochShuffled};
use crate::train::guard::Divergence;
use crate::train::interrupt::install_ctrl_c;
use crate::train::outcome::{ensure_finite, epoch_metrics, save_trained, with_best_epoch};
use crate::train::plot::LossCurves;
use crate::train::progress::PlainProgress;
use crate::train::run_dir::{OutputLock, check_resume};
use crate::train::schedule::{StepPlan, loader_batch_size, lr_schedule};
use crate::train::trainee::{ExampleBatcher, Trainee};

/// Trains as `args` say: the adapter (or whole model) in `OUTPUT_DIR`, with checkpoints,
/// `metrics.json` and `loss.png`.
pub fn train(args: &TrainArgs) -> Result<TrainOutcome> {
    // Full fine-tuning trains the weights themselves: they stay f32 (master weights), and
    // only its forward passes run in `--dtype` (see `Adapted::computing_in`).
    let weights = args
        .device
        .dtype
        .of_weights(args.adapter.method == Method::Full);
    let loaded = LoadedModel::load_weights_in(&args.model, &args.device, weights, true)?;
    loaded.device.seed(args.settings.seed);
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let _lock = OutputLock::acquire(&args.output_dir)?;
    let run = Run::new(args, &loaded.device);
    let resume_epoch = check_resume(args, &run.checkpoint_dir)?;

    // Checked before the adapter's tables are allocated: a huge count would exhaust memory
    // first.
    let max_len = loaded
        .config
        .positions_after(args.adapter.virtual_tokens())
        .context("--num-virtual-tokens")?;
    let model = args.adapter.model(BaseModel::of(&loaded))?;
    let data = TrainingData::load(args, &loaded, max_len)?;
    println!("{}", model.parameter_count());
    let trainee = Trainee::new(
        model,
        data.train.verbalizer.as_ref().map(|v| v.deciding_tokens()),
        args.settings.grad_clip.map(|clip| clip as f32),
    )
    .accumulating(args.settings.grad_accumulation);
    let plan = StepPlan::new(&args.settings, data.train.examples.len());

    let training = run.supervised_training(args, &data, &plan, &loaded.device, resume_epoch);
    let optimizer = adamw(args.settings.weight_decay, args.settings.adam_epsilon);
    let scheduler = ModuleLrSchedulerConfig::new(lr_schedule(&args.settings, plan.total_steps))
        .init()
        .map_err(|e| anyhow::anyhow!("invalid learning-rate schedule: {e}"))?;
    let started = Instant::now();
    let result = training.launch(Learner::new(trainee, optimizer.init(), scheduler));
    let tokens_per_epoch = data
        .train
        .examples
        .iter()
        .take(plan.items_per_epoch)
        .map(|e| e.ids.len())
        .sum();
    run.finish(
        args,
        &loaded,
        result,
        started,
        tokens_per_epoch,
        data.classification,
    )
}

/// The training and validation sets, tokenised for the model and its virtual tokens.
struct TrainingData {
    train: Dataset,
    valid: Dataset,
    /// Every example has a class: accuracy is measured too.
    classification: bool,
}

impl TrainingData {
    /// `max_len`: the tokens an example may have after the adapter's virtual tokens.
    fn load(args: &TrainArgs, loaded: &LoadedModel, max_len: usize) -> Result<Self> {
        let train = load_dataset(&args.data, loaded, max_len, args, None)?;
        let valid = match &args.valid_data {
            Some(path) => load_dataset(path, loaded, max_len, args, train.verbalizer.clone())?,
            None => {
                tracing::warn!("no --valid-data: validating on the training data");
                train.clone()
            }
        };
        // Accuracy is measured on both splits, so every batch of both must have classes: a
        // file may mix labelled lines with plain text, which then trains on the loss alone.
        let every_example_has_a_class =
            |set: &Dataset| set.examples.iter().all(|e| e.class.is_some());
        let classification = train.verbalizer.is_some()
            && every_example_has_a_class(&train)
            && every_example_has_a_class(&valid);
        Ok(Self {
            train,
            valid,
            classification,
        })
    }
}

/// One run's bookkeeping around Burn's training loop: its checkpoints, the clock that seeds
/// each epoch, when epochs ended, and whether the loss diverged.
struct Run {
    checkpoint_dir: PathBuf,
    checkpoints: ModelCheckpointer,
    /// Epoch orders and dropout follow from (seed, epoch), so a resumed run matches.
    clock: EpochClock,
    epoch_ends: Arc<Mutex<Vec<(usize, Instant)>>>,
    interrupter: Interrupter,
    divergence: Divergence,
}

impl Run {
    fn new(args: &TrainArgs, device: &Device) -> Self {
        let checkpoint_dir = args.output_dir.join("train").join("checkpoint");
        // Only the adapter's parameters are checkpointed, unless the whole model trains.
        let keep_prefix =
            (args.adapter.method != Method::Full).then(|| "model.adapter".to_string());
        let clock = EpochClock::new(device.clone(), args.settings.seed);
        let interrupter = Interrupter::new();
        Self {
            checkpoints: ModelCheckpointer {
                dir: checkpoint_dir.clone(),
                keep_prefix,
            },
            checkpoint_dir,
            divergence: Divergence::new(interrupter.clone(), clock.clone()),
            clock,
            epoch_ends: Arc::default(),
            interrupter,
        }
    }

    /// Burn's training loop for this run: data loaders, metrics, checkpointing, early
    /// stopping, and where a resumed run continues.
    fn supervised_training(
        &self,
        args: &TrainArgs,
        data: &TrainingData,
        plan: &StepPlan,
        device: &Device,
        resume_epoch: Option<usize>,
    ) -> SupervisedTraining<Trainee> {
        let settings = &args.settings;
        let batcher = ExampleBatcher {
            shared_label_prefix: data
                .train
                .verbalizer
                .as_ref()
                .map_or(0, |v| v.shared_prefix),
        };
        let mut train_loader = DataLoaderBuilder::new(batcher.clone())
            .batch_size(loader_batch_size(
                settings.batch_size,
                data.train.examples.len(),
            ))
            .build(EpochShuffled::new(
                data.train.examples.clone(),
                self.clock.clone(),
            ));
        if plan.items_per_epoch < data.train.examples.len() {
            train_loader = train_loader.slice(0, plan.items_per_epoch);
        }
        let valid_loader = DataLoaderBuilder::new(batcher)
            .batch_size(loader_batch_size(
                settings.batch_size,
                data.valid.examples.len(),
            ))
            .build(InMemDataset::new(data.valid.examples.clone()));

        install_ctrl_c(self.interrupter.clone());
        let checkpointer = |name| AtomicCheckpointer {
            dir: self.checkpoint_dir.clone(),
            name,
        };
        let mut training =
            SupervisedTraining::new(args.output_dir.join("train"), train_loader, valid_loader)
                .metric_train_numeric(self.divergence.loss_metric("training"))
                .metric_valid_numeric(self.divergence.loss_metric("validation"))
                .metric_train_numeric(LearningRateMetric::new())
                .with_custom_checkpointers(
                    self.checkpoints.clone(),
                    checkpointer(OPTIMIZER),
                    checkpointer(SCHEDULER),
                )
                .with_checkpointing_strategy(TimedKeepLast::new(
                    self.epoch_ends.clone(),
                    self.clock.clone(),
                    settings.early_stopping.is_some(),
                    checkpointed_epochs(&self.checkpoint_dir),
                ))
                .grads_accumulation(settings.grad_accumulation)
                .with_training_strategy(ExecutionStrategy::single(device.clone()).into())
                .with_interrupter(self.interrupter.clone())
                .with_application_logger(None)
                .num_epochs(plan.epochs);
        if !std::io::stdout().is_terminal() {
            training = training.renderer(Box::new(PlainProgress::default()));
        }
        if data.classification {
            training = training
                .metric_train_numeric(AccuracyMetric::new())
                .metric_valid_numeric(AccuracyMetric::new());
        }
        if let Some(patience) = settings.early_stopping {
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
                self.checkpoint_dir.display()
            );
            training = training.checkpoint(epoch);
            self.clock.epoch_completed(epoch);
        }
        training
    }

    /// After the loop: refuses a diverged run, keeps the best epoch with early stopping, and
    /// saves the adapter (never with non-finite weights), `metrics.json` and `loss.png`.
    fn finish(
        &self,
        args: &TrainArgs,
        loaded: &LoadedModel,
        result: LearningResult<Trainee>,
        started: Instant,
        tokens_per_epoch: usize,
        classification: bool,
    ) -> Result<TrainOutcome> {
        if let Some(error) = result.error {
            bail!("training failed: {error}");
        }
        // What was trained: the adapter, or the whole model for full fine-tuning.
        let saved = if args.adapter.method == Method::Full {
            "model"
        } else {
            "adapter"
        };
        if let Some(where_) = self.divergence.first() {
            let kept = match last_intact_epoch(&self.checkpoint_dir).0 {
                Some(epoch) => format!("the checkpoint of epoch {epoch} is intact"),
                None => "no epoch had finished".to_string(),
            };
            bail!(
                "training diverged: {where_} (--lr {}). Nothing was saved over {}; {kept}. \
                 Lower --lr (or set --grad-clip) and start again, or continue the last \
                 checkpoint with --resume",
                args.settings.lr,
                args.output_dir.join(saved).display()
            );
        }
        let interrupted = result.interrupted.is_some();
        let train_dir = args.output_dir.join("train");
        let epochs = epoch_metrics(
            &train_dir,
            &self.epoch_ends,
            started,
            tokens_per_epoch,
            classification,
        );
        let mut trainee = result.model;
        if args.settings.early_stopping.is_some() && !interrupted {
            trainee = with_best_epoch(trainee, &epochs, &self.checkpoints)?;
        }
        let adapter_dir = if interrupted {
            args.output_dir.join(format!("{saved}-interrupted"))
        } else {
            args.output_dir.join(saved)
        };
        ensure_finite(&trainee.model).with_context(|| {
            format!(
                "not saving {}: training left non-finite weights (lower --lr or set --grad-clip)",
                adapter_dir.display()
            )
        })?;
        save_trained(&trainee.model, loaded, &adapter_dir)?;
        let json = serde_json::to_string_pretty(&epochs)?;
        peft_runtime::write_atomically(&args.output_dir.join("metrics.json"), json.as_bytes())?;
        // The plot is a convenience: failing to draw it must not fail a finished run.
        let plot = args.output_dir.join("loss.png");
        if let Err(err) = LossCurves::read(&train_dir, epochs.len()).write_png(&plot) {
            tracing::warn!("no loss plot at {}: {err:#}", plot.display());
        }
        Ok(TrainOutcome {
            adapter_dir,
            interrupted,
        })
    }
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
