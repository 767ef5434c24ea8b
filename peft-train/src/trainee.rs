//! The module Burn's `Learner` trains: a frozen GPT-2 with an adapter (or an unfrozen GPT-2
//! for full fine-tuning), its batches and its step outputs.

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::ExecutionError;
use burn::train::metric::{AccuracyInput, Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use peft_gpt2::loss::mean_loss;
use peft_gpt2::{AdaptedGpt2, PadSide, PaddedRows};

use crate::data::TokenizedExample;
use crate::eval::padded_labels;

/// Right-padded examples as tensors.
#[derive(Clone, Debug)]
pub struct TrainBatch {
    pub ids: Tensor<2, Int>,
    pub mask: Tensor<2, Bool>,
    /// Targets, [`peft_gpt2::loss::IGNORE_INDEX`] at padding and non-target tokens.
    pub labels: Tensor<2, Int>,
    /// Classification only: index of each row's deciding label token, and its class.
    pub answers: Option<(Tensor<1, Int>, Tensor<1, Int>)>,
}

#[derive(Clone, Debug)]
pub struct ExampleBatcher {
    pub pad_id: u32,
    /// For classification: label tokens shared by every class, skipped to reach the token
    /// that decides the class.
    pub shared_label_prefix: usize,
}

impl Batcher<TokenizedExample, TrainBatch> for ExampleBatcher {
    fn batch(&self, items: Vec<TokenizedExample>, device: &Device) -> TrainBatch {
        let rows: Vec<Vec<u32>> = items.iter().map(|e| e.ids.clone()).collect();
        let padded = PaddedRows::new(&rows, self.pad_id, PadSide::Right);
        let (batch, width) = (items.len(), padded.width);
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(padded_labels(&items, width), [batch * width]),
            device,
        )
        .reshape([batch, width]);
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
            ids: padded.ids_tensor(device),
            mask: padded.mask_tensor(device),
            labels,
            answers,
        }
    }
}

/// GPT-2 with what it is trained for.
#[derive(Module, Debug)]
pub struct Trainee {
    pub model: AdaptedGpt2,
    /// The deciding token of each class label, when training a classifier through a verbalizer.
    #[module(skip)]
    pub class_tokens: Option<Vec<u32>>,
}

/// What one step reports to the metrics.
#[derive(Debug)]
pub struct StepOutput {
    pub loss: Tensor<1>,
    /// Scores of each class `[B, classes]` and the true classes `[B]`, for accuracy.
    pub classes: Option<(Tensor<2>, Tensor<1, Int>)>,
}

impl Trainee {
    pub fn forward(&self, batch: TrainBatch) -> StepOutput {
        let conditioning = self.model.conditioning();
        let logits =
            self.model
                .base
                .forward_conditioned(batch.ids, Some(batch.mask), &conditioning);
        let labels = peft_gpt2::conditioned_labels(batch.labels, &conditioning);
        let classes = match (&self.class_tokens, batch.answers) {
            (Some(tokens), Some((positions, classes))) => Some((
                class_scores(logits.clone(), positions, conditioning.prompt_len(), tokens),
                classes,
            )),
            _ => None,
        };
        StepOutput {
            loss: mean_loss(logits, labels),
            classes,
        }
    }
}

/// The logits of each class's deciding token at the position that predicts it: `[B, C]`.
fn class_scores(
    logits: Tensor<3>,
    answer_positions: Tensor<1, Int>,
    offset: usize,
    tokens: &[u32],
) -> Tensor<2> {
    let [batch, _, vocab] = logits.dims();
    let device = logits.device();
    // The label token at index a is predicted by the logits at a - 1 (after the virtual tokens).
    let at = answer_positions
        .add_scalar(offset as i64 - 1)
        .reshape([batch, 1, 1])
        .expand([batch, 1, vocab]);
    let predicting = logits.gather(1, at).reshape([batch, vocab]);
    let token_ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    let token_ids =
        Tensor::<1, Int>::from_data(TensorData::new(token_ids, [tokens.len()]), &device);
    predicting.select(1, token_ids)
}

impl ItemLazy for StepOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(Self {
            loss: self.loss.detach(),
            classes: self
                .classes
                .map(|(scores, classes)| (scores.detach(), classes)),
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

    fn step(&self, batch: TrainBatch) -> TrainOutput<StepOutput> {
        let output = self.forward(batch);
        let grads = output.loss.backward();
        TrainOutput::new(self, grads, output)
    }
}

impl InferenceStep for Trainee {
    type Input = TrainBatch;
    type Output = StepOutput;

    fn step(&self, batch: TrainBatch) -> StepOutput {
        self.forward(batch)
    }
}
