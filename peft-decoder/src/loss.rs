//! The causal language-modelling objective, as Hugging Face computes it: logits at position `t`
//! predict the label at `t + 1`, and labels equal to [`IGNORE_INDEX`] do not count.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::log_softmax;

use crate::extension::{Engine, engine};
use crate::fused_cross_entropy::cross_entropy_with_grad;
use crate::known_gradient::with_known_gradient;

/// Label value that excludes a position from the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Next-token negative log-likelihood at every position, and which positions count.
///
/// `logits`: `[B, T, V]`; `labels`: `[B, T]`. Returns `(nll, counted)`, both `[B, T-1]`, where
/// `counted` is 1.0 for positions whose label is not [`IGNORE_INDEX`] and `nll` is 0 elsewhere.
/// A batch of one position predicts nothing: both are then `[B, 1]` of zeros (as Burn has no
/// empty tensors to return), so such an example counts no tokens instead of failing.
pub fn next_token_nll(logits: Tensor<3>, labels: Tensor<2, Int>) -> (Tensor<2>, Tensor<2>) {
    let [batch, len, vocab] = logits.dims();
    if len < 2 {
        let nothing = Tensor::zeros([batch, 1], &logits.device());
        return (nothing.clone(), nothing);
    }
    let predictions = logits.narrow(1, 0, len - 1);
    let targets = labels.narrow(1, 1, len - 1);
    let ignored = targets.clone().equal_elem(IGNORE_INDEX);
    let counted = ignored.clone().bool_not().float();
    let safe_targets = targets.mask_fill(ignored, 0);
    // In f32 whatever the model's type, as under autocast.
    let log_probs = log_softmax(predictions.cast(DType::F32), 2);
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

/// The labels a batch is trained on, kept on the host: for every counted label, its row, its
/// index among the row's tokens and its token id. With them the LM head runs only at the
/// positions that predict something (see [`fused_lm_loss`]).
#[derive(Clone, Debug, Default)]
pub struct LossTargets {
    entries: Vec<(usize, usize, i64)>,
}

impl LossTargets {
    /// From each row's labels (`IGNORE_INDEX` where nothing is predicted).
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a [i64]>) -> Self {
        let entries = rows
            .into_iter()
            .enumerate()
            .flat_map(|(row, labels)| {
                labels
                    .iter()
                    .enumerate()
                    .filter(|(_, label)| **label != IGNORE_INDEX)
                    .map(move |(index, &label)| (row, index, label))
            })
            .collect();
        Self { entries }
    }

    /// How many labels are predicted (and so counted by the loss) when `prompt_len` virtual
    /// tokens come first: a label at a row's very first position has no predictor.
    pub fn predicted(&self, prompt_len: usize) -> usize {
        self.entries
            .iter()
            .filter(|(_, index, _)| prompt_len + index >= 1)
            .count()
    }

    /// For hidden states of `seq_len` positions per row whose first `prompt_len` are virtual
    /// tokens: the flat index (into `[B * seq_len]`) of the position predicting each label, and
    /// the label. A label at the very first position has no predictor and is skipped, as in the
    /// shifted loss.
    fn predictions(&self, seq_len: usize, prompt_len: usize) -> (Vec<i64>, Vec<i64>) {
        self.entries
            .iter()
            .filter(|(_, index, _)| prompt_len + index >= 1)
            .map(|&(row, index, label)| ((row * seq_len + prompt_len + index - 1) as i64, label))
            .unzip()
    }

    /// The labels placed for hidden states of `seq_len` positions per row whose first
    /// `prompt_len` are virtual tokens, on `device`, for [`fused_lm_loss`].
    pub fn predicted_labels(
        &self,
        seq_len: usize,
        prompt_len: usize,
        device: &Device,
    ) -> PredictedLabels {
        let (positions, labels) = self.predictions(seq_len, prompt_len);
        let count = positions.len();
        let tensor = |values| Tensor::<1, Int>::from_data(TensorData::new(values, [count]), device);
        PredictedLabels {
            seq_len,
            tensors: (count > 0).then(|| (tensor(positions), tensor(labels))),
        }
    }
}

/// [`LossTargets`] placed for hidden states of `seq_len` positions per row, on the device: the
/// flat index of the position that predicts each counted label, and the label.
///
/// Made before the forward pass ([`LossTargets::predicted_labels`]): on CUDA, a copy from the
/// host waits for every kernel queued before it, so an upload between the forward pass and the
/// backward pass would stall the device's queue in the middle of every step.
#[derive(Clone, Debug)]
pub struct PredictedLabels {
    seq_len: usize,
    /// `None` when no label is predicted.
    tensors: Option<(Tensor<1, Int>, Tensor<1, Int>)>,
}

/// Rows of logits [`fused_lm_loss`] materialises at once on the host's processor. Each chunk
/// packs the whole `[vocab, d]` head again for its matrix products (two, three when the head is
/// trained), a cost that only more rows per chunk amortise, whatever the vocabulary: the loss of
/// 1,024 GPT-2 rows, forward and backward, took 1.09 s in 128-row chunks and 0.94 s in 256-row
/// ones on flex, 1.5–1.8 s and 1.3 s on LibTorch CPU, and 1,024-row chunks saved only 9–10%
/// more for 300 MiB more memory (BENCHMARKS.md). A 256-row chunk is 51 MB of f32 logits for
/// GPT-2, 131 MB for Llama 3.
const HOST_LOSS_ROWS: usize = 256;

/// Logits [`fused_lm_loss`] materialises at once on a GPU through LibTorch: 2²⁷ values, 512
/// MiB in f32 (2,670 of GPT-2's rows, 1,046 of Llama 3's). There a chunk costs about ten kernel
/// launches whatever its size, and its gradient product `[rows, vocab] × [vocab, d]` has a
/// `[rows, d]` output that fills only a few of the GPU's cores when `rows` is small: in 128-row
/// chunks GPT-2's loss at 32 × 512 tokens was 128 chunks a step. (Hugging Face materialises
/// every row's logits at once: 3.3 GB in f32 at that shape.)
const LIBTORCH_GPU_LOSS_VALUES: usize = 1 << 27;

/// Logits [`fused_lm_loss`] materialises at once on the other accelerators (CubeCL: Vulkan,
/// CUDA), where the cross-entropy runs as Burn's tensor operations, several `[rows, vocab]` f32
/// tensors alive at once, and where a buffer bound to a shader may be no larger than the
/// adapter allows (128 MiB is WebGPU's default, and some GPUs' own limit): 2²⁴ values, 64 MiB
/// in f32 (333 of GPT-2's rows, 130 of Llama 3's).
const OTHER_GPU_LOSS_VALUES: usize = 1 << 24;

/// How many rows of logits [`fused_lm_loss`] computes at once on `device` for a vocabulary of
/// `vocab` tokens.
pub fn loss_chunk_rows(device: &Device, vocab: usize) -> usize {
    let values = match engine(device) {
        Engine::HostCpu => return HOST_LOSS_ROWS,
        Engine::LibTorchGpu => LIBTORCH_GPU_LOSS_VALUES,
        Engine::Other => OTHER_GPU_LOSS_VALUES,
    };
    (values / vocab.max(1)).max(1)
}

/// The mean next-token loss over `targets`, as [`mean_loss`] computes it from the full logits,
/// without ever building them: the LM head (`head`, the tied `[vocab, d]` embedding) and the
/// cross-entropy run in chunks of rows outside the autodiff graph, and the gradient they give
/// `hidden` (and `head`, when it is trained) is handed to autodiff
/// ([`known_gradient`](crate::known_gradient); through a linear surrogate on backends the
/// crate's extensions do not route, and with the fused layers turned off,
/// [`set_fused_layers`](crate::fused_layers::set_fused_layers)).
///
/// Why: under autodiff the `[B, T, vocab]` logits, their log-softmax and every step of its
/// backward pass are each a tensor of the size of the whole vocabulary per position, and on
/// CPU the decomposed log-softmax runs element by element on one core. Here each chunk's
/// cross-entropy and its gradient are one operation
/// ([`cross_entropy_with_grad`](crate::fused_cross_entropy::cross_entropy_with_grad)), only
/// the positions that predict a label are computed, and memory holds one chunk of logits at a
/// time. The gradient is exact: for the loss
/// `L = mean_i (logsumexp(z_i) - z_i[t_i])` with `z_i = W h_i`, `dL/dz_i = (softmax(z_i) -
/// onehot(t_i)) / N`, so `dL/dh_i = (dL/dz_i) W` and `dL/dW = Σ_i (dL/dz_i)ᵀ h_i`.
///
/// `hidden`: `[B, T, d]` after the final layer norm, whose first `prompt_len` positions are
/// virtual tokens. `train_head`: whether `head` is trained (full fine-tuning), so that its
/// gradient is computed — said by the caller, since a head cast inside the graph (mixed
/// precision) is not a leaf that reports requiring gradients. Returns `[1]`; 0 when nothing is
/// counted.
pub fn fused_lm_loss(
    hidden: Tensor<3>,
    head: Tensor<2>,
    train_head: bool,
    targets: &PredictedLabels,
) -> Tensor<1> {
    let chunk_rows = loss_chunk_rows(&hidden.device(), head.dims()[0]);
    fused_lm_loss_in_chunks(hidden, head, train_head, targets, chunk_rows)
}

/// [`fused_lm_loss`] computing `chunk_rows` rows of logits at a time (at least one); the result
/// does not depend on it beyond the order of f32 sums.
pub fn fused_lm_loss_in_chunks(
    hidden: Tensor<3>,
    head: Tensor<2>,
    train_head: bool,
    targets: &PredictedLabels,
    chunk_rows: usize,
) -> Tensor<1> {
    let chunk_rows = chunk_rows.max(1);
    let [batch, len, width] = hidden.dims();
    assert_eq!(
        len, targets.seq_len,
        "the labels were placed for hidden states of another length"
    );
    let Some((positions, labels)) = targets.tensors.clone() else {
        return hidden.sum().mul_scalar(0.0).cast(DType::F32);
    };
    let count = positions.dims()[0];
    let rows = hidden.reshape([batch * len, width]).select(0, positions);

    let (rows_const, head_const) = (
        rows.clone().detach().without_autodiff(),
        head.clone().detach().without_autodiff(),
    );
    let mut total = Tensor::<1>::zeros([1], &rows_const.device());
    let mut row_grads = Vec::with_capacity(count.div_ceil(chunk_rows));
    let mut head_grad: Option<Tensor<2>> = None;
    for start in (0..count).step_by(chunk_rows) {
        let size = chunk_rows.min(count - start);
        let h = rows_const.clone().narrow(0, start, size);
        let target = labels.clone().without_autodiff().narrow(0, start, size);
        // The head's product in the model's type, the softmax in f32 (as under autocast).
        let logits = h.clone().matmul(head_const.clone().transpose());
        let (loss, logit_grad) = cross_entropy_with_grad(logits, target);
        total = total + loss;
        let logit_grad = logit_grad.cast(head_const.dtype());
        if train_head {
            let grad = logit_grad.clone().transpose().matmul(h);
            head_grad = Some(match head_grad {
                Some(sum) => sum + grad,
                None => grad,
            });
        }
        row_grads.push(logit_grad.matmul(head_const.clone()));
    }
    let scale = 1.0 / count as f64;
    let row_grad = Tensor::cat(row_grads, 0);
    let loss = total.mul_scalar(scale);
    if crate::fused_layers::fused_on(&loss.device()) {
        // The gradients handed to autodiff as they are.
        let loss = with_known_gradient(loss, rows, row_grad, scale);
        return match head_grad {
            Some(grad) => with_known_gradient(loss, head, grad, scale),
            None => loss,
        };
    }
    // Elsewhere through a linear surrogate: value the loss, gradient the surrogate's, which is
    // the loss's.
    let mut surrogate = (rows * row_grad.mul_scalar(scale)).sum().cast(DType::F32);
    if let Some(grad) = head_grad {
        surrogate = surrogate + (head * grad.mul_scalar(scale)).sum().cast(DType::F32);
    }
    surrogate.clone() - surrogate.detach() + loss
}
