//! Dropout as one operation ([`peft_decoder::fused_dropout`]) zeroes elements at the module's
//! rate and scales the others by `1/(1 − rate)`, as Burn's `Dropout` does, and its backward
//! lets exactly the kept elements' gradients through, on every backend it runs on here (flex,
//! ndarray, LibTorch CPU); outside training it changes nothing.

mod common;

use burn::module::Module;
use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::TensorData;
use peft_decoder::fused_dropout::dropout;

const SHAPE: [usize; 3] = [64, 50, 33];

/// Values of `SHAPE` in [1, 3] (never 0, so a zero output means a dropped element).
fn inputs() -> TensorData {
    let count = SHAPE.iter().product::<usize>();
    let values = (0..count).map(|i| (i as f32 * 0.37).sin() + 2.0).collect();
    TensorData::new(values, SHAPE.to_vec())
}

fn weights() -> TensorData {
    let count = SHAPE.iter().product::<usize>();
    let values = (0..count).map(|i| (i as f32 * 0.11).cos()).collect();
    TensorData::new(values, SHAPE.to_vec())
}

fn values(tensor: Tensor<3>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("f32 values")
}

#[test]
fn kept_elements_are_scaled_the_others_zero_and_the_gradient_follows_them() {
    for (name, device) in common::autodiff_devices() {
        for rate in [0.1, 0.5] {
            let label = format!("{name}, rate {rate}");
            let input = Tensor::<3>::from_data(inputs(), &device).require_grad();
            let weight = Tensor::<3>::from_data(weights(), &device);
            let output = dropout(&DropoutConfig::new(rate).init(), input.clone());
            let grads = (output.clone() * weight).sum().backward();
            let input_grad = input.grad(&grads).expect("the input is tracked");
            let scale = (1.0 / (1.0 - rate)) as f32;
            let (x, w) = (
                inputs().try_to_vec::<f32>().unwrap(),
                weights().try_to_vec::<f32>().unwrap(),
            );
            let (y, dx) = (values(output), values(input_grad));
            let mut dropped = 0;
            for i in 0..x.len() {
                if y[i] == 0.0 {
                    dropped += 1;
                    assert_eq!(dx[i], 0.0, "{label}: element {i} dropped, its gradient not");
                } else {
                    assert!(
                        (y[i] - x[i] * scale).abs() <= 1e-6 * y[i].abs(),
                        "{label}: element {i}: {} kept as {}",
                        x[i],
                        y[i]
                    );
                    assert!(
                        (dx[i] - w[i] * scale).abs() <= 1e-6,
                        "{label}: element {i} kept, its gradient {} not {}",
                        dx[i],
                        w[i] * scale
                    );
                }
            }
            let fraction = dropped as f64 / x.len() as f64;
            // 105,600 draws: the fraction's standard deviation is under 0.0016.
            assert!(
                (fraction - rate).abs() < 0.01,
                "{label}: dropped a fraction {fraction}"
            );
        }
    }
}

#[test]
fn two_calls_drop_different_elements() {
    for (name, device) in common::autodiff_devices() {
        let module = DropoutConfig::new(0.5).init();
        let input = Tensor::<3>::from_data(inputs(), &device);
        let first = values(dropout(&module, input.clone()));
        let second = values(dropout(&module, input));
        let differ = first
            .iter()
            .zip(&second)
            .filter(|(a, b)| (**a == 0.0) != (**b == 0.0))
            .count();
        assert!(
            differ > first.len() / 4,
            "{name}: the two masks differ in {differ} elements"
        );
    }
}

#[test]
fn outside_training_dropout_changes_nothing() {
    for (name, device) in common::autodiff_devices() {
        let input = Tensor::<3>::from_data(inputs(), &device);
        let frozen = DropoutConfig::new(0.5).init().freeze();
        assert_eq!(
            values(dropout(&frozen, input.clone())),
            values(input.clone()),
            "{name}: a frozen dropout dropped elements"
        );
        let without_autodiff = Tensor::<3>::from_data(inputs(), &device.clone().inner());
        let training = DropoutConfig::new(0.5).init();
        assert_eq!(
            values(dropout(&training, without_autodiff)),
            values(input),
            "{name}: dropout acted outside autodiff"
        );
    }
}
