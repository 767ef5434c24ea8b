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
//! - on LibTorch (CPU or CUDA), in nine of PyTorch's in-place kernels, the operations of
//!   PyTorch's own single-tensor `AdamW` (on CUDA, fifteen kernel launches and allocations per
//!   parameter tensor were six too many for full fine-tuning's 148 tensors).
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

use crate::extension::WritableF32;

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

    /// The constants of the update at step `time` (1 for the first) with learning rate `lr`,
    /// computed as Burn's `AdamW` computes them.
    fn update(&self, lr: LearningRate, time: usize) -> AdamWUpdate {
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        AdamWUpdate {
            lr: lr as f32,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
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
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
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

/// Elements per task: enough to amortise scheduling, few enough to share between cores.
const ELEMENTS_PER_TASK: usize = 64 * 1024;

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

/// PyTorch's single-tensor AdamW (`torch.optim.adamw`, `foreach=False`) in place: the decay,
/// `m.lerp_(g, 1 − β₁)`, `v.lerp_(g², 1 − β₂)`, and `p += m / denom` with the step size folded
/// into `denom = (√v / √(1 − β₂ᵗ) + ε) / −(lr / (1 − β₁ᵗ))`.
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
        // A buffer that another tensor still reads is copied before it is written.
        let writable = |tensor: TchTensor| match tensor.can_mut() {
            true => tensor,
            false => TchTensor::new(tensor.tensor.copy()),
        };
        let [mut moment_1, mut moment_2] = [moment_1, moment_2].map(writable);
        let step_size = f64::from(update.lr) / f64::from(update.bias_correction_1);
        let bias_correction_2_sqrt = f64::from(update.bias_correction_2).sqrt();
        let param = tch::no_grad(|| {
            // The weight decay. Burn's `Learner` updates a clone of the model while it still
            // holds the original, so a parameter is usually shared here: then the decayed
            // parameter is a new tensor, made in the pass a copy would have taken.
            let decay = f64::from(update.decay);
            let mut param = match (param.can_mut(), decay != 1.0) {
                (true, true) => {
                    let mut param = param;
                    let _ = param.tensor.g_mul_scalar_(decay);
                    param
                }
                (true, false) => param,
                (false, true) => TchTensor::new(param.tensor.g_mul_scalar(decay)),
                (false, false) => TchTensor::new(param.tensor.copy()),
            };
            let _ = moment_1
                .tensor
                .lerp_(&grad.tensor, f64::from(1.0 - update.beta_1));
            // One scratch buffer: g², then the denominator. The gradient's own where no other
            // tensor reads it (autodiff hands each gradient over): a new one would cost, on
            // the CPU, fresh pages every step (7× the time of the pass for GPT-2's embedding).
            let mut scratch = match grad.can_mut() {
                true => {
                    let mut grad = grad.tensor;
                    let _ = grad.square_();
                    grad
                }
                false => grad.tensor.square(),
            };
            let _ = moment_2
                .tensor
                .lerp_(&scratch, f64::from(1.0 - update.beta_2));
            let _ = moment_2.tensor.sqrt_out(&scratch);
            let _ = scratch.g_div_scalar_(bias_correction_2_sqrt);
            let _ = scratch.g_add_scalar_(f64::from(update.epsilon));
            let _ = scratch.g_div_scalar_(-step_size);
            let _ = param.tensor.addcdiv_(&moment_1.tensor, &scratch);
            param
        });
        (param, moment_1, moment_2)
    }
}
