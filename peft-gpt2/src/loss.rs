//! The causal language-modelling objective, as Hugging Face computes it: logits at position `t`
//! predict the label at `t + 1`, and labels equal to [`IGNORE_INDEX`] do not count.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Label value that excludes a position from the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Next-token negative log-likelihood at every position, and which positions count.
///
/// `logits`: `[B, T, V]`; `labels`: `[B, T]`. Returns `(nll, counted)`, both `[B, T-1]`, where
/// `counted` is 1.0 for positions whose label is not [`IGNORE_INDEX`] and `nll` is 0 elsewhere.
pub fn next_token_nll(logits: Tensor<3>, labels: Tensor<2, Int>) -> (Tensor<2>, Tensor<2>) {
    let [batch, len, vocab] = logits.dims();
    let predictions = logits.narrow(1, 0, len - 1);
    let targets = labels.narrow(1, 1, len - 1);
    let ignored = targets.clone().equal_elem(IGNORE_INDEX);
    let counted = ignored.clone().bool_not().float();
    let safe_targets = targets.mask_fill(ignored, 0);
    let log_probs = log_softmax(predictions, 2);
    let picked = log_probs
        .gather(2, safe_targets.reshape([batch, len - 1, 1]))
        .reshape([batch, len - 1]);
    debug_assert!(vocab > 0);
    (picked.neg() * counted.clone(), counted)
}

/// Mean loss over every counted token of the batch (`GPT2LMHeadModel(labels=...).loss`), `[1]`.
pub fn mean_loss(logits: Tensor<3>, labels: Tensor<2, Int>) -> Tensor<1> {
    let (nll, counted) = next_token_nll(logits, labels);
    nll.sum() / counted.sum().clamp_min(1.0)
}

/// Each example's mean loss over its own counted tokens, `[B]`, and how many it counted, `[B]`.
///
/// This is the loss Hugging Face reports for that example run alone.
pub fn per_example_loss(logits: Tensor<3>, labels: Tensor<2, Int>) -> (Tensor<1>, Tensor<1>) {
    let (nll, counted) = next_token_nll(logits, labels);
    let [batch, _] = nll.dims();
    let tokens = counted.sum_dim(1).reshape([batch]);
    let losses = nll.sum_dim(1).reshape([batch]) / tokens.clone().clamp_min(1.0);
    (losses, tokens)
}
