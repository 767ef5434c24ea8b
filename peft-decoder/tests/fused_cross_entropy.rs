//! The fused cross-entropy with its gradient against the tensor operations it replaces
//! (`cross_entropy_with_grad_decomposed`), on every CPU backend compiled in: GPT-2's
//! vocabulary over more rows than one task takes, targets at both ends of the vocabulary,
//! half-precision logits, and a NaN that must reach the loss.

use burn::prelude::*;
use burn::tensor::{DType, Distribution, TensorData};
use peft_decoder::extension::{Engine, engine, runs_on};
use peft_decoder::fused_cross_entropy::{
    cross_entropy_with_grad, cross_entropy_with_grad_decomposed,
};
use peft_decoder::loss::loss_chunk_rows;

mod common;
use common::devices;

/// f32, relative to the larger of the loss and 1. The gradient's entries are probabilities (at
/// most 1 in magnitude) and are held to this absolutely.
const TOLERANCE: f32 = 1e-5;

/// `rows` targets spread over `0..vocab`, the first and the last class among them.
fn targets(rows: usize, vocab: usize, device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = (0..rows)
        .map(|row| match row {
            0 => 0,
            1 => vocab as i64 - 1,
            _ => ((row * 7919) % vocab) as i64,
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [rows]), device)
}

fn assert_close(
    (loss, grad): (Tensor<1>, Tensor<2>),
    (expected_loss, expected_grad): (Tensor<1>, Tensor<2>),
    at: &str,
) {
    assert_eq!(grad.dtype(), DType::F32, "{at}: the gradient is f32");
    let (loss, expected_loss) = (
        loss.into_scalar::<f32>(),
        expected_loss.into_scalar::<f32>(),
    );
    assert!(
        (loss - expected_loss).abs() <= TOLERANCE * expected_loss.abs().max(1.0),
        "{at}: loss {loss}, decomposed {expected_loss}"
    );
    let difference = (grad - expected_grad).abs().max().into_scalar::<f32>();
    assert!(
        difference <= TOLERANCE,
        "{at}: gradients differ by {difference}"
    );
}

#[test]
fn fused_cross_entropy_matches_the_decomposed_loss_and_gradient() {
    // A small vocabulary, and GPT-2's over 9 rows (three tasks of four rows, the last partial).
    for (backend, device) in devices() {
        assert!(
            runs_on(&device),
            "{backend}: the fused loss is built for it"
        );
        for [rows, vocab] in [[3, 7], [9, 50_257]] {
            // Spread like a trained model's logits, with one large outlier per row.
            let logits =
                Tensor::<2>::random([rows, vocab], Distribution::Normal(0.0, 4.0), &device)
                    .slice_assign([0..rows, 2..3], Tensor::full([rows, 1], 30.0, &device));
            let targets = targets(rows, vocab, &device);
            let at = format!("{backend}, {rows}×{vocab}");
            // Given a tensor nothing else holds, flex writes the gradient over the logits; given
            // a shared one, every backend works on a copy.
            let snapshot = logits.to_data();
            let unshared = Tensor::<2>::from_data(snapshot.clone(), &device);
            let expected = || cross_entropy_with_grad_decomposed(logits.clone(), targets.clone());
            assert_close(
                cross_entropy_with_grad(unshared, targets.clone()),
                expected(),
                &at,
            );
            assert_close(
                cross_entropy_with_grad(logits.clone(), targets.clone()),
                expected(),
                &format!("{at}, shared"),
            );
            assert_eq!(
                logits.to_data().try_to_vec::<f32>().ok(),
                snapshot.try_to_vec::<f32>().ok(),
                "{at}: the shared logits were written"
            );
            // Half-precision logits are widened to f32, as the decomposed form casts them
            // (ndarray has no bf16).
            if !device.supports_dtype(DType::BF16) {
                continue;
            }
            let half = logits.cast(DType::BF16);
            assert_close(
                cross_entropy_with_grad(half.clone(), targets.clone()),
                cross_entropy_with_grad_decomposed(half, targets),
                &format!("{at}, bf16"),
            );
        }
    }
}

#[test]
fn a_nan_logit_makes_the_loss_nan() {
    for (backend, device) in devices() {
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, f32::NAN, -1.0, 2.0, 0.0, 1.0], [2, 3]),
            &device,
        );
        let (loss, _) = cross_entropy_with_grad(logits, targets(2, 3, &device));
        let loss = loss.into_scalar::<f32>();
        assert!(loss.is_nan(), "{backend}: loss {loss} hides the NaN logit");
    }
}

/// Every CPU backend, LibTorch's CPU device included, is the host's processor, and cuts the loss
/// into chunks of rows whatever the vocabulary (a GPU's chunk would shrink with it).
#[test]
fn cpu_backends_cut_the_loss_into_chunks_of_rows() {
    for (backend, device) in devices() {
        assert_eq!(engine(&device), Engine::HostCpu, "{backend}");
        let (gpt2, qwen) = (
            loss_chunk_rows(&device, 50_257),
            loss_chunk_rows(&device, 151_936),
        );
        assert_eq!(
            gpt2, qwen,
            "{backend}: rows per chunk follow the vocabulary"
        );
        assert!(gpt2 >= 128, "{backend}: {gpt2} rows per chunk");
    }
}
