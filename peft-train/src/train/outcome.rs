//! What a finished run leaves: the adapter (or model) it trained — the best epoch's with early
//! stopping, never one with non-finite weights — and its per-epoch metrics.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::train::LearnerSummary;
use burn::train::checkpoint::Checkpointer;
use peft_decoder::Adapted;
use peft_runtime::{LoadedModel, Model, ModelConfig};
use serde::Serialize;

use crate::train::checkpoint::ModelCheckpointer;
use crate::train::trainee::Trainee;

pub struct TrainOutcome {
    /// `OUTPUT_DIR/adapter` (PEFT format), or `OUTPUT_DIR/model` for full fine-tuning.
    pub adapter_dir: PathBuf,
    /// Stopped by the user before the last epoch.
    pub interrupted: bool,
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

/// With early stopping, the run ends with the adapter of its epoch of lowest validation loss
/// (as Hugging Face's `load_best_model_at_end`), not the last epoch's, which early stopping
/// only reaches after several epochs without improvement.
pub(crate) fn with_best_epoch(
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
pub(crate) fn ensure_finite(model: &Adapted<Model>) -> Result<()> {
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

/// Saves what was trained: the adapter in PEFT format, or the whole model for full fine-tuning.
pub(crate) fn save_trained(model: &Adapted<Model>, loaded: &LoadedModel, dir: &Path) -> Result<()> {
    match &model.adapter {
        Some(adapter) => adapter
            .save(dir)
            .with_context(|| format!("saving the adapter to {}", dir.display()))?,
        None => {
            match (&model.base, &loaded.config) {
                (Model::Gpt2(gpt2), ModelConfig::Gpt2(config)) => {
                    peft_gpt2::checkpoint::save_pretrained(gpt2, config, dir)?
                }
                (Model::Llama(llama), _) => {
                    peft_llama::save_pretrained(llama, &loaded.dir.join("config.json"), dir)?
                }
                (Model::Gpt2(_), ModelConfig::Llama(_)) => {
                    unreachable!("a model is loaded with its own family's config")
                }
            }
            let tokenizer_json = loaded.dir.join("tokenizer.json");
            if tokenizer_json.is_file() {
                std::fs::copy(&tokenizer_json, dir.join("tokenizer.json"))?;
            }
        }
    }
    println!("saved {}", dir.display());
    Ok(())
}

pub(crate) fn epoch_metrics(
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
