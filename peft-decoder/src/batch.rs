//! Turning token sequences of different lengths into padded tensors, masks and positions.

use burn::prelude::*;

/// Which side of a row padding goes: right for training and scoring, left for generation (so
/// that every row's last token is at the same column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadSide {
    Left,
    Right,
}

/// Rows of token ids padded to one width, with a mask of the real tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaddedRows {
    /// Row-major `[rows, width]` ids; padding is `pad_id`.
    pub ids: Vec<i64>,
    /// Row-major `[rows, width]`: true for real tokens.
    pub mask: Vec<bool>,
    pub rows: usize,
    pub width: usize,
}

impl PaddedRows {
    pub fn new(rows: &[Vec<u32>], pad_id: u32, side: PadSide) -> Self {
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut mask = Vec::with_capacity(rows.len() * width);
        for row in rows {
            let fill = width - row.len();
            let real = row.iter().map(|&id| (i64::from(id), true));
            let pad = std::iter::repeat_n((i64::from(pad_id), false), fill);
            let padded: Vec<(i64, bool)> = match side {
                PadSide::Right => real.chain(pad).collect(),
                PadSide::Left => pad.chain(real).collect(),
            };
            for (id, is_real) in padded {
                ids.push(id);
                mask.push(is_real);
            }
        }
        Self {
            ids,
            mask,
            rows: rows.len(),
            width,
        }
    }

    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::<1, Int>::from_data(TensorData::new(self.ids.clone(), [self.ids.len()]), device)
            .reshape([self.rows, self.width])
    }

    pub fn mask_tensor(&self, device: &Device) -> Tensor<2, Bool> {
        bool_tensor(&self.mask, self.rows, self.width, device)
    }
}

/// A `[rows, width]` boolean tensor from row-major values.
pub fn bool_tensor(values: &[bool], rows: usize, width: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<1, Bool>::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
        .reshape([rows, width])
}

/// Hugging Face's positions for a padded row: each real token's index among the real tokens
/// before it (virtual and prefix entries included), and 1 at padding, as `generate` derives
/// `position_ids` from `attention_mask`.
pub fn positions_from_mask(mask: &[bool]) -> Vec<i64> {
    let mut seen = 0i64;
    mask.iter()
        .map(|&real| {
            if real {
                seen += 1;
                seen - 1
            } else {
                1
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_on_either_side() {
        let rows = vec![vec![5, 6, 7], vec![8]];
        let right = PaddedRows::new(&rows, 0, PadSide::Right);
        assert_eq!(right.ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(right.mask, vec![true, true, true, true, false, false]);
        let left = PaddedRows::new(&rows, 0, PadSide::Left);
        assert_eq!(left.ids, vec![5, 6, 7, 0, 0, 8]);
        assert_eq!(left.mask, vec![true, true, true, false, false, true]);
    }

    #[test]
    fn positions_skip_padding_like_generate() {
        assert_eq!(
            positions_from_mask(&[false, false, true, true, true]),
            vec![1, 1, 0, 1, 2]
        );
        // A prefix of 2 entries ahead of left padding: real tokens continue at 2.
        assert_eq!(
            positions_from_mask(&[true, true, false, true]),
            vec![0, 1, 1, 2]
        );
    }
}
