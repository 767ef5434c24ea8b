//! Linear layers applied to `[B, T, d]` activations as one `[B·T, d]` matrix product.
//!
//! Burn's `Linear` keeps a 3-D input's batch as a batch of products when each example's row
//! count is a multiple of its row tile (32; `MatmulTransformPolicy`), and the flex backend then
//! runs one product per example, each on one core and each packing the whole weight again —
//! forward and backward. Prefix tuning at 4 × 128 spent 15% of its step packing operands that
//! way, against 6% for prompt tuning, whose 148 rows per example Burn does fold. Folding the
//! batch into the rows first makes every layer one product whose weight is packed once and
//! split across cores, whatever the sequence length (prefix tuning's packing: 8% of the step;
//! BENCHMARKS.md). The values are the same.

use burn::nn::Linear;
use burn::prelude::*;

/// [`Linear::forward`] over every position of a batch as one matrix product.
pub trait ForwardRows {
    /// `x`: `[B, T, d_in]` → `[B, T, d_out]`.
    fn forward_rows(&self, x: Tensor<3>) -> Tensor<3>;
}

impl ForwardRows for Linear {
    fn forward_rows(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, len, width] = x.dims();
        let output = self.forward(x.reshape([batch * len, width]));
        let [_, out_width] = output.dims();
        output.reshape([batch, len, out_width])
    }
}
