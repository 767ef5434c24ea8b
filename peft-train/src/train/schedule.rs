//! How long a run is and how its steps go: epochs and optimizer steps, the learning-rate
//! schedule, the optimizer.

use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;

use peft_decoder::fused_adamw::FusedAdamW;

use crate::train::{Schedule, TrainSettings};

/// The length of a run over `items` training examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepPlan {
    pub epochs: usize,
    /// Training examples each epoch takes (fewer than all when `--max-steps` ends the run
    /// within its first epoch).
    pub items_per_epoch: usize,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
}

impl StepPlan {
    /// Epochs, examples per epoch and optimizer steps, honouring `--max-steps`. (Products
    /// saturate: the counts come from flags, and any of them may be huge.)
    pub fn new(settings: &TrainSettings, items: usize) -> Self {
        let batch_size = loader_batch_size(settings.batch_size, items);
        let per_step = batch_size.saturating_mul(settings.grad_accumulation);
        let steps_per_epoch = items
            .div_ceil(batch_size)
            .div_ceil(settings.grad_accumulation)
            .max(1);
        let (epochs, items_per_epoch) = match settings.max_steps {
            Some(steps) if steps < steps_per_epoch => {
                (1, steps.saturating_mul(per_step).min(items))
            }
            Some(steps) => (
                settings.epochs.min(steps.div_ceil(steps_per_epoch)).max(1),
                items,
            ),
            None => (settings.epochs.max(1), items),
        };
        let total_steps =
            epochs.saturating_mul(steps_per_epoch.min(items_per_epoch.div_ceil(per_step)));
        Self {
            epochs,
            items_per_epoch,
            total_steps,
        }
    }
}

/// The batch size a data loader of `items` examples is given for `--batch-size`: a batch
/// larger than the data is all of it, as PyTorch's `DataLoader` gives — and Burn's loader
/// reserves room for the whole batch up front, so a huge flag would otherwise exhaust memory.
pub(crate) fn loader_batch_size(batch_size: usize, items: usize) -> usize {
    batch_size.min(items).max(1)
}

/// Linear warm-up to `--lr`, then constant, linear decay to 0 or cosine decay to 0.
pub(crate) fn lr_schedule(settings: &TrainSettings, total_steps: usize) -> LrSchedulerConfig {
    let warmup = settings.warmup_steps.min(total_steps.saturating_sub(1));
    let rest = total_steps.saturating_sub(warmup).max(1);
    let after: LrSchedulerConfig = match settings.schedule {
        Schedule::Constant => LrSchedulerConfig::Constant(settings.lr),
        Schedule::Linear => LinearLrSchedulerConfig::new(settings.lr, 0.0, rest).into(),
        Schedule::Cosine => CosineAnnealingLrSchedulerConfig::new(settings.lr, rest).into(),
    };
    if warmup == 0 {
        return after;
    }
    let ramp =
        LinearLrSchedulerConfig::new(settings.lr / warmup as f64, settings.lr, warmup).into();
    SequentialLrSchedulerConfig::new(vec![ramp, after], vec![warmup]).into()
}

/// The optimizer every training run uses (and `peft-bench` measures): PyTorch's `AdamW`
/// (betas 0.9, 0.999) with this weight decay and epsilon — Burn's own default epsilon is
/// 1e-5, PyTorch's 1e-8 — as one fused pass per parameter on the CPU backends and PyTorch's
/// in-place kernels on LibTorch. Gradient clipping is the trainee's (by the global norm, see
/// [`crate::train::clip`]), not Burn's per-tensor clipping.
pub fn adamw(weight_decay: f64, epsilon: f64) -> FusedAdamW {
    FusedAdamW::new(weight_decay as f32, epsilon as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(batch_size: usize, epochs: usize, max_steps: Option<usize>) -> TrainSettings {
        TrainSettings {
            batch_size,
            epochs,
            max_steps,
            ..TrainSettings::default()
        }
    }

    #[test]
    fn max_steps_shortens_the_run() {
        // 10 examples in batches of 4: 3 steps an epoch.
        let full = StepPlan::new(&settings(4, 2, None), 10);
        assert_eq!(
            (full.epochs, full.items_per_epoch, full.total_steps),
            (2, 10, 6)
        );
        let within_one = StepPlan::new(&settings(4, 2, Some(2)), 10);
        assert_eq!(
            (
                within_one.epochs,
                within_one.items_per_epoch,
                within_one.total_steps
            ),
            (1, 8, 2)
        );
        let across = StepPlan::new(&settings(4, 5, Some(4)), 10);
        assert_eq!((across.epochs, across.total_steps), (2, 6));
    }
}
