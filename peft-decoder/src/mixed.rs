//! One forward pass over rows that each carry their own adapter (or none), laid out as
//! [`crate::layout`] describes.

use burn::prelude::*;

use crate::batch::PadSide;
use crate::decoder::Decoder;
use crate::error::InputError;
use crate::layout::{AdaptedInput, MixedRow};

/// Each row's logits over its own virtual and real tokens, `[p_r + n_r, vocab]` — what
/// `forward_conditioned` gives for that row alone — from one forward pass.
pub fn forward_mixed(
    model: &impl Decoder,
    rows: &[MixedRow<'_>],
) -> Result<Vec<Tensor<2>>, InputError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let input = AdaptedInput::new(model, rows, 0, PadSide::Left)?;
    let logits = model.logits(input.hidden(model, None));
    let vocab = logits.dims()[2];
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let own = r.conditioning.prompt_len() + r.tokens.len();
            logits
                .clone()
                .narrow(0, i, 1)
                .narrow(1, input.own_columns(i, own).start, own)
                .reshape([own, vocab])
        })
        .collect())
}
