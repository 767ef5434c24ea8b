//! The fused attention against the decomposed one it replaces: the same outputs and the same
//! gradients for query, keys, values and prefix (f32, 1e-5), on every CPU backend compiled in,
//! with a shared or per-row prefix, a KV cache, and more queries than one block, each with
//! padding (the bias read with causal skipping) and without (causality alone: LibTorch's causal
//! kernels, with query rows added in front where a prefix or cache comes first), with as many
//! key/value heads as query heads or fewer (grouped-query attention, against heads repeated for
//! their groups as Hugging Face does); and
//! its dropout: the CPU kernel's against the decomposed attention under the same mask,
//! LibTorch's against PyTorch's own attention under the same generator state, and on every
//! backend a backward that sees the forward's mask; and the packed form a fused query/key/value
//! projection takes, against the same attention of its parts.

use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softmax;
use peft_core::LayerKv;
use peft_decoder::attention::{
    AttentionMask, attend, attend_decomposed, attend_packed, repeat_heads, repeat_kv_heads,
    score_bias, set_fused_attention,
};
use peft_decoder::fused_attention::{
    AttentionSettings, Masking, cpu_dropout_keeps, fused_attention, runs_on,
};

mod common;
use common::devices;

const TOLERANCE: f32 = 1e-5;

/// Held by every test here: they draw from PyTorch's global generator (LibTorch's random
/// tensors, dropout), which one of them seeds and relies on between two calls.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn generator() -> std::sync::MutexGuard<'static, ()> {
    GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One attention call's operands: `batch` rows of `queries` new tokens after `past` cached ones,
/// with `prefix` prefix positions (`shared`: one prefix broadcast over the batch, as a
/// prefix-tuning adapter gives; otherwise one per row, as a mixed batch gives) and the first
/// `padded` keys of row 0 hidden (left padding; with none, no key mask at all).
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

/// How many query heads a call has, and how many key/value heads they share.
#[derive(Clone, Copy)]
struct Heads {
    query: usize,
    kv: usize,
}

/// Every query head with its own keys and values (GPT-2).
const MULTI_HEAD: Heads = Heads {
    query: HEADS,
    kv: HEADS,
};

/// Grouped-query attention (Llama, Qwen): three query heads per key/value head, two groups, so
/// that a kernel reading the wrong group or the wrong row's group fails.
const GROUPED: Heads = Heads { query: 6, kv: 2 };
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
    Case {
        name: "shared prefix",
        batch: 2,
        queries: 5,
        past: 0,
        prefix: 4,
        shared: true,
        padded: 0,
    },
    Case {
        name: "per-row prefix, cache",
        batch: 2,
        queries: 2,
        past: 3,
        prefix: 4,
        shared: false,
        padded: 0,
    },
    Case {
        name: "several query blocks after a prefix",
        batch: 1,
        queries: 150,
        past: 0,
        prefix: 5,
        shared: true,
        padded: 0,
    },
];

/// Every operand of the call, tracked by autodiff.
struct Operands {
    query: Tensor<4>,
    prefix: Option<LayerKv>,
    keys: LayerKv,
    mask: AttentionMask,
    /// Weights of the output in the scalar that is differentiated, so that each output element
    /// gets its own gradient.
    weights: Tensor<4>,
}

impl Operands {
    fn new(case: &Case, heads: Heads, device: &Device) -> Self {
        let random = |shape: [usize; 4]| {
            Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device).require_grad()
        };
        let keys_len = case.past + case.queries;
        let prefix_rows = if case.shared { 1 } else { case.batch };
        let prefix = (case.prefix > 0).then(|| {
            LayerKv::new(
                random([prefix_rows, heads.kv, case.prefix, HEAD_DIM]),
                random([prefix_rows, heads.kv, case.prefix, HEAD_DIM]),
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
        let mask = (case.padded > 0).then(|| {
            Tensor::<2, Bool>::from_data(TensorData::new(mask, [case.batch, key_len]), device)
        });
        Self {
            query: random([case.batch, heads.query, case.queries, HEAD_DIM]),
            prefix,
            keys: LayerKv::new(
                random([case.batch, heads.kv, keys_len, HEAD_DIM]),
                random([case.batch, heads.kv, keys_len, HEAD_DIM]),
            ),
            mask: AttentionMask::new(case.prefix, case.past, case.queries, mask, device),
            weights: Tensor::<4>::random(
                [case.batch, heads.query, case.queries, HEAD_DIM],
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

type OutputAndGradients = (Tensor<4>, Vec<(&'static str, Tensor<4>)>);

/// Asserts that two outputs and their gradients agree within [`TOLERANCE`].
fn assert_same(
    at: &str,
    (output, grads): OutputAndGradients,
    (expected, expected_grads): OutputAndGradients,
) {
    let difference = max_difference(output, expected);
    assert!(
        difference <= TOLERANCE,
        "{at}: outputs differ by {difference}"
    );
    for ((name, grad), (_, expected)) in grads.into_iter().zip(expected_grads) {
        let difference = max_difference(grad, expected);
        assert!(
            difference <= TOLERANCE,
            "{at}: gradients of {name} differ by {difference}"
        );
    }
}

/// Turns the fused attention off until dropped, so that `attend` takes its decomposed path (as
/// on the backends without the fused operation). Every test here holds [`generator`], so none
/// runs meanwhile.
struct DecomposedAttention;

impl DecomposedAttention {
    fn new() -> Self {
        set_fused_attention(false);
        Self
    }
}

impl Drop for DecomposedAttention {
    fn drop(&mut self) {
        set_fused_attention(true);
    }
}

/// `attend` (fused, and on its decomposed path) against the decomposed attention, which a
/// grouped-query call reaches through heads repeated for their groups (Hugging Face's
/// `repeat_kv`; the gradients flow back through the copies).
#[test]
fn fused_attention_matches_the_decomposed_outputs_and_gradients() {
    let _generator = generator();
    let no_dropout = DropoutConfig::new(0.0).init();
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    for ((backend, device), heads) in devices()
        .into_iter()
        .flat_map(|device| [(device.clone(), MULTI_HEAD), (device, GROUPED)])
    {
        let device = device.autodiff();
        assert!(
            runs_on(&device),
            "{backend}: fused attention is built for it"
        );
        let groups = heads.query / heads.kv;
        let repeated = |kv: &LayerKv| repeat_kv_heads(kv, groups);
        for case in CASES {
            let at = format!("{backend}, groups of {groups}, {}", case.name);
            let operands = Operands::new(case, heads, &device);
            let (query, prefix, keys) = (&operands.query, operands.prefix.as_ref(), &operands.keys);
            let attend_with = |prefix, keys| {
                attend(
                    query.clone(),
                    prefix,
                    keys,
                    &operands.mask,
                    scale,
                    &no_dropout,
                )
            };
            let fused = attend_with(prefix, keys);
            let unfused = {
                let _decomposed = DecomposedAttention::new();
                attend_with(prefix, keys)
            };
            let reference = attend_decomposed(
                query.clone(),
                prefix.map(repeated).as_ref(),
                &repeated(keys),
                operands.mask.full_bias(case.queries),
                scale,
                &no_dropout,
            );
            let reference = output_and_gradients(&operands, reference);
            let fused = output_and_gradients(&operands, fused);
            let unfused = output_and_gradients(&operands, unfused);
            assert_same(
                &format!("{at}, decomposed path"),
                unfused,
                reference.clone(),
            );
            assert_same(&at, fused, reference);
        }
    }
}

/// A query, keys and values that one projection made (GPT-2's), packed as a view of its
/// `[B, T, 3, heads, head_dim]` output and attended without a cache: `attend_packed`'s one
/// node gives the projection's output and the prefix the gradients that the decomposed
/// attention of the unpacked parts gives them.
#[test]
fn packed_attention_matches_the_unpacked_outputs_and_gradients() {
    let _generator = generator();
    let no_dropout = DropoutConfig::new(0.0).init();
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    for (backend, device) in devices() {
        let device = device.autodiff();
        for case in CASES.iter().filter(|case| case.past == 0) {
            let at = format!("{backend}, packed, {}", case.name);
            let operands = Operands::new(case, MULTI_HEAD, &device);
            let (batch, len) = (case.batch, case.queries);
            let projected = projected_qkv(case, &device);
            let packed = || projected.clone().permute([2, 0, 3, 1, 4]);
            let prefix = operands.prefix.as_ref();
            let output_and_gradients = |output: Tensor<4>| {
                let grads = (output.clone() * operands.weights.clone()).sum().backward();
                let projection = projected
                    .grad(&grads)
                    .expect("the projection has a gradient")
                    .reshape([batch, len, 3 * HEADS, HEAD_DIM]);
                let mut named = vec![("projection", projection)];
                if let Some(prefix) = prefix {
                    for (name, tensor) in
                        [("prefix key", &prefix.key), ("prefix value", &prefix.value)]
                    {
                        let grad = tensor
                            .grad(&grads)
                            .unwrap_or_else(|| panic!("no gradient for {name}"));
                        named.push((name, grad));
                    }
                }
                (output.inner(), named)
            };
            let fused = attend_packed(packed(), prefix, &operands.mask, scale, &no_dropout);
            let reference = {
                let _decomposed = DecomposedAttention::new();
                let part = |i: usize| {
                    packed()
                        .narrow(0, i, 1)
                        .reshape([batch, HEADS, len, HEAD_DIM])
                };
                let keys = LayerKv::new(part(1), part(2));
                attend(part(0), prefix, &keys, &operands.mask, scale, &no_dropout)
            };
            assert_same(
                &at,
                output_and_gradients(fused),
                output_and_gradients(reference),
            );
        }
    }
}

/// A fused query/key/value projection's output for `case`, `[B, T, 3, heads, head_dim]`
/// (GPT-2's layout), tracked.
fn projected_qkv(case: &Case, device: &Device) -> Tensor<5> {
    Tensor::<5>::random(
        [case.batch, case.queries, 3, HEADS, HEAD_DIM],
        Distribution::Normal(0.0, 1.0),
        device,
    )
    .require_grad()
}

/// The packed form's backward with dropout sees the forward's mask, as the unpacked one's
/// does (see `attention_dropout_backward_sees_the_forward_mask`): the output is linear in the
/// values, here the third part of the projection's output and the prefix's values.
#[test]
fn packed_attention_dropout_backward_sees_the_forward_mask() {
    let _generator = generator();
    let dropout = DropoutConfig::new(0.5).init();
    for ((backend, device), case) in devices()
        .into_iter()
        .flat_map(|device| [(device.clone(), &CASES[0]), (device, &CASES[1])])
    {
        let device = device.autodiff();
        let operands = Operands::new(case, MULTI_HEAD, &device);
        let projected = projected_qkv(case, &device);
        let packed = projected.clone().permute([2, 0, 3, 1, 4]);
        let prefix = operands.prefix.as_ref();
        let output = attend_packed(packed, prefix, &operands.mask, 0.5, &dropout);
        let objective = (output * operands.weights.clone()).sum();
        let grads = objective.clone().backward();
        let values_part = |t: Tensor<5>| t.narrow(2, 2, 1);
        let projection_grad = projected
            .grad(&grads)
            .expect("the projection has a gradient");
        let mut through_values = (values_part(projection_grad)
            * values_part(projected.clone().inner()))
        .sum()
        .into_scalar::<f32>();
        if let Some(prefix) = prefix {
            let grad = prefix
                .value
                .grad(&grads)
                .expect("the prefix values have a gradient");
            through_values += (grad * prefix.value.clone().inner())
                .sum()
                .into_scalar::<f32>();
        }
        let objective = objective.into_scalar::<f32>();
        assert!(
            (objective - through_values).abs() <= TOLERANCE * objective.abs().max(1.0),
            "{backend}, packed, {}: sum(w ∘ out) = {objective}, through the value gradients \
             {through_values}",
            case.name
        );
    }
}

/// The differentiated scalar's value and the gradients of the tracked operands, named.
fn output_and_gradients(operands: &Operands, output: Tensor<4>) -> OutputAndGradients {
    let grads = (output.clone() * operands.weights.clone()).sum().backward();
    let gradients = operands
        .tracked()
        .into_iter()
        .map(|(name, tensor)| {
            let grad = tensor
                .grad(&grads)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            (name, grad)
        })
        .collect();
    (output.inner(), gradients)
}

/// The key sequence the fused kernel takes: the prefix (per row) followed by the keys.
fn joined(operands: &Operands, batch: usize) -> (Tensor<4>, Tensor<4>) {
    let keys = &operands.keys;
    match &operands.prefix {
        Some(prefix) => {
            let per_row = |t: &Tensor<4>| {
                let [_, heads, len, dim] = t.dims();
                t.clone().expand([batch, heads, len, dim])
            };
            (
                Tensor::cat(vec![per_row(&prefix.key), keys.key.clone()], 2),
                Tensor::cat(vec![per_row(&prefix.value), keys.value.clone()], 2),
            )
        }
        None => (keys.key.clone(), keys.value.clone()),
    }
}

#[test]
fn cpu_dropout_masks_drop_their_rate_and_differ_by_seed() {
    let _generator = generator();
    // GPT-2 small's attention at 4 × 128 with a 20-token prefix: 909,312 probabilities, so the
    // share dropped is within 0.002 of the rate (over four standard deviations).
    let shape = [4, 12, 128, 148];
    for rate in [0.1, 0.5] {
        let keeps = cpu_dropout_keeps(rate, 7, shape);
        let dropped = keeps.iter().filter(|&&keep| !keep).count() as f64 / keeps.len() as f64;
        assert!(
            (dropped - rate).abs() < 0.002,
            "rate {rate}: {dropped} of the probabilities dropped"
        );
        let other_seed = cpu_dropout_keeps(rate, 8, shape);
        let agree = keeps
            .iter()
            .zip(&other_seed)
            .filter(|(a, b)| a == b)
            .count() as f64;
        let expected = rate * rate + (1.0 - rate) * (1.0 - rate);
        assert!(
            (agree / keeps.len() as f64 - expected).abs() < 0.002,
            "rate {rate}: seeds 7 and 8 agree on {agree} probabilities, as if not independent"
        );
    }
}

#[test]
fn cpu_attention_dropout_is_the_decomposed_attention_under_its_mask() {
    let _generator = generator();
    let (rate, seed) = (0.3, 0x5EED);
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    for (backend, device) in devices() {
        if backend == "tch" {
            continue; // PyTorch draws LibTorch's masks: see the next test
        }
        let device = device.autodiff();
        for (case, heads) in [
            (&CASES[1], MULTI_HEAD),
            (&CASES[2], MULTI_HEAD),
            (&CASES[4], MULTI_HEAD),
            (&CASES[7], MULTI_HEAD),
            (&CASES[2], GROUPED),
            (&CASES[4], GROUPED),
        ] {
            let at = format!(
                "{backend}, groups of {}, {}",
                heads.query / heads.kv,
                case.name
            );
            let operands = Operands::new(case, heads, &device);
            let (key, value) = joined(&operands, case.batch);
            let settings = AttentionSettings {
                masking: operands.mask.masking,
                scale,
                dropout: rate,
                seed,
            };
            let fused = fused_attention(
                operands.query.clone(),
                key.clone(),
                value.clone(),
                operands.mask.bias.clone(),
                settings,
            );
            let [batch, query_heads, queries, _] = operands.query.dims();
            let shape = [batch, query_heads, queries, key.dims()[2]];
            let keeps = Tensor::<4, Bool>::from_data(
                TensorData::new(cpu_dropout_keeps(rate, seed, shape), shape),
                &device,
            );
            // The keys and values joined again (the fused call's backward consumes the graph of
            // the first join), and repeated for their query heads.
            let (key, value) = joined(&operands, case.batch);
            let groups = heads.query / heads.kv;
            let (key, value) = (repeat_heads(key, groups), repeat_heads(value, groups));
            let scores = operands.query.clone().matmul(key.swap_dims(2, 3)) * scale
                + operands.mask.full_bias(case.queries);
            let probs = softmax(scores, 3).mask_fill(keeps.bool_not(), 0.0) / (1.0 - rate);
            let reference = probs.matmul(value);
            let (fused, fused_grads) = output_and_gradients(&operands, fused);
            let (reference, reference_grads) = output_and_gradients(&operands, reference);
            assert_same(&at, (fused, fused_grads), (reference, reference_grads));
        }
    }
}

#[cfg(feature = "tch")]
#[test]
fn libtorch_attention_dropout_is_pytorchs_under_the_same_generator_state() {
    let _generator = generator();
    // PyTorch's scaled-dot-product attention, called directly under the seed the fused call
    // ran under, draws the same mask; its autograd gradients are then what the fused backward
    // must give. A backward that ran the forward again would draw another mask and fail here.
    let (rate, scale, seed) = (0.3, 1.0 / (HEAD_DIM as f64).sqrt(), 11);
    #[allow(deprecated)]
    let inner = Device::libtorch();
    let device = inner.clone().autodiff();
    let random = |shape: [usize; 4]| {
        Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad()
    };
    let operands = [
        random([2, HEADS, 5, HEAD_DIM]),
        random([2, HEADS, 9, HEAD_DIM]),
        random([2, HEADS, 9, HEAD_DIM]),
    ];
    // The bias as a mask operand, as PyTorch's reference takes it below (causal masking would
    // add query rows, whose dropout draws shift the generator's stream).
    let bias = score_bias(4, 0, 5, None, &device);
    let settings = AttentionSettings {
        masking: Masking::Bias,
        scale,
        dropout: rate,
        seed: 0,
    };
    let weights = Tensor::<4>::random(
        [2, HEADS, 5, HEAD_DIM],
        Distribution::Normal(0.0, 1.0),
        &device,
    );

    tch::manual_seed(seed);
    let [query, key, value] = operands.clone();
    let fused = fused_attention(query, key, value, bias.clone(), settings);
    let grads = (fused.clone() * weights.clone()).sum().backward();

    let to_torch = |tensor: &Tensor<4>| {
        let shape = tensor.dims().map(|d| d as i64);
        let values: Vec<f32> = tensor.clone().inner().into_data().iter::<f32>().collect();
        tch::Tensor::from_slice(&values).reshape(shape)
    };
    let from_torch = |tensor: &tch::Tensor| {
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(tensor.detach().flatten(0, -1)).expect("f32");
        Tensor::<4>::from_data(TensorData::new(values, shape), &inner)
    };
    let torch_operands = operands
        .each_ref()
        .map(|t| to_torch(t).set_requires_grad(true));
    let [query_t, key_t, value_t] = &torch_operands;
    tch::manual_seed(seed);
    let reference = tch::Tensor::scaled_dot_product_attention(
        query_t,
        key_t,
        value_t,
        Some(&to_torch(&bias)),
        rate,
        false,
        scale,
        false,
    );
    (&reference * to_torch(&weights))
        .sum(tch::Kind::Float)
        .backward();

    let names = ["query", "key", "value"];
    let fused_grads = names
        .into_iter()
        .zip(&operands)
        .map(|(name, operand)| {
            let grad = operand
                .grad(&grads)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            (name, grad)
        })
        .collect();
    let reference_grads = names
        .into_iter()
        .zip(&torch_operands)
        .map(|(name, operand)| (name, from_torch(&operand.grad())))
        .collect();
    assert_same(
        "tch",
        (fused.inner(), fused_grads),
        (from_torch(&reference), reference_grads),
    );
}

#[test]
fn attention_dropout_backward_sees_the_forward_mask() {
    let _generator = generator();
    // The output is linear in the values for a fixed mask: sum(w ∘ out) = sum(d_value ∘ value)
    // (with the prefix's values) holds exactly when the backward applies the forward's mask.
    let dropout = DropoutConfig::new(0.5).init();
    for ((backend, device), case) in devices().into_iter().flat_map(|device| {
        [
            (device.clone(), (&CASES[1], MULTI_HEAD)),
            (device.clone(), (&CASES[5], MULTI_HEAD)),
            (device, (&CASES[2], GROUPED)),
        ]
    }) {
        let (case, heads) = case;
        let operands = Operands::new(case, heads, &device.autodiff());
        let output = attend(
            operands.query.clone(),
            operands.prefix.as_ref(),
            &operands.keys,
            &operands.mask,
            0.5,
            &dropout,
        );
        let objective = (output.clone() * operands.weights.clone()).sum();
        let grads = objective.clone().backward();
        let through_values = operands
            .tracked()
            .into_iter()
            .filter(|(name, _)| name.ends_with("value"))
            .map(|(name, value)| {
                let grad = value.grad(&grads).unwrap_or_else(|| panic!("{name}"));
                (grad * value.clone().inner()).sum().into_scalar::<f32>()
            })
            .sum::<f32>();
        let objective = objective.into_scalar::<f32>();
        assert!(
            (objective - through_values).abs() <= TOLERANCE * objective.abs().max(1.0),
            "{backend}, {}: sum(w ∘ out) = {objective}, through the value gradients \
             {through_values}",
            case.name
        );
    }
}

#[test]
fn attention_dropout_acts_only_in_training() {
    let _generator = generator();
    let dropout = DropoutConfig::new(0.5).init();
    let no_dropout = DropoutConfig::new(0.0).init();
    let case = &CASES[1];
    for (backend, device) in devices() {
        let operands = Operands::new(case, MULTI_HEAD, &device.clone().autodiff());
        let call = |dropout| {
            attend(
                operands.query.clone(),
                operands.prefix.as_ref(),
                &operands.keys,
                &operands.mask,
                0.5,
                dropout,
            )
        };
        // Two training calls draw two masks.
        let difference = max_difference(call(&dropout), call(&dropout));
        assert!(
            difference > 1e-3,
            "{backend}: dropout did not act ({difference})"
        );
        // Without autodiff (inference) there is none.
        let inference = |dropout| {
            attend(
                operands.query.clone().inner(),
                operands
                    .prefix
                    .as_ref()
                    .map(|p| LayerKv::new(p.key.clone().inner(), p.value.clone().inner()))
                    .as_ref(),
                &LayerKv::new(
                    operands.keys.key.clone().inner(),
                    operands.keys.value.clone().inner(),
                ),
                &AttentionMask {
                    bias: operands.mask.bias.clone().inner(),
                    masking: operands.mask.masking,
                },
                0.5,
                dropout,
            )
        };
        let difference = max_difference(inference(&dropout), inference(&no_dropout));
        assert!(
            difference == 0.0,
            "{backend}: dropout acted in inference ({difference})"
        );
    }
}

/// The mask a model builds holds one bias value per key and batch row, never a `[T, S]` tensor
/// (the fused operation applies causality by position); spelled out whole for the decomposed
/// path it is `score_bias`, causality and padding together.
#[test]
fn a_mask_holds_a_bias_per_key_and_spells_out_to_the_score_bias() {
    for (backend, device) in devices() {
        // A prefix of 1, 2 cached tokens, 3 new ones; the first row's first cached one is
        // padding.
        let (prefix, past, queries) = (1, 2, 3);
        let keys = prefix + past + queries;
        let rows: Vec<bool> = (0..2 * keys).map(|i| i != prefix).collect();
        let key_mask = Tensor::<2, Bool>::from_data(TensorData::new(rows, [2, keys]), &device);
        for (key_mask, bias_shape) in [(Some(key_mask), [2, 1, 1, keys]), (None, [1, 1, 1, keys])] {
            let mask = AttentionMask::new(prefix, past, queries, key_mask.clone(), &device);
            assert_eq!(mask.bias.dims(), bias_shape, "{backend}");
            let whole = score_bias(prefix, past, queries, key_mask, &device);
            assert_eq!(
                max_difference(mask.full_bias(queries), whole),
                0.0,
                "{backend}: the whole bias differs from score_bias"
            );
        }
    }
}
