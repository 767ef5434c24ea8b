//! The fused AdamW step ([`peft_decoder::fused_adamw`]) computes what Burn's `AdamW` computes, on
//! every backend it runs on here (flex, ndarray, LibTorch CPU), and shares its optimizer state:
//! a run checkpointed with one resumes with the other.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, LearningRate, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use peft_decoder::fused_adamw::{FusedAdamW, fused_on};

fn adamw(weight_decay: f32, epsilon: f32) -> FusedAdamW {
    FusedAdamW::new(weight_decay, epsilon)
}

/// Parameters of several ranks and sizes: one over several of the kernel's 65,536-element
/// chunks with a partial last chunk, and small ones.
#[derive(Module, Debug)]
struct Params {
    large: Param<Tensor<2>>,
    vector: Param<Tensor<1>>,
    cube: Param<Tensor<3>>,
}

/// Fresh parameters with fixed values (not from the backend's generator, which tests running in
/// parallel share).
fn params(device: &Device) -> Params {
    let values = |count: usize, salt: f32| -> Vec<f32> {
        (0..count)
            .map(|i| (i as f32 * 0.7 + salt).sin() * 1.5)
            .collect()
    };
    let data = |shape: &[usize], salt: f32| {
        TensorData::new(values(shape.iter().product(), salt), shape.to_vec())
    };
    Params {
        large: Param::from_data(data(&[300, 701], 0.1), device),
        vector: Param::from_data(data(&[7], 0.2), device),
        cube: Param::from_data(data(&[2, 3, 5], 0.3), device),
    }
}

fn values(params: &Params) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            self.0.extend(data.iter::<f32>());
        }
    }
    let mut all = Collect(Vec::new());
    params.visit(&mut all);
    all.0
}

/// Gradients of a loss that differs from step to step (so the moments are not proportional to
/// one gradient), some of them tiny, as where epsilon matters.
fn gradients(params: &Params, step: usize) -> GradientsParams {
    let scale = [1.0, -0.3, 1e-4, 2.0][step % 4];
    let loss = params.large.val().powf_scalar(2.0).sum().mul_scalar(scale)
        + params.vector.val().sin().sum().mul_scalar(scale * 3.0)
        + params.cube.val().exp().sum().mul_scalar(scale);
    GradientsParams::from_grads(loss.backward(), params)
}

fn steps(
    optimizer: &mut ModuleOptimizer,
    mut params: Params,
    lr: LearningRate,
    range: std::ops::Range<usize>,
) -> Params {
    for step in range {
        let grads = gradients(&params, step);
        params = optimizer.step(lr, params, grads);
    }
    params
}

fn burns(weight_decay: f32, epsilon: f32) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_weight_decay(weight_decay)
        .with_epsilon(epsilon)
        .init()
}

fn assert_close(label: &str, fused: &[f32], reference: &[f32], start: &[f32]) {
    assert_eq!(fused.len(), reference.len());
    let moved = reference
        .iter()
        .zip(start)
        .map(|(r, s)| (r - s).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved > 1e-2,
        "{label}: the parameters barely moved ({moved})"
    );
    for (i, (f, r)) in fused.iter().zip(reference).enumerate() {
        let tolerance = 1e-6 * (1.0 + r.abs());
        assert!(
            (f - r).abs() <= tolerance,
            "{label}: element {i}: fused {f}, Burn's AdamW {r}"
        );
    }
}

#[test]
fn fused_steps_equal_burns_adamw() {
    for (name, device) in common::autodiff_devices() {
        assert!(fused_on(&device), "{name}: the fused step does not run");
        for (weight_decay, epsilon) in [(0.0, 1e-8), (0.01, 1e-8), (0.5, 1e-5)] {
            let label = format!("{name}, weight decay {weight_decay}, epsilon {epsilon}");
            let start = values(&params(&device));
            let fused = steps(
                &mut adamw(weight_decay, epsilon).init(),
                params(&device),
                0.05,
                0..6,
            );
            let reference = steps(
                &mut burns(weight_decay, epsilon),
                params(&device),
                0.05,
                0..6,
            );
            assert_close(&label, &values(&fused), &values(&reference), &start);
        }
    }
}

/// A parameter laid out transposed in memory (as a view of a checkpoint's weight may be)
/// updates as Burn's `AdamW` updates it: the kernels that read tensors as dense runs of memory
/// are handed dense ones.
#[test]
fn transposed_parameters_update_as_with_burns_adamw() {
    for (name, device) in common::autodiff_devices() {
        let transposed = |device: &Device| {
            let mut params = params(device);
            let large = params.large.val();
            let [rows, columns] = large.dims();
            let stored = Tensor::<2>::from_data(large.swap_dims(0, 1).into_data(), device);
            assert_eq!(stored.dims(), [columns, rows]);
            params.large = Param::from_tensor(stored.swap_dims(0, 1));
            params
        };
        let start = values(&transposed(&device));
        assert_eq!(start, values(&params(&device)), "{name}: the same values");
        let fused = steps(
            &mut adamw(0.01, 1e-8).init(),
            transposed(&device),
            0.05,
            0..4,
        );
        let reference = steps(&mut burns(0.01, 1e-8), transposed(&device), 0.05, 0..4);
        assert_close(
            &format!("{name}, transposed"),
            &values(&fused),
            &values(&reference),
            &start,
        );
    }
}

/// Optimizer state saved by one resumes in the other, both ways, and continues as an
/// uninterrupted run: the state is Burn's `AdamWState`.
#[test]
fn optimizer_state_moves_between_fused_and_burns_adamw() {
    let device = Device::flex().autodiff();
    let start = values(&params(&device));
    let uninterrupted = steps(&mut burns(0.01, 1e-8), params(&device), 0.05, 0..5);

    let mut fused = adamw(0.01, 1e-8).init();
    let halfway = steps(&mut fused, params(&device), 0.05, 0..3);
    let mut burn = burns(0.01, 1e-8).load_record(fused.to_record());
    let resumed = steps(&mut burn, halfway, 0.05, 3..5);
    assert_close(
        "fused, then Burn's",
        &values(&resumed),
        &values(&uninterrupted),
        &start,
    );

    let mut burn = burns(0.01, 1e-8);
    let halfway = steps(&mut burn, params(&device), 0.05, 0..3);
    let mut fused = adamw(0.01, 1e-8).init().load_record(burn.to_record());
    let resumed = steps(&mut fused, halfway, 0.05, 3..5);
    assert_close(
        "Burn's, then fused",
        &values(&resumed),
        &values(&uninterrupted),
        &start,
    );
}

/// The update writes in place only buffers that nothing else reads: a tensor kept from before
/// the steps still holds the values it had, and the parameter, whose buffer was shared (as
/// Burn's `Learner` shares every parameter), moved as Burn's `AdamW` moves it.
#[test]
fn steps_leave_tensors_shared_with_the_parameters_alone() {
    for (name, device) in common::autodiff_devices() {
        let start = params(&device);
        let start_values = values(&start);
        let kept = start.large.val();
        let before = kept.to_data();
        let moved = steps(&mut adamw(0.01, 1e-8).init(), start, 0.05, 0..2);
        assert_eq!(kept.to_data(), before, "{name}: a kept tensor was written");
        let reference = steps(&mut burns(0.01, 1e-8), params(&device), 0.05, 0..2);
        assert_close(
            &format!("{name}, shared"),
            &values(&moved),
            &values(&reference),
            &start_values,
        );
    }
}

/// The update may work in the gradient's buffer, as nothing else reads it; a gradient the
/// caller still holds keeps its values.
#[test]
fn steps_leave_gradients_held_elsewhere_alone() {
    for (name, device) in common::autodiff_devices() {
        let start = params(&device);
        let start_values = start.large.val().to_data();
        let grads = gradients(&start, 0);
        let held = grads
            .get::<2>(start.large.id)
            .expect("the large parameter has a gradient");
        let before = held.to_data();
        let moved = adamw(0.01, 1e-8).init().step(0.05, start, grads);
        assert_eq!(
            held.to_data(),
            before,
            "{name}: a held gradient was written"
        );
        assert_ne!(
            moved.large.val().to_data(),
            start_values,
            "{name}: the parameter did not move"
        );
    }
}
