//! PyTorch's `AdamW` update with few passes over memory, on the CPU backends and LibTorch.
//!
//! Burn's `AdamW` updates a parameter tensor in fifteen element-wise operations, each a pass
//! over the tensor with a fresh result; on the CPU backends each runs on one core. For prefix
//! tuning's projection (14.8 M parameters) and full fine-tuning (124 M) that was a tenth of a
//! step or more. [`FusedAdamW`] keeps Burn's optimizer state (`AdamWState`), so a checkpoint
//! written with either resumes with the other, and updates:
//! - on flex and ndarray, in one pass over the parameter, its gradient and both moments, split
//!   across cores and written in place where the tensors are not shared, in the same order of
//!   f32 operations as Burn's `AdamW`;
//! - on LibTorch (CPU or CUDA), in PyTorch's own fused kernel (`AdamW(fused=True)`), one pass
//!   and one launch per parameter tensor, compiled in from `csrc/fused_adamw.cpp` since tch
//!   binds no `_fused_adamw_` (nine of PyTorch's in-place kernels per tensor before: 1,332
//!   launches a step for full fine-tuning's 148 tensors, more than its forward and backward).
//!
//! Other backends (Vulkan, CubeCL CUDA) and parameters that are not f32 take Burn's `AdamW`
//! itself.

// ndarray is deprecated upstream but still one of this project's CPU backends; the routing the
// extension macro generates names it.
#![allow(deprecated)]

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::extension::{ELEMENTS_PER_TASK, WritableF32};

/// AdamW with PyTorch's betas (0.9, 0.999), a weight decay and an epsilon, for Burn's `Learner`
/// ([`FusedAdamW::init`]).
#[derive(Clone)]
pub struct FusedAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// Burn's own `AdamW` with the same settings: the update wherever the fused one does not run.
    burn: AdamW,
}

impl FusedAdamW {
    /// PyTorch's betas (0.9, 0.999).
    pub fn new(weight_decay: f32, epsilon: f32) -> Self {
        let (beta_1, beta_2) = (0.9, 0.999);
        let burn = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_weight_decay(weight_decay)
            .with_epsilon(epsilon)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            burn,
        }
    }

    /// The optimizer for Burn's `Learner`, every parameter in one group.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.clone())
    }

    /// Burn's own `AdamW` with the same settings, for comparison (`peft-bench --optimizer burn`).
    pub fn init_burns(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.burn.clone())
    }

    /// The constants of the update at step `step` (1 for the first) with learning rate `lr`,
    /// computed as Burn's `AdamW` computes them.
    fn update(&self, lr: LearningRate, step: usize) -> AdamWUpdate {
        let time = i32::try_from(step).unwrap_or(i32::MAX);
        AdamWUpdate {
            step,
            lr: lr as f32,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            decay: (1.0 - lr * f64::from(self.weight_decay)) as f32,
            bias_correction_1: 1.0 - self.beta_1.powi(time),
            bias_correction_2: 1.0 - self.beta_2.powi(time),
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let fused = fused_on(&tensor.device())
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && state.as_ref().is_none_or(|state| {
                state.momentum.max_moment_2.is_none()
                    && state.momentum.moment_1.dtype() == DType::F32
                    && state.momentum.moment_2.dtype() == DType::F32
            });
        if !fused {
            return self.burn.step(lr, tensor, grad, state);
        }
        let (moment_1, moment_2, time) = match state {
            Some(AdamWState { momentum }) => (momentum.moment_1, momentum.moment_2, momentum.time),
            // Zero moments give exactly the first step's `(1 − β)·g` and `(1 − β)·g²`.
            None => (grad.zeros_like(), grad.zeros_like(), 0),
        };
        let time = time + 1;
        let (tensor, moment_1, moment_2) = <Dispatch as AdamWOps>::adamw_step(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            self.update(lr, time),
        );
        let momentum = AdaptiveMomentumState::new(
            time,
            Tensor::from_dispatch(moment_1),
            Tensor::from_dispatch(moment_2),
        );
        (
            Tensor::from_dispatch(tensor),
            Some(AdamWState::new(momentum)),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <AdamW as Optimizer>::to_device(state, device)
    }
}

/// Whether the fused update runs on `device`'s backend (f32 parameters): the CPU backends,
/// whose element-wise operations run one at a time on one core, and LibTorch.
pub fn fused_on(device: &Device) -> bool {
    crate::extension::runs_on(device)
}

/// The constants of one AdamW update, as f32 like the tensors they scale.
#[derive(Clone, Copy, Debug)]
pub struct AdamWUpdate {
    /// The step's number, 1 for the first. It and `weight_decay` are read by LibTorch's kernel
    /// (the CPU kernel takes `decay`).
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    step: usize,
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    weight_decay: f32,
    /// `1 − lr·weight_decay`: the decoupled weight decay's factor (exactly 1 without decay).
    decay: f32,
    /// `1 − β₁ᵗ` and `1 − β₂ᵗ`.
    bias_correction_1: f32,
    bias_correction_2: f32,
}

impl AdamWUpdate {
    /// One element's update: the new parameter and moments from the old ones and the gradient,
    /// in the order of Burn's `AdamW` operations.
    #[inline(always)]
    fn apply(&self, param: &mut f32, moment_1: &mut f32, moment_2: &mut f32, grad: f32) {
        *moment_1 = *moment_1 * self.beta_1 + grad * (1.0 - self.beta_1);
        *moment_2 = *moment_2 * self.beta_2 + grad * grad * (1.0 - self.beta_2);
        let corrected_1 = *moment_1 / self.bias_correction_1;
        let corrected_2 = *moment_2 / self.bias_correction_2;
        let delta = corrected_1 / (corrected_2.sqrt() + self.epsilon);
        *param = *param * self.decay - delta * self.lr;
    }
}

/// The AdamW update as one operation, implemented on the CPU backends and LibTorch.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
)]
pub trait AdamWOps: Backend {
    /// The parameter and its two moments after one update with `grad`, in that order; all four
    /// tensors have one shape.
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        update: AdamWUpdate,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// [`AdamWOps::adamw_step`] on a CPU backend. The values are taken out of the tensors (without a
/// copy where a tensor is not shared) and updated in place.
fn cpu_adamw_step<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    update: AdamWUpdate,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [mut param, mut grad, mut moment_1, mut moment_2] =
        [param, grad, moment_1, moment_2].map(WritableF32::<B>::of);
    param
        .values()
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(moment_1.values().par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(moment_2.values().par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(grad.values().par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(((param, moment_1), moment_2), grad)| {
            for (((param, moment_1), moment_2), grad) in
                param.iter_mut().zip(moment_1).zip(moment_2).zip(grad)
            {
                update.apply(param, moment_1, moment_2, *grad);
            }
        });
    (
        param.into_tensor(DType::F32),
        moment_1.into_tensor(DType::F32),
        moment_2.into_tensor(DType::F32),
    )
}

macro_rules! cpu_adamw {
    ($backend:ty) => {
        impl AdamWOps for $backend {
            fn adamw_step(
                param: FloatTensor<Self>,
                grad: FloatTensor<Self>,
                moment_1: FloatTensor<Self>,
                moment_2: FloatTensor<Self>,
                update: AdamWUpdate,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                cpu_adamw_step::<Self>(param, grad, moment_1, moment_2, update)
            }
        }
    };
}

#[cfg(feature = "flex")]
cpu_adamw!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
cpu_adamw!(burn::backend::NdArray);

/// PyTorch's fused AdamW kernel in place. A tensor that another one still reads is copied first.
#[cfg(feature = "tch")]
impl AdamWOps for burn::backend::libtorch::LibTorch {
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        update: AdamWUpdate,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::libtorch::TchTensor;
        // The kernel reads every tensor as one run of memory in row-major order, and writes the
        // parameter and the moments in place. Burn's `Learner` updates a clone of the model while
        // it still holds the original, so a parameter is usually shared here: then it is copied
        // (into `empty_like`: tch's `copy` zero-fills its result first, a second pass).
        let writable = |tensor: TchTensor| match (tensor.can_mut(), tensor.tensor.is_contiguous()) {
            (true, true) => tensor,
            (false, true) => {
                let mut copy = tensor.tensor.empty_like();
                copy.copy_(&tensor.tensor);
                TchTensor::new(copy)
            }
            (_, false) => TchTensor::new(tensor.tensor.contiguous()),
        };
        let [param, moment_1, moment_2] = [param, moment_1, moment_2].map(writable);
        let grad = TchTensor::new(grad.tensor.contiguous());
        // PyTorch's CPU kernel reads the gradient over the parameter's size without checking it.
        assert_eq!(
            grad.tensor.size(),
            param.tensor.size(),
            "AdamW was given a gradient of another shape than its parameter"
        );
        let step = libtorch_step_count(update.step, param.tensor.device());
        let failure = unsafe {
            // SAFETY: each pointer is a live `at::Tensor` owned by a tensor held here until the
            // call returns.
            peft_fused_adamw_step(
                param.tensor.as_ptr(),
                grad.tensor.as_ptr(),
                moment_1.tensor.as_ptr(),
                moment_2.tensor.as_ptr(),
                step.as_ptr(),
                f64::from(update.lr),
                f64::from(update.beta_1),
                f64::from(update.beta_2),
                f64::from(update.weight_decay),
                f64::from(update.epsilon),
            )
        };
        crate::extension::check_csrc_call(failure, "fused AdamW step");
        (param, moment_1, moment_2)
    }
}

#[cfg(feature = "tch")]
unsafe extern "C" {
    /// `csrc/fused_adamw.cpp`: `at::_fused_adamw_` on one parameter tensor; null, or ATen's
    /// message.
    fn peft_fused_adamw_step(
        param: *const torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        exp_avg: *const torch_sys::C_tensor,
        exp_avg_sq: *const torch_sys::C_tensor,
        step: *const torch_sys::C_tensor,
        lr: f64,
        beta_1: f64,
        beta_2: f64,
        weight_decay: f64,
        epsilon: f64,
    ) -> *const std::ffi::c_char;
}

/// The step number as the f32 scalar on `device` that PyTorch's kernel reads. Every parameter
/// of a step has the same one, so it is made once a step (a launch on a GPU) and kept.
#[cfg(feature = "tch")]
fn libtorch_step_count(time: usize, device: tch::Device) -> tch::Tensor {
    use std::sync::Mutex;
    static LAST: Mutex<Option<(usize, tch::Device, tch::Tensor)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match &*last {
        Some((kept_time, kept_device, step)) if *kept_time == time && *kept_device == device => {
            step.shallow_clone()
        }
        _ => {
            let step = tch::Tensor::full([], time as f64, (tch::Kind::Float, device));
            *last = Some((time, device, step.shallow_clone()));
            step
        }
    }
}

#[cfg(all(test, feature = "tch"))]
#[allow(deprecated)] // burn-tch is deprecated upstream but still one of this project's backends
mod tests {
    use super::*;
    use burn::backend::libtorch::{LibTorch, TchTensor};

    /// PyTorch refusing the kernel's operands (here a gradient of another type) is a panic with
    /// its message, not an exception crossing into Rust (which would abort the process).
    #[test]
    #[should_panic(expected = "libtorch's fused AdamW step failed")]
    fn a_refused_step_is_a_panic_with_pytorchs_message() {
        let tensor = |values: &[f32]| TchTensor::new(tch::Tensor::from_slice(values));
        let update = FusedAdamW::new(0.01, 1e-8).update(1e-3, 1);
        let _ = <LibTorch as AdamWOps>::adamw_step(
            tensor(&[1.0, 2.0]),
            TchTensor::new(tch::Tensor::from_slice(&[0.1f64, 0.2])),
            tensor(&[0.0, 0.0]),
            tensor(&[0.0, 0.0]),
            update,
        );
    }
}
