//! How a model, with its adapter if any, does on a task's held-out data: the loss, the task's
//! metric, and what it writes for the first held-out inputs.

use std::path::Path;

use anyhow::{Context, Result};
use burn::data::dataloader::batcher::Batcher;
use peft_core::{Adapter, Conditioning};
use peft_decoder::Adapted;
use peft_gpt2::tokenizer::END_OF_TEXT;
use peft_gpt2::{GenerationConfig, generate};
use peft_runtime::{DeviceArg, LoadedModel};

use super::tasks::{Metric, Task};
use crate::data::{Overlong, read_examples, tokenize};
use crate::eval::evaluate;
use crate::train::trainee::{ExampleBatcher, Trainee};

/// How many held-out inputs the report shows the outputs of.
pub const SAMPLES: usize = 3;

#[derive(Clone, Debug)]
pub struct Assessment {
    /// Mean next-token loss over every target token of the held-out set.
    pub loss: f64,
    /// The task's [`Metric`], in `[0, 1]`.
    pub metric: f64,
    /// The adapter's parameters; the base model's and the adapter's together with `whole`.
    pub params: usize,
    /// Greedy outputs for the first [`SAMPLES`] held-out inputs.
    pub samples: Vec<String>,
}

/// Scores `model` (a checkpoint directory) with `adapter` on `task`'s held-out set. `whole`
/// counts every parameter as trained (a fully fine-tuned model).
pub fn assess(
    model: &str,
    adapter: Option<&Path>,
    task: &Task,
    device: &DeviceArg,
    whole: bool,
) -> Result<Assessment> {
    let loaded = LoadedModel::load(model, device, false)?;
    let adapter = loaded.load_optional_adapter(adapter)?;
    let max_len = loaded
        .config
        .positions_after(adapter.as_ref().map_or(0, Adapter::num_virtual_tokens))?;
    let valid = &task.valid;
    let dataset = tokenize(
        valid,
        read_examples(valid)?,
        loaded.vocabulary(),
        max_len,
        Overlong::Reject,
        None,
    )?;
    let conditioning = Conditioning::of(adapter.as_ref());
    let adapted = Adapted::new(loaded.model.clone(), adapter);
    let params = adapted.parameter_count();
    let loss = evaluate(&adapted, &dataset.examples, loaded.pad_id(), 16)?.mean_loss;

    // Data-to-text needs every held-out output; a classification only the samples'.
    let written = match task.metric {
        Metric::SlotAccuracy => task.held_out.len(),
        Metric::Accuracy => SAMPLES.min(task.held_out.len()),
    };
    let mut outputs = greedy_outputs(
        &loaded,
        &conditioning,
        task.held_out[..written].iter().map(|h| h.prompt.as_str()),
        task.metric.max_new_tokens(),
    )?;
    if task.metric == Metric::Accuracy {
        // The answer is one word; what a classifier writes after it was never trained.
        for output in &mut outputs {
            *output = output
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    }
    let metric = match task.metric {
        Metric::SlotAccuracy => {
            let (found, shown) = task
                .held_out
                .iter()
                .zip(&outputs)
                .filter_map(|(held_out, text)| {
                    Some(held_out.meaning.as_ref()?.slots_realised(text))
                })
                .fold((0, 0), |(f, s), (found, shown)| (f + found, s + shown));
            found as f64 / shown.max(1) as f64
        }
        Metric::Accuracy => {
            let verbalizer = dataset
                .verbalizer
                .as_ref()
                .with_context(|| format!("{} has no labels", valid.display()))?;
            let trainee = Trainee::new(adapted, Some(verbalizer.deciding_tokens()), None);
            let batcher = ExampleBatcher {
                shared_label_prefix: verbalizer.shared_prefix,
            };
            let mut correct = 0usize;
            for chunk in dataset.examples.chunks(16) {
                let batch = batcher.batch(chunk.to_vec(), &loaded.device);
                let (scores, classes) = trainee
                    .forward(batch)
                    .classes
                    .context("labelled examples have classes")?;
                let predicted = scores.argmax(1).reshape([chunk.len()]);
                correct += predicted.equal(classes).int().sum().into_scalar::<i64>() as usize;
            }
            correct as f64 / dataset.examples.len().max(1) as f64
        }
    };
    Ok(Assessment {
        loss,
        metric,
        params: if whole {
            params.total
        } else {
            params.trainable
        },
        samples: outputs.into_iter().take(SAMPLES).collect(),
    })
}

/// Greedy continuations of `prompts`, each up to its end of text or the end of its line (the
/// base model was pretrained on descriptions one to a line).
fn greedy_outputs<'a>(
    loaded: &LoadedModel,
    conditioning: &Conditioning,
    prompts: impl Iterator<Item = &'a str>,
    max_new_tokens: usize,
) -> Result<Vec<String>> {
    let tokenizer = loaded.tokenizer()?;
    let prompts = prompts
        .map(|p| tokenizer.encode(p))
        .collect::<Result<Vec<_>, _>>()?;
    let config = GenerationConfig::greedy(max_new_tokens, tokenizer.eos_id());
    let outputs = generate(&loaded.model, &prompts, conditioning, &config)?;
    outputs
        .iter()
        .map(|ids| {
            let text = tokenizer.decode(ids)?;
            let text = text.split(END_OF_TEXT).next().unwrap_or_default();
            Ok(text.lines().next().unwrap_or_default().trim().to_string())
        })
        .collect()
}
