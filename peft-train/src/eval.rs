//! `peft-train eval`: per-example losses of a dataset under the frozen model and an optional
//! adapter, as a JSON report.
//!
//! The contract other tools rely on: one entry per input line, in order, `{"loss", "tokens"}`,
//! where `loss` is the mean next-token NLL over that example's target tokens — what Hugging
//! Face PEFT computes for the example alone — and `tokens` how many targets it averaged;
//! `mean_loss` is the token-weighted mean over the whole file and `perplexity` its exp.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use peft_decoder::{Adapted, Decoder};
use peft_gpt2::loss::per_example_loss;
use peft_gpt2::{PadSide, PaddedRows};
use peft_runtime::Model;
use serde::Serialize;

use crate::data::TokenizedExample;

#[derive(Debug, Serialize, PartialEq)]
pub struct ExampleScore {
    pub loss: f64,
    pub tokens: usize,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EvalReport {
    pub examples: Vec<ExampleScore>,
    pub mean_loss: f64,
    pub perplexity: f64,
}

/// Scores every example, `batch_size` at a time (padding does not change any example's loss).
pub fn evaluate(
    model: &Adapted<Model>,
    examples: &[TokenizedExample],
    pad_id: u32,
    batch_size: usize,
) -> Result<EvalReport> {
    let device = model.base.device();
    let mut scores = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
        let padded = PaddedRows::new(&rows, pad_id, PadSide::Right);
        let labels = padded_labels(chunk, padded.width);
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(labels, [chunk.len() * padded.width]),
            &device,
        )
        .reshape([chunk.len(), padded.width]);
        let (logits, labels) = model.forward(
            padded.ids_tensor(&device),
            Some(padded.mask_tensor(&device)),
            labels,
        );
        let (losses, tokens) = per_example_loss(logits, labels);
        let losses = losses
            .into_data()
            .try_into_vec_as::<f64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let tokens = tokens
            .into_data()
            .try_into_vec_as::<f64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        scores.extend(
            losses
                .into_iter()
                .zip(tokens)
                .map(|(loss, tokens)| ExampleScore {
                    loss,
                    tokens: tokens.round() as usize,
                }),
        );
    }
    Ok(summarize(scores))
}

/// Right-padded labels `[rows * width]`, padding ignored.
pub fn padded_labels(examples: &[TokenizedExample], width: usize) -> Vec<i64> {
    examples
        .iter()
        .flat_map(|e| {
            let fill = width - e.labels.len();
            e.labels
                .iter()
                .copied()
                .chain(std::iter::repeat_n(peft_gpt2::loss::IGNORE_INDEX, fill))
        })
        .collect()
}

fn summarize(examples: Vec<ExampleScore>) -> EvalReport {
    let tokens: usize = examples.iter().map(|e| e.tokens).sum();
    let total: f64 = examples.iter().map(|e| e.loss * e.tokens as f64).sum();
    let mean_loss = if tokens == 0 {
        0.0
    } else {
        total / tokens as f64
    };
    EvalReport {
        examples,
        mean_loss,
        perplexity: mean_loss.exp(),
    }
}

pub fn write_report(report: &EvalReport, path: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    peft_runtime::write_atomically(path, json.as_bytes())?;
    Ok(())
}
