//! The module Burn's `Learner` trains: a frozen GPT-2 with an adapter (or an unfrozen GPT-2
//! for full fine-tuning), its batches and its step outputs.

use burn::data::dataloader::batcher::Batcher;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::ExecutionError;
use burn::train::metric::{AccuracyInput, Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use peft_decoder::Adapted;
use peft_decoder::Decoder;
use peft_decoder::adapted::hidden_of_rows;
use peft_gpt2::loss::{LossTargets, fused_lm_loss};
use peft_runtime::Model;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::data::TokenizedExample;
use crate::train::clip::{clip_global_norm, scale_gradients};

/// A batch of examples: their token rows (the model pads them), loss targets and answers.
#[derive(Clone, Debug)]
pub struct TrainBatch {
    /// Each example's tokens, on the host, where the model lays the batch out.
    pub rows: Vec<Vec<u32>>,
    /// The labels the loss is taken on, on the host: where each is predicted.
    pub targets: LossTargets,
    /// Classification only: index of each row's deciding label token, and its class.
    pub answers: Option<(Tensor<1, Int>, Tensor<1, Int>)>,
}

#[derive(Clone, Debug)]
pub struct ExampleBatcher {
    /// For classification: label tokens shared by every class, skipped to reach the token
    /// that decides the class.
    pub shared_label_prefix: usize,
}

impl Batcher<TokenizedExample, TrainBatch> for ExampleBatcher {
    fn batch(&self, items: Vec<TokenizedExample>, device: &Device) -> TrainBatch {
        let rows: Vec<Vec<u32>> = items.iter().map(|e| e.ids.clone()).collect();
        let batch = items.len();
        let targets = LossTargets::from_rows(items.iter().map(|e| e.labels.as_slice()));
        let answers = items.iter().all(|e| e.class.is_some()).then(|| {
            let first_target = |e: &TokenizedExample| {
                e.labels
                    .iter()
                    .position(|&l| l != peft_gpt2::loss::IGNORE_INDEX)
                    .expect("a classification example has label tokens")
                    + self.shared_label_prefix
            };
            let positions: Vec<i64> = items.iter().map(|e| first_target(e) as i64).collect();
            let classes: Vec<i64> = items.iter().map(|e| e.class.unwrap() as i64).collect();
            (
                Tensor::<1, Int>::from_data(TensorData::new(positions, [batch]), device),
                Tensor::<1, Int>::from_data(TensorData::new(classes, [batch]), device),
            )
        });
        TrainBatch {
            rows,
            targets,
            answers,
        }
    }
}

/// GPT-2 with what it is trained for.
#[derive(Module, Debug)]
pub struct Trainee {
    pub model: Adapted<Model>,
    /// The deciding token of each class label, when training a classifier through a verbalizer.
    #[module(skip)]
    pub class_tokens: Option<Vec<u32>>,
    /// Clip the global gradient norm to this before each optimizer step.
    #[module(skip)]
    pub max_grad_norm: Option<f32>,
    /// Whether gradients are accumulated over several batches per optimizer step.
    #[module(skip)]
    accumulating: bool,
    /// When accumulating: target tokens of the batches whose gradients wait for the next
    /// optimizer step (shared by the clones Burn's learner makes of the model).
    #[module(skip)]
    pending_targets: Arc<AtomicUsize>,
}

/// What one step reports to the metrics.
#[derive(Debug)]
pub struct StepOutput {
    /// The mean loss over the batch's target tokens.
    pub loss: Tensor<1>,
    /// Scores of each class `[B, classes]` and the true classes `[B]`, for accuracy.
    pub classes: Option<(Tensor<2>, Tensor<1, Int>)>,
    /// How many target tokens the loss averages.
    pub targets: usize,
}

impl Trainee {
    pub fn new(
        model: Adapted<Model>,
        class_tokens: Option<Vec<u32>>,
        max_grad_norm: Option<f32>,
    ) -> Self {
        Self {
            model,
            class_tokens,
            max_grad_norm,
            accumulating: false,
            pending_targets: Arc::default(),
        }
    }

    /// Set for training with `batches` accumulated per optimizer step (more than one).
    pub fn accumulating(mut self, batches: usize) -> Self {
        self.accumulating = batches > 1;
        self
    }

    /// The loss (the mean over every label of the batch, as Hugging Face computes it) and, for
    /// classification, the class scores. The LM head only runs where a label is predicted.
    pub fn forward(&self, batch: TrainBatch) -> StepOutput {
        let conditioning = self.model.conditioning();
        let prompt_len = conditioning.prompt_len();
        let base = &self.model.running_base();
        let device = base.device();
        // What the loss and the class scores read from the host is uploaded before the forward
        // pass: on CUDA a copy from the host waits for every kernel queued before it.
        // Hidden states cover the virtual tokens and the longest row.
        let seq_len = prompt_len + batch.rows.iter().map(Vec::len).max().unwrap_or(0);
        let targets = batch.targets.predicted_labels(seq_len, prompt_len, &device);
        let class_token_ids = self.class_tokens.as_ref().map(|tokens| {
            let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
            Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), &device)
        });
        let hidden = hidden_of_rows(base, &batch.rows, &conditioning);
        let head = base.output_embeddings();
        let classes = match (class_token_ids, batch.answers) {
            (Some(token_ids), Some((positions, classes))) => Some((
                class_scores(
                    hidden.clone(),
                    head.clone(),
                    positions,
                    prompt_len,
                    token_ids,
                ),
                classes,
            )),
            _ => None,
        };
        StepOutput {
            loss: fused_lm_loss(hidden, head, self.model.full_finetune, &targets),
            classes,
            targets: batch.targets.predicted(prompt_len),
        }
    }
}

/// The logits of each class's deciding token (`token_ids`, `[C]`) at the position that
/// predicts it, `[B, C]`: the head's rows of those tokens only, at one position per row.
fn class_scores(
    hidden: Tensor<3>,
    head: Tensor<2>,
    answer_positions: Tensor<1, Int>,
    offset: usize,
    token_ids: Tensor<1, Int>,
) -> Tensor<2> {
    let [batch, _, width] = hidden.dims();
    // The label token at index a is predicted by position a - 1 (after the virtual tokens).
    let at = answer_positions
        .add_scalar(offset as i64 - 1)
        .reshape([batch, 1, 1])
        .expand([batch, 1, width]);
    let predicting = hidden.gather(1, at).reshape([batch, width]);
    predicting.matmul(head.select(0, token_ids).transpose())
}

impl ItemLazy for StepOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(Self {
            loss: self.loss.detach(),
            classes: self
                .classes
                .map(|(scores, classes)| (scores.detach(), classes)),
            targets: self.targets,
        })
    }
}

impl Adaptor<LossInput> for StepOutput {
    fn adapt(&self) -> LossInput {
        LossInput::new(self.loss.clone())
    }
}

impl Adaptor<AccuracyInput> for StepOutput {
    fn adapt(&self) -> AccuracyInput {
        let (scores, classes) = self
            .classes
            .clone()
            .expect("accuracy is only registered for classification data");
        AccuracyInput::new(scores, classes)
    }
}

impl TrainStep for Trainee {
    type Input = TrainBatch;
    type Output = StepOutput;

    /// The gradients of the batch's mean loss. When accumulating, those of its summed loss
    /// instead, which [`optimize`](TrainStep::optimize) divides by the targets of every batch
    /// accumulated since the last step: N accumulated batches train as one batch N times as
    /// large — the mean over all their target tokens, which is what Hugging Face's Trainer
    /// computes — whatever each batch holds.
    fn step(&self, batch: TrainBatch) -> TrainOutput<StepOutput> {
        let output = self.forward(batch);
        let grads = if self.accumulating {
            self.pending_targets
                .fetch_add(output.targets, Ordering::SeqCst);
            output
                .loss
                .clone()
                .mul_scalar(output.targets as f32)
                .backward()
        } else {
            output.loss.clone().backward()
        };
        TrainOutput::new(self, grads, output)
    }

    /// The optimizer step, on the mean gradient of the accumulated batches, clipped by its
    /// global norm.
    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        mut grads: GradientsParams,
    ) -> Self {
        let targets = self.pending_targets.swap(0, Ordering::SeqCst);
        if targets > 0 {
            scale_gradients(&self, &mut grads, 1.0 / targets as f32);
        }
        if let Some(max_norm) = self.max_grad_norm {
            clip_global_norm(&self, &mut grads, max_norm);
        }
        optim.step(lr, self, grads)
    }
}

impl InferenceStep for Trainee {
    type Input = TrainBatch;
    type Output = StepOutput;

    fn step(&self, batch: TrainBatch) -> StepOutput {
        self.forward(batch)
    }
}
