//! Gradient clipping by the global norm, as PyTorch's `clip_grad_norm_` (and so Hugging Face's
//! `Trainer`) does it: every trainable parameter's gradient is scaled by the same factor, so
//! that their joint L2 norm is at most the limit and the update keeps its direction.
//!
//! Burn's own `GradientClipping::Norm` clips each parameter tensor on its own, which changes
//! the direction of the update whenever a model has more than one trainable tensor (a prefix
//! with a reparametrisation MLP has five).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Scales `grads` (of `module`'s parameters) so that their global L2 norm is at most
/// `max_norm`; returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let mut total = SquaredNorm { grads, sum: None };
    module.visit(&mut total);
    let Some(sum) = total.sum else {
        return 0.0; // no gradients: nothing to clip
    };
    let norm = sum.sqrt().into_scalar::<f32>();
    // PyTorch's factor, with its epsilon, so both clip identically.
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        scale_gradients(module, grads, factor);
    }
    norm
}

/// Multiplies every gradient of `module`'s parameters in `grads` by `factor`.
pub fn scale_gradients<M: Module>(module: &M, grads: &mut GradientsParams, factor: f32) {
    module.visit(&mut Scale { grads, factor });
}

/// Sums the squares of every gradient entry, on the device (one read at the end).
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(sum) => sum + squares,
                None => squares,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<2>>,
    }

    fn setup(scale: f32) -> (Two, GradientsParams, Device) {
        let device = peft_runtime::ComputeBackend::Flex.device().unwrap();
        let two = Two {
            a: Param::from_tensor(Tensor::zeros([2], &device)),
            b: Param::from_tensor(Tensor::zeros([1, 2], &device)),
        };
        let mut grads = GradientsParams::new();
        // Joint norm 5·scale: (3, 0) and (0, 4).
        grads.register(
            two.a.id,
            Tensor::<1>::from_floats([3.0 * scale, 0.0], &device),
        );
        grads.register(
            two.b.id,
            Tensor::<2>::from_floats([[0.0, 4.0 * scale]], &device),
        );
        (two, grads, device)
    }

    fn values<const D: usize>(grads: &GradientsParams, param: &Param<Tensor<D>>) -> Vec<f32> {
        grads
            .get::<D>(param.id)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn scales_every_gradient_by_one_factor() {
        let (two, mut grads, _) = setup(2.0);
        let norm = clip_global_norm(&two, &mut grads, 5.0);
        assert!((norm - 10.0).abs() < 1e-5);
        // Per-tensor clipping would give (5, 0) and (0, 5); the global norm halves both.
        let factor = 5.0 / (10.0 + 1e-6);
        let a = values(&grads, &two.a);
        let b = values(&grads, &two.b);
        assert!((a[0] - 6.0 * factor).abs() < 1e-5, "{a:?}");
        assert!((b[1] - 8.0 * factor).abs() < 1e-5, "{b:?}");
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let (two, mut grads, _) = setup(0.1);
        let norm = clip_global_norm(&two, &mut grads, 1.0);
        assert!((norm - 0.5).abs() < 1e-6);
        assert_eq!(values(&grads, &two.a), [3.0 * 0.1, 0.0]);
        assert_eq!(values(&grads, &two.b), [0.0, 4.0 * 0.1]);
    }
}
