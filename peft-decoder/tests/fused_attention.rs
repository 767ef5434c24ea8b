//! The fused attention against the decomposed one it replaces: the same outputs and the same
//! gradients for query, keys, values and prefix (f32, 1e-5), on every CPU backend compiled in,
//! with a shared or per-row prefix, padding, a KV cache, and more queries than one block.

use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use peft_core::LayerKv;
use peft_decoder::attention::{attend, attend_decomposed, score_bias};
use peft_decoder::fused_attention::runs_on;

mod common;
use common::devices;

const TOLERANCE: f32 = 1e-5;

/// One attention call's operands: `batch` rows of `queries` new tokens after `past` cached ones,
/// with `prefix` prefix positions (`shared`: one prefix broadcast over the batch, as a
/// prefix-tuning adapter gives; otherwise one per row, as a mixed batch gives) and the first
/// `padded` keys of row 0 hidden (left padding).
struct Case {
    name: &'static str,
    batch: usize,
    queries: usize,
    past: usize,
    prefix: usize,
    shared: bool,
    padded: usize,
}

const HEADS: usize = 3;
const HEAD_DIM: usize = 8;

const CASES: &[Case] = &[
    Case {
        name: "causal",
        batch: 2,
        queries: 6,
        past: 0,
        prefix: 0,
        shared: true,
        padded: 0,
    },
    Case {
        name: "shared prefix, padding",
        batch: 2,
        queries: 5,
        past: 0,
        prefix: 4,
        shared: true,
        padded: 2,
    },
    Case {
        name: "per-row prefix, cache",
        batch: 2,
        queries: 2,
        past: 3,
        prefix: 4,
        shared: false,
        padded: 1,
    },
    Case {
        name: "one decoded token",
        batch: 3,
        queries: 1,
        past: 7,
        prefix: 2,
        shared: true,
        padded: 0,
    },
    Case {
        name: "several query blocks",
        batch: 1,
        queries: 150,
        past: 0,
        prefix: 5,
        shared: true,
        padded: 3,
    },
];

/// Every operand of the call, tracked by autodiff.
struct Operands {
    query: Tensor<4>,
    prefix: Option<LayerKv>,
    keys: LayerKv,
    bias: Tensor<4>,
    /// Weights of the output in the scalar that is differentiated, so that each output element
    /// gets its own gradient.
    weights: Tensor<4>,
}

impl Operands {
    fn new(case: &Case, device: &Device) -> Self {
        let random = |shape: [usize; 4]| {
            Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device).require_grad()
        };
        let keys_len = case.past + case.queries;
        let prefix_rows = if case.shared { 1 } else { case.batch };
        let prefix = (case.prefix > 0).then(|| {
            LayerKv::new(
                random([prefix_rows, HEADS, case.prefix, HEAD_DIM]),
                random([prefix_rows, HEADS, case.prefix, HEAD_DIM]),
            )
        });
        let key_len = case.prefix + keys_len;
        let mask: Vec<bool> = (0..case.batch * key_len)
            .map(|i| {
                !(i / key_len == 0
                    && i % key_len >= case.prefix
                    && i % key_len < case.prefix + case.padded)
            })
            .collect();
        let mask =
            Tensor::<2, Bool>::from_data(TensorData::new(mask, [case.batch, key_len]), device);
        Self {
            query: random([case.batch, HEADS, case.queries, HEAD_DIM]),
            prefix,
            keys: LayerKv::new(
                random([case.batch, HEADS, keys_len, HEAD_DIM]),
                random([case.batch, HEADS, keys_len, HEAD_DIM]),
            ),
            bias: score_bias(case.prefix, case.past, case.queries, Some(mask), device),
            weights: Tensor::<4>::random(
                [case.batch, HEADS, case.queries, HEAD_DIM],
                Distribution::Normal(0.0, 1.0),
                device,
            ),
        }
    }

    /// The tensors whose gradients are compared, named.
    fn tracked(&self) -> Vec<(&'static str, &Tensor<4>)> {
        let mut tracked = vec![
            ("query", &self.query),
            ("key", &self.keys.key),
            ("value", &self.keys.value),
        ];
        if let Some(prefix) = &self.prefix {
            tracked.push(("prefix key", &prefix.key));
            tracked.push(("prefix value", &prefix.value));
        }
        tracked
    }
}

fn max_difference(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn fused_attention_matches_the_decomposed_outputs_and_gradients() {
    let no_dropout = DropoutConfig::new(0.0).init();
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    for (backend, device) in devices() {
        let device = device.autodiff();
        assert!(
            runs_on(&device),
            "{backend}: fused attention is built for it"
        );
        for case in CASES {
            let at = format!("{backend}, {}", case.name);
            let operands = Operands::new(case, &device);
            let run = |attention: fn(_, _, _, _, _, _) -> Tensor<4>| {
                let output = attention(
                    operands.query.clone(),
                    operands.prefix.as_ref(),
                    &operands.keys,
                    operands.bias.clone(),
                    scale,
                    &no_dropout,
                );
                let grads = (output.clone() * operands.weights.clone()).sum().backward();
                let gradients: Vec<_> = operands
                    .tracked()
                    .into_iter()
                    .map(|(name, tensor)| {
                        let grad = tensor
                            .grad(&grads)
                            .unwrap_or_else(|| panic!("{at}: no gradient for {name}"));
                        (name, grad)
                    })
                    .collect();
                (output.inner(), gradients)
            };
            let (fused, fused_grads) = run(attend);
            let (decomposed, decomposed_grads) = run(attend_decomposed);
            let difference = max_difference(fused, decomposed);
            assert!(
                difference <= TOLERANCE,
                "{at}: outputs differ by {difference}"
            );
            for ((name, fused), (_, decomposed)) in fused_grads.into_iter().zip(decomposed_grads) {
                let difference = max_difference(fused, decomposed);
                assert!(
                    difference <= TOLERANCE,
                    "{at}: gradients of {name} differ by {difference}"
                );
            }
        }
    }
}

#[test]
fn attention_dropout_keeps_the_decomposed_path_and_only_acts_in_training() {
    // With dropout active the fused kernel (which has none) must not be used: the outputs of
    // two calls then differ, as dropout's masks do.
    let dropout = DropoutConfig::new(0.5).init();
    let case = &CASES[1];
    for (backend, device) in devices() {
        let operands = Operands::new(case, &device.autodiff());
        let call = || {
            attend(
                operands.query.clone(),
                operands.prefix.as_ref(),
                &operands.keys,
                operands.bias.clone(),
                0.5,
                &dropout,
            )
        };
        let difference = max_difference(call(), call());
        assert!(
            difference > 1e-3,
            "{backend}: dropout did not act ({difference})"
        );
    }
}
