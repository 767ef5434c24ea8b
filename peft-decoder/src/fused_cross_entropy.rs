//! The cross-entropy of rows of logits and its gradient as one operation: the inner step of
//! [`fused_lm_loss`](crate::loss::fused_lm_loss), run on each chunk of rows outside the
//! autodiff graph.
//!
//! As Burn tensor operations this is a softmax (itself a maximum, a subtraction, an exponential,
//! a sum and a division), two row maxima, a logarithm, a gather, a sum and a scatter: a dozen
//! passes over `[rows, vocab]` values (51 MB per 256-row chunk of GPT-2's vocabulary), each with
//! a fresh result, and on flex the exponential is the C library's scalar `expf`. Here:
//! - on flex and ndarray, each row is read twice and written once, on every core, with the
//!   vectorised exponential of [`crate::cpu_exp`], the gradient written over the logits where
//!   they are not shared;
//! - on LibTorch, PyTorch's `log_softmax` and five in-place or reducing kernels (on CUDA, fewer
//!   launches and allocations per chunk).
//!
//! Other backends (Vulkan, CubeCL CUDA) keep the tensor operations
//! ([`cross_entropy_with_grad_decomposed`]).

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

use burn::backend::{
    Backend, Dispatch, TensorMetadata, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, IndexingUpdateOp, read_sync};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cpu_exp::exp_in_place;
use crate::extension::{WritableF32, runs_on, tensor_of};

/// The cross-entropy of rows of logits, with its gradient, implemented on the CPU backends and
/// LibTorch.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
)]
pub trait CrossEntropyOps: Backend {
    /// For `logits` `[rows, vocab]` and one target class per row (`targets` `[rows]`, each in
    /// `0..vocab`): the sum over the rows of `logsumexp(row) − row[target]`, `[1]`, and its
    /// gradient with respect to the logits, `softmax(row) − onehot(target)`, `[rows, vocab]`;
    /// both f32, computed in f32 whatever the logits' type (as under autocast).
    fn cross_entropy_with_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether [`cross_entropy_with_grad`] may use the fused operation (the default).
static FUSED_CROSS_ENTROPY: AtomicBool = AtomicBool::new(true);

/// Turns the fused cross-entropy off (or back on) for the whole process, so that benchmarks can
/// compare it with the tensor operations on the same backend. Results are the same either way,
/// to rounding.
pub fn set_fused_cross_entropy(enabled: bool) {
    FUSED_CROSS_ENTROPY.store(enabled, Ordering::Relaxed);
}

/// [`CrossEntropyOps::cross_entropy_with_grad`] for tensors outside the autodiff graph: the
/// fused operation where the backend has it, Burn's tensor operations elsewhere.
pub fn cross_entropy_with_grad(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
) -> (Tensor<1>, Tensor<2>) {
    if !FUSED_CROSS_ENTROPY.load(Ordering::Relaxed) || !runs_on(&logits.device()) {
        return cross_entropy_with_grad_decomposed(logits, targets);
    }
    let (loss, grad) = <Dispatch as CrossEntropyOps>::cross_entropy_with_grad(
        logits.into_dispatch(),
        targets.into_dispatch(),
    );
    (Tensor::from_dispatch(loss), Tensor::from_dispatch(grad))
}

/// The same as Burn tensor operations, on any backend.
pub fn cross_entropy_with_grad_decomposed(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
) -> (Tensor<1>, Tensor<2>) {
    let [rows, _] = logits.dims();
    let logits = logits.cast(DType::F32);
    let targets = targets.reshape([rows, 1]);
    let probs = softmax(logits.clone(), 1);
    // logsumexp(z) = max(z) − ln(max softmax(z)): the largest probability is at least
    // 1/vocab, so its log is always finite, and no second pass of exponentials is needed.
    let log_sum_exp = logits.clone().max_dim(1) - probs.clone().max_dim(1).log();
    let picked = logits.gather(1, targets.clone());
    let loss = (log_sum_exp - picked).sum();
    let minus_one = Tensor::<2>::full([rows, 1], -1.0, &probs.device());
    let grad = probs.scatter(1, targets, minus_one, IndexingUpdateOp::Add);
    (loss, grad)
}

/// Rows per task: a few of GPT-2's 50,257-wide rows are enough to amortise scheduling.
const ROWS_PER_TASK: usize = 4;

/// [`CrossEntropyOps::cross_entropy_with_grad`] on a CPU backend: per row, one pass for the
/// maximum, one that exponentiates in place and sums, one that scales. A target outside
/// `0..vocab` gives a NaN loss rather than a panic.
fn cpu_cross_entropy_with_grad<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = logits.device();
    let vocab = logits.shape()[1];
    let targets = read_sync(B::int_into_data(targets))
        .expect("a CPU backend reads its own tensor")
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("converted to i64 above");
    // The gradient is written over the logits.
    let mut values = WritableF32::<B>::of(logits);
    let mut losses = vec![0.0f32; targets.len()];
    if vocab > 0 {
        values
            .values()
            .par_chunks_mut(vocab * ROWS_PER_TASK)
            .zip(losses.par_chunks_mut(ROWS_PER_TASK))
            .zip(targets.par_chunks(ROWS_PER_TASK))
            .for_each(|((rows, losses), targets)| {
                for ((row, loss), &target) in rows.chunks_mut(vocab).zip(losses).zip(targets) {
                    *loss = cross_entropy_row(row, target);
                }
            });
    }
    // The rows' losses summed in f64, then rounded once.
    let total = losses.iter().map(|&loss| f64::from(loss)).sum::<f64>() as f32;
    (
        tensor_of::<B>(vec![total], Shape::new([1]), DType::F32, &device),
        values.into_tensor(DType::F32),
    )
}

/// One row's `logsumexp(row) − row[target]`, leaving `softmax(row) − onehot(target)` in `row`.
fn cross_entropy_row(row: &mut [f32], target: i64) -> f32 {
    let target = usize::try_from(target)
        .ok()
        .filter(|&target| target < row.len());
    let picked = target.map_or(f32::NAN, |target| row[target]);
    // A NaN anywhere makes the maximum NaN (`f32::max` would skip it), and so the loss.
    let max = row.iter().fold(f32::NEG_INFINITY, |max, &value| {
        if value > max || value.is_nan() {
            value
        } else {
            max
        }
    });
    row.iter_mut().for_each(|value| *value -= max);
    exp_in_place(row);
    // The largest term is exp(0) = 1, so the sum is at least 1.
    let sum: f32 = row.iter().sum();
    let inverse = sum.recip();
    row.iter_mut().for_each(|value| *value *= inverse);
    if let Some(target) = target {
        row[target] -= 1.0;
    }
    max + sum.ln() - picked
}

macro_rules! cpu_cross_entropy {
    ($backend:ty) => {
        impl CrossEntropyOps for $backend {
            fn cross_entropy_with_grad(
                logits: FloatTensor<Self>,
                targets: IntTensor<Self>,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                cpu_cross_entropy_with_grad::<Self>(logits, targets)
            }
        }
    };
}

#[cfg(feature = "flex")]
cpu_cross_entropy!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
cpu_cross_entropy!(burn::backend::NdArray);

/// `log_softmax`, then the picked log-probabilities' negated sum, and the gradient as the
/// log-probabilities exponentiated in place with 1 taken off each row's target.
#[cfg(feature = "tch")]
impl CrossEntropyOps for burn::backend::libtorch::LibTorch {
    fn cross_entropy_with_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::libtorch::TchTensor;
        tch::no_grad(|| {
            let targets = targets.tensor.unsqueeze(1);
            let mut grad = logits.tensor.log_softmax(1, tch::Kind::Float);
            let loss = grad
                .gather(1, &targets, false)
                .sum(tch::Kind::Float)
                .neg()
                .reshape([1]);
            let _ = grad.exp_();
            let _ = grad.scatter_value_reduce_(1, &targets, -1.0, "add");
            (TchTensor::new(loss), TchTensor::new(grad))
        })
    }
}
