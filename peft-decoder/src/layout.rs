//! The one layout of a batch under adapters, which every adapted forward pass is built from:
//! training and scoring (right-padded, one conditioning shared by the batch), mixed-adapter
//! batches and every step of generation (left-padded, a conditioning per row).
//!
//! Each row is laid out as its own run would be — its prefix keys/values, its virtual tokens,
//! its real tokens — and rows are aligned with padding that the attention mask hides:
//!
//! ```text
//! keys, left padding:  [ prefix_r, zero-padded to the longest | padding | virtual_r | tokens_r ]
//! keys, right padding: [ prefix_r, zero-padded to the longest | virtual_r | tokens_r | padding ]
//! mask:                [ true × q_r, false × (Q - q_r)         | true for the row's own entries ]
//! ```
//!
//! Positions follow the mask, as Hugging Face's `generate` derives `position_ids` from the
//! attention mask: each real entry's index among the real entries before it (prefix entries
//! included), and 1 at padding. So a prefix-tuned row's tokens start at `q_r` and a
//! prompt-tuned row's virtual tokens take `0..p_r`, which is what PEFT gives them. Masked keys
//! get a score whose exponential is exactly zero in f32, so a row's logits equal its solo run
//! up to the order of floating-point sums, and padding (whose own outputs nobody reads) never
//! changes them.
//!
//! Right padding needs no mask at all: it comes after every real token of its row, where the
//! causal mask already hides it from each real query. Leaving the mask out changes only the
//! padding positions' own outputs, and lets attention run as causal alone
//! ([`crate::fused_attention::Masking::Causal`]: PyTorch's flash kernels, no mask operand).

use burn::prelude::*;
use peft_core::{Conditioning, LayerKv, PrefixKv};

use crate::batch::{PadSide, PaddedRows, bool_tensor, positions_from_mask};
use crate::decoder::{Decoder, ForwardInput, KvCache};
use crate::error::InputError;

/// One row of a batch: its tokens and what conditions them.
#[derive(Clone, Copy, Debug)]
pub struct MixedRow<'a> {
    pub tokens: &'a [u32],
    /// The row's adapter conditioning (batch dimension 1), or [`Conditioning::none`]. Rows
    /// that share one conditioning point to the same value.
    pub conditioning: &'a Conditioning,
}

/// A batch laid out for the model: input embeddings, the mask over every key (kept on the
/// host, where generation extends it) and the batch's prefix segment.
pub struct AdaptedInput {
    embeddings: Tensor<3>,
    /// Per row, over `[prefix slots | token segment | tokens appended since]`: true for real
    /// entries.
    masks: Vec<Vec<bool>>,
    /// Longest prefix of the batch: the width of the prefix segment.
    prefix_width: usize,
    /// Width of the token segment (virtual + real tokens of the longest row).
    width: usize,
    side: PadSide,
    prefix: Option<PrefixKv>,
}

impl AdaptedInput {
    /// Lays out `rows`, padded on `side`; `room` more positions must fit after every row (the
    /// new tokens of a generation).
    pub fn new(
        model: &impl Decoder,
        rows: &[MixedRow<'_>],
        room: usize,
        side: PadSide,
    ) -> Result<Self, InputError> {
        check_fits(model, rows, room)?;
        let prefix_width = rows
            .iter()
            .map(|r| r.conditioning.prefix_len())
            .max()
            .unwrap_or(0);
        let width = rows.iter().map(content).max().unwrap_or(0);
        let masks = rows
            .iter()
            .map(|r| {
                let q = r.conditioning.prefix_len();
                let mut mask = vec![true; q];
                mask.resize(prefix_width, false);
                let padding = width - content(r);
                match side {
                    PadSide::Left => {
                        mask.resize(prefix_width + padding, false);
                        mask.resize(prefix_width + width, true);
                    }
                    PadSide::Right => {
                        mask.resize(prefix_width + width - padding, true);
                        mask.resize(prefix_width + width, false);
                    }
                }
                mask
            })
            .collect();
        let embeddings = embeddings(model, rows, width, side);
        // The adapter's prefix is f32; in mixed precision the activations are half. Cast here,
        // once per input, not at every layer of every decoding step.
        let dtype = embeddings.dtype();
        let prefix = batch_prefix(rows, prefix_width).map(|prefix| {
            PrefixKv::new(
                prefix
                    .layers
                    .into_iter()
                    .map(|kv| LayerKv::new(kv.key.cast(dtype), kv.value.cast(dtype)))
                    .collect(),
            )
        });
        Ok(Self {
            embeddings,
            masks,
            prefix_width,
            width,
            side,
            prefix,
        })
    }

    /// Final hidden states `[B, width, d]` of the whole token segment (filling `cache` with
    /// its keys and values, if given). At padding positions they are unspecified.
    pub fn hidden(&self, model: &impl Decoder, cache: Option<&mut KvCache>) -> Tensor<3> {
        let device = model.device();
        let positions: Vec<i64> = self
            .masks
            .iter()
            .flat_map(|mask| {
                positions_from_mask(&mask[..self.prefix_width + self.width])[self.prefix_width..]
                    .to_vec()
            })
            .collect();
        model.forward(
            ForwardInput {
                embeddings: self.embeddings.clone(),
                positions: int_tensor(positions, self.masks.len(), self.width, &device),
                key_mask: self.key_mask(&device),
                prefix: self.prefix.as_ref(),
            },
            cache,
        )
    }

    /// Hidden states `[B, 1, d]` of one more token per row (`newest`, already appended with
    /// [`Self::append`]), given the keys of everything before it in `cache`.
    pub fn hidden_of_newest(
        &self,
        model: &impl Decoder,
        newest: &[u32],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let device = model.device();
        let batch = newest.len();
        let ids: Vec<i64> = newest.iter().map(|&t| i64::from(t)).collect();
        let positions: Vec<i64> = self
            .masks
            .iter()
            .map(|mask| *positions_from_mask(mask).last().expect("a mask per key"))
            .collect();
        model.forward(
            ForwardInput {
                embeddings: model.embed_tokens(int_tensor(ids, batch, 1, &device)),
                positions: int_tensor(positions, batch, 1, &device),
                key_mask: self.key_mask(&device),
                prefix: self.prefix.as_ref(),
            },
            Some(cache),
        )
    }

    /// One more real key per row: the token each row is fed next (a generated one, or padding
    /// for a finished row, which Hugging Face's `generate` also keeps attending to).
    pub fn append(&mut self) {
        for mask in &mut self.masks {
            mask.push(true);
        }
    }

    /// Where row `row`'s `len` own entries (virtual and real tokens) sit in the token segment.
    pub fn own_columns(&self, row: usize, len: usize) -> std::ops::Range<usize> {
        debug_assert!(row < self.masks.len() && len <= self.width);
        match self.side {
            PadSide::Left => self.width - len..self.width,
            PadSide::Right => 0..len,
        }
    }

    /// The attention mask over every key so far, `[B, keys]`; `None` when causality alone hides
    /// every key a real query must not see (see [`causal_suffices`]).
    fn key_mask(&self, device: &Device) -> Option<Tensor<2, Bool>> {
        if self
            .masks
            .iter()
            .all(|mask| causal_suffices(mask, self.prefix_width))
        {
            return None;
        }
        let flat: Vec<bool> = self.masks.iter().flatten().copied().collect();
        let keys = self.masks.first().map_or(0, Vec::len);
        Some(bool_tensor(&flat, self.masks.len(), keys, device))
    }
}

/// Whether a row's mask over `[prefix slots | entries]` hides nothing from its real queries that
/// the causal mask does not: every prefix slot is real, and no real entry comes after a padding
/// one (no padding, or right padding, which each real query has ahead of it).
fn causal_suffices(mask: &[bool], prefix_width: usize) -> bool {
    let (prefix, entries) = mask.split_at(prefix_width);
    prefix.iter().all(|&real| real) && entries.windows(2).all(|pair| pair[0] || !pair[1])
}

/// Virtual and real tokens of a row: its entries in the token segment.
fn content(row: &MixedRow<'_>) -> usize {
    row.conditioning.prompt_len() + row.tokens.len()
}

/// Whether every row, and the rows side by side, fit the model's positions with `room` more.
fn check_fits(model: &impl Decoder, rows: &[MixedRow<'_>], room: usize) -> Result<(), InputError> {
    if let Some(row) = rows.iter().position(|r| r.tokens.is_empty()) {
        return Err(InputError(format!(
            "row {row} has no tokens; give at least one (GPT-2 models often start from the \
             end-of-text token)"
        )));
    }
    for (row, r) in rows.iter().enumerate() {
        let (virtual_len, len) = (r.conditioning.virtual_len(), r.tokens.len());
        // Saturating: `room` comes from a request or a flag and may be near `usize::MAX`.
        if virtual_len.saturating_add(len).saturating_add(room) > model.n_positions() {
            return Err(InputError(format!(
                "row {row}: {len} tokens + {virtual_len} virtual tokens + {room} new tokens \
                 exceed the model's {} positions; shorten the input or ask for fewer tokens",
                model.n_positions()
            )));
        }
    }
    let prefix_width = rows.iter().map(|r| r.conditioning.prefix_len()).max();
    let width = rows.iter().map(content).max();
    let (prefix_width, width) = (prefix_width.unwrap_or(0), width.unwrap_or(0));
    // Keys the attention sees in the batch, not positions: rows that each fit may still not
    // fit side by side.
    model
        .check_fits(prefix_width.saturating_add(width).saturating_add(room))
        .map_err(|_| {
            InputError(format!(
                "these rows do not fit one batch: the longest prefix ({prefix_width}) plus the \
                 longest input ({width}) plus {room} new tokens exceed the model's {} \
                 positions; run them in smaller groups",
                model.n_positions()
            ))
        })
}

/// `[B, width, d]`: each row's virtual tokens and tokens, padded on `side` (padding entries are
/// masked, so their values never matter).
fn embeddings(
    model: &impl Decoder,
    rows: &[MixedRow<'_>],
    width: usize,
    side: PadSide,
) -> Tensor<3> {
    let device = model.device();
    let shared = shared_conditioning(rows);
    if let (Some(conditioning), PadSide::Right) = (shared, side) {
        // Every row starts with the same virtual tokens: one lookup for the whole batch.
        let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.to_vec()).collect();
        let tokens = model.embed_tokens(PaddedRows::new(&tokens, 0, side).ids_tensor(&device));
        return match &conditioning.prompt {
            Some(prompt) => {
                let [batch, _, d] = tokens.dims();
                let p = prompt.dims()[1];
                let prompt = prompt.clone().cast(tokens.dtype());
                Tensor::cat(vec![prompt.expand([batch, p, d]), tokens], 1)
            }
            None => tokens,
        };
    }
    let rows = rows
        .iter()
        .map(|r| {
            let ids: Vec<i64> = r.tokens.iter().map(|&t| i64::from(t)).collect();
            let tokens = model.embed_tokens(int_tensor(ids, 1, r.tokens.len(), &device));
            let d = tokens.dims()[2];
            let padding = width - content(r);
            let dtype = tokens.dtype();
            let mut own = Vec::with_capacity(2);
            own.extend(r.conditioning.prompt.clone().map(|p| p.cast(dtype)));
            own.push(tokens);
            let own = Tensor::cat(own, 1);
            if padding == 0 {
                return own;
            }
            let pad = Tensor::<3>::zeros([1, padding, d], &device).cast(dtype);
            match side {
                PadSide::Left => Tensor::cat(vec![pad, own], 1),
                PadSide::Right => Tensor::cat(vec![own, pad], 1),
            }
        })
        .collect();
    Tensor::cat(rows, 0)
}

/// The conditioning every row shares, if they all point to one.
fn shared_conditioning<'a>(rows: &[MixedRow<'a>]) -> Option<&'a Conditioning> {
    let first = rows.first()?.conditioning;
    rows.iter()
        .all(|r| std::ptr::eq(r.conditioning, first))
        .then_some(first)
}

/// The batch's prefix segment: nothing when no row has a prefix, the shared `[1, ...]` prefix
/// (broadcast, not copied) when every row has the same conditioning, and otherwise each row's
/// prefix zero-padded to `width` and stacked (a row without one is all padding).
fn batch_prefix(rows: &[MixedRow<'_>], width: usize) -> Option<PrefixKv> {
    if width == 0 {
        return None;
    }
    if let Some(shared) = shared_conditioning(rows) {
        return shared.prefix.clone();
    }
    let template = rows
        .iter()
        .find_map(|r| r.conditioning.prefix.as_ref())
        .expect("width > 0 means some row has a prefix");
    let layers = (0..template.layers.len())
        .map(|layer| {
            let [_, heads, _, head_dim] = template.layers[layer].key.dims();
            let device = template.layers[layer].key.device();
            let padded = |part: fn(&LayerKv) -> &Tensor<4>| {
                let rows = rows
                    .iter()
                    .map(|r| match &r.conditioning.prefix {
                        Some(prefix) => {
                            let own = part(&prefix.layers[layer]).clone();
                            let missing = width - own.dims()[2];
                            if missing == 0 {
                                return own;
                            }
                            let zeros = Tensor::zeros([1, heads, missing, head_dim], &device);
                            Tensor::cat(vec![own, zeros], 2)
                        }
                        None => Tensor::zeros([1, heads, width, head_dim], &device),
                    })
                    .collect();
                Tensor::cat(rows, 0)
            };
            LayerKv::new(padded(|kv| &kv.key), padded(|kv| &kv.value))
        })
        .collect();
    Some(PrefixKv::new(layers))
}

fn int_tensor(values: Vec<i64>, rows: usize, width: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<1, Int>::from_data(TensorData::new(values, [rows * width]), device)
        .reshape([rows, width])
}

#[cfg(test)]
mod tests {
    use super::causal_suffices;

    #[test]
    fn only_rows_without_padding_before_a_real_key_go_without_a_mask() {
        let (t, f) = (true, false);
        // [prefix slots (2) | entries]
        assert!(causal_suffices(&[t, t, t, t, t], 2), "no padding");
        assert!(causal_suffices(&[t, t, t, t, f, f], 2), "right padding");
        assert!(causal_suffices(&[t, f, f], 0), "right padding, no prefix");
        assert!(!causal_suffices(&[t, t, f, t, t], 2), "left padding");
        assert!(!causal_suffices(&[t, f, t, t], 2), "a shorter prefix");
        assert!(
            !causal_suffices(&[t, t, t, f, t], 2),
            "a real key appended after padding"
        );
    }
}
