//! One forward pass over rows that each carry their own adapter (or none).
//!
//! Every row is laid out as its own run would be — its prefix keys/values, then its virtual
//! tokens, then its real tokens, with the positions PEFT gives them — and the rows are aligned
//! with padding that the attention mask hides:
//!
//! ```text
//! keys:   [ prefix of row r, zero-padded to the longest prefix | left padding | prompt_r | tokens_r ]
//! mask:   [ true × q_r, false × (Q - q_r)                      | false        | true ...            ]
//! ```
//!
//! Positions follow the mask (each real entry's index among the real entries before it), so a
//! prefix-tuned row's tokens start at `q_r` and a prompt-tuned row's virtual tokens take
//! `0..p_r`, exactly as when the row runs alone. Masked keys get a score of `-1e4`, whose
//! exponential is exactly zero in f32, so a row's logits equal its solo run up to the order of
//! floating-point sums.

use burn::prelude::*;
use peft_core::{Conditioning, LayerKv, PrefixKv};

use crate::batch::{bool_tensor, positions_from_mask};
use crate::error::{Error, Result};
use crate::model::{ForwardInput, Gpt2};

/// One row of a mixed batch: its tokens and what conditions them.
#[derive(Clone, Copy, Debug)]
pub struct MixedRow<'a> {
    pub tokens: &'a [u32],
    /// The row's adapter conditioning (batch dimension 1), or [`Conditioning::none`].
    pub conditioning: &'a Conditioning,
}

/// The first pass of a mixed batch: inputs, the host-side mask over every key, and where each
/// row's own entries start.
pub(crate) struct MixedInput {
    pub embeddings: Tensor<3>,
    pub positions: Tensor<2, Int>,
    /// Per row, `[prefix slots | padding + virtual + real tokens]`, true for real entries.
    pub masks: Vec<Vec<bool>>,
    /// Longest prefix of the batch (the prefix segment's width).
    pub prefix_width: usize,
    /// Width of the token segment (virtual + real tokens of the longest row).
    pub width: usize,
    pub prefix: Option<PrefixKv>,
}

impl MixedInput {
    /// Builds the aligned batch; `room` more positions must fit after every row (new tokens
    /// of a generation).
    pub fn new(model: &Gpt2, rows: &[MixedRow<'_>], room: usize) -> Result<Self> {
        let device = model.device();
        if let Some(row) = rows.iter().position(|r| r.tokens.is_empty()) {
            return Err(Error::Input(format!(
                "row {row} has no tokens; give at least one (GPT-2 models often start from the \
                 end-of-text token)"
            )));
        }
        for (row, r) in rows.iter().enumerate() {
            let (virtual_len, len) = (r.conditioning.virtual_len(), r.tokens.len());
            if virtual_len + len + room > model.n_positions() {
                return Err(Error::Input(format!(
                    "row {row}: {len} tokens + {virtual_len} virtual tokens + {room} new tokens \
                     exceed the model's {} positions; shorten the input or ask for fewer tokens",
                    model.n_positions()
                )));
            }
        }
        let prefix_width = rows
            .iter()
            .map(|r| r.conditioning.prefix_len())
            .max()
            .unwrap_or(0);
        let content = |r: &MixedRow<'_>| r.conditioning.prompt_len() + r.tokens.len();
        let width = rows.iter().map(content).max().unwrap_or(0);
        // Keys the attention sees in the batch, not positions: rows that each fit may still
        // not fit side by side.
        model.check_fits(prefix_width + width + room).map_err(|_| {
            Error::Input(format!(
                "these rows do not fit one batch: the longest prefix ({prefix_width}) plus the \
                 longest input ({width}) plus {room} new tokens exceed the model's {} \
                 positions; run them in smaller groups",
                model.n_positions()
            ))
        })?;

        let masks: Vec<Vec<bool>> = rows
            .iter()
            .map(|r| {
                let q = r.conditioning.prefix_len();
                let mut mask = vec![true; q];
                mask.resize(prefix_width, false);
                mask.resize(prefix_width + width - content(r), false);
                mask.resize(prefix_width + width, true);
                mask
            })
            .collect();
        let positions: Vec<i64> = masks
            .iter()
            .flat_map(|mask| positions_from_mask(mask)[prefix_width..].to_vec())
            .collect();
        let positions =
            Tensor::<1, Int>::from_data(TensorData::new(positions, [rows.len() * width]), &device)
                .reshape([rows.len(), width]);

        let embeddings = Tensor::cat(
            rows.iter()
                .map(|r| row_embeddings(model, r, width - content(r)))
                .collect(),
            0,
        );
        Ok(Self {
            embeddings,
            positions,
            masks,
            prefix_width,
            width,
            prefix: batch_prefix(rows, prefix_width),
        })
    }

    /// The attention mask over every key, `[B, prefix + width]`.
    pub fn key_mask(&self, device: &Device) -> Tensor<2, Bool> {
        let flat: Vec<bool> = self.masks.iter().flatten().copied().collect();
        bool_tensor(
            &flat,
            self.masks.len(),
            self.prefix_width + self.width,
            device,
        )
    }
}

/// `[1, padding + p + n, d]`: zeros for the padding, the row's virtual tokens, its tokens.
fn row_embeddings(model: &Gpt2, row: &MixedRow<'_>, padding: usize) -> Tensor<3> {
    let device = model.device();
    let ids: Vec<i64> = row.tokens.iter().map(|&t| i64::from(t)).collect();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [row.tokens.len()]), &device)
        .reshape([1, row.tokens.len()]);
    let tokens = model.embed_tokens(ids);
    let d = tokens.dims()[2];
    let mut parts = Vec::with_capacity(3);
    if padding > 0 {
        parts.push(Tensor::<3>::zeros([1, padding, d], &device));
    }
    if let Some(prompt) = &row.conditioning.prompt {
        parts.push(prompt.clone());
    }
    parts.push(tokens);
    Tensor::cat(parts, 1)
}

/// The batch's prefix segment: nothing when no row has a prefix, the shared `[1, ...]` prefix
/// (broadcast, not copied) when every row has the same conditioning, and otherwise each row's
/// prefix zero-padded to `width` and stacked (a row without one is all padding).
fn batch_prefix(rows: &[MixedRow<'_>], width: usize) -> Option<PrefixKv> {
    if width == 0 {
        return None;
    }
    let first = rows[0].conditioning;
    if rows.iter().all(|r| std::ptr::eq(r.conditioning, first)) {
        return first.prefix.clone();
    }
    let template = rows
        .iter()
        .find_map(|r| r.conditioning.prefix.as_ref())
        .expect("width > 0 means some row has a prefix");
    let n_layer = template.layers.len();
    let layers = (0..n_layer)
        .map(|layer| {
            let [_, heads, _, head_dim] = template.layers[layer].key.dims();
            let device = template.layers[layer].key.device();
            let padded = |part: fn(&LayerKv) -> &Tensor<4>| {
                Tensor::cat(
                    rows.iter()
                        .map(|r| match &r.conditioning.prefix {
                            Some(prefix) => {
                                let own = part(&prefix.layers[layer]).clone();
                                let missing = width - own.dims()[2];
                                if missing == 0 {
                                    own
                                } else {
                                    Tensor::cat(
                                        vec![
                                            own,
                                            Tensor::zeros([1, heads, missing, head_dim], &device),
                                        ],
                                        2,
                                    )
                                }
                            }
                            None => Tensor::zeros([1, heads, width, head_dim], &device),
                        })
                        .collect(),
                    0,
                )
            };
            LayerKv::new(padded(|kv| &kv.key), padded(|kv| &kv.value))
        })
        .collect();
    Some(PrefixKv::new(layers))
}

/// Each row's logits over its own virtual and real tokens, `[p_r + n_r, vocab]` — what
/// [`Gpt2::forward_conditioned`] gives for that row alone — from one forward pass.
pub fn forward_mixed(model: &Gpt2, rows: &[MixedRow<'_>]) -> Result<Vec<Tensor<2>>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let device = model.device();
    let input = MixedInput::new(model, rows, 0)?;
    let hidden = model.forward(
        ForwardInput {
            embeddings: input.embeddings.clone(),
            positions: input.positions.clone(),
            key_mask: Some(input.key_mask(&device)),
            prefix: input.prefix.as_ref(),
        },
        None,
    );
    let logits = model.logits(hidden);
    let [_, width, vocab] = logits.dims();
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let own = r.conditioning.prompt_len() + r.tokens.len();
            logits
                .clone()
                .narrow(0, i, 1)
                .narrow(1, width - own, own)
                .reshape([own, vocab])
        })
        .collect())
}
