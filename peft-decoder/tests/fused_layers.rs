//! The fused normalisations and activations against the decomposed forms they replace (Burn's
//! `LayerNorm::forward`, `RmsNorm::forward` and `silu`, and `gelu_tanh_decomposed`): the same
//! outputs and the same gradients for the input, gamma and beta, on every CPU backend compiled
//! in, for a small shape and one that spans several of the kernels' chunks; and the linear layers
//! over rows (LibTorch's `addmm`) against Burn's `Linear`, and the rotary embedding against its
//! decomposed form.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use peft_decoder::extension::runs_on;
use peft_decoder::fused_layers::{gelu_tanh, gelu_tanh_decomposed, layer_norm, rms_norm, silu};
use peft_decoder::fused_rope::{RotaryPhases, rope, rope_decomposed};
use peft_decoder::linear::ForwardRows;

mod common;
use common::devices;

/// f32, relative to the largest magnitude compared (at least 1): gamma's and beta's gradients
/// are sums over every row, and grow with them.
const TOLERANCE: f32 = 1e-5;

/// `[batch, len, width]` shapes: a small one, and one of 33 rows of GPT-2's width (several
/// LayerNorm chunks of 16 rows, GELU chunks of 16,384 values, and a partial last chunk of each).
const SHAPES: [[usize; 3]; 2] = [[2, 5, 7], [3, 11, 768]];

const EPSILON: f64 = 1e-5;

fn assert_close<const D: usize>(fused: Tensor<D>, decomposed: Tensor<D>, what: &str) {
    let scale = decomposed.clone().abs().max().into_scalar::<f32>().max(1.0);
    let difference = (fused - decomposed).abs().max().into_scalar::<f32>();
    assert!(
        difference <= TOLERANCE * scale,
        "{what}: fused and decomposed differ by {difference} (largest magnitude {scale})"
    );
}

/// A LayerNorm with random gamma and beta (tracked), whatever its init.
fn random_norm(width: usize, device: &Device) -> LayerNorm {
    let mut norm = LayerNormConfig::new(width)
        .with_epsilon(EPSILON)
        .init(device);
    let random = |mean| {
        Param::from_tensor(Tensor::<1>::random(
            [width],
            Distribution::Normal(mean, 0.5),
            device,
        ))
    };
    norm.gamma = random(1.0);
    norm.beta = Some(random(0.0));
    norm
}

/// An RMSNorm with a random gamma (tracked), whatever its init.
fn random_rms_norm(width: usize, device: &Device) -> RmsNorm {
    let mut norm = RmsNormConfig::new(width).with_epsilon(EPSILON).init(device);
    norm.gamma = Param::from_tensor(Tensor::<1>::random(
        [width],
        Distribution::Normal(1.0, 0.5),
        device,
    ));
    norm
}

#[test]
fn fused_layer_norm_matches_the_decomposed_outputs_and_gradients() {
    for (backend, device) in devices() {
        let device = device.autodiff();
        assert!(
            runs_on(&device),
            "{backend}: the fused layers are built for it"
        );
        for shape in SHAPES {
            let at = format!("{backend}, LayerNorm over {shape:?}");
            let norm = random_norm(shape[2], &device);
            // Off-centre rows with unequal spread, as residual streams have.
            let input =
                Tensor::<3>::random(shape, Distribution::Normal(3.0, 2.0), &device).require_grad();
            let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |forward: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let output = forward(input.clone());
                let grads = (output.clone() * weights.clone()).sum().backward();
                let grad = |tensor: Tensor<1>, name: &str| {
                    tensor
                        .grad(&grads)
                        .unwrap_or_else(|| panic!("{at}: no gradient for {name}"))
                };
                let beta = norm.beta.as_ref().expect("random_norm sets beta").val();
                (
                    output.inner(),
                    input.grad(&grads).expect("the input is tracked"),
                    grad(norm.gamma.val(), "gamma"),
                    grad(beta, "beta"),
                )
            };
            let fused = run(&|x| layer_norm(&norm, EPSILON, x));
            let decomposed = run(&|x| norm.forward(x));
            assert_close(fused.0, decomposed.0, &format!("{at}: outputs"));
            assert_close(fused.1, decomposed.1, &format!("{at}: input gradients"));
            assert_close(fused.2, decomposed.2, &format!("{at}: gamma gradients"));
            assert_close(fused.3, decomposed.3, &format!("{at}: beta gradients"));
        }
    }
}

/// An element-wise activation's fused and decomposed forms give the same outputs and input
/// gradients.
fn check_activation(
    name: &str,
    fused: fn(Tensor<3>) -> Tensor<3>,
    decomposed: fn(Tensor<3>) -> Tensor<3>,
) {
    for (backend, device) in devices() {
        let device = device.autodiff();
        for shape in SHAPES {
            let at = format!("{backend}, {name} over {shape:?}");
            // Wide enough to reach both tails, where the sigmoids saturate.
            let input = Tensor::<3>::random(shape, Distribution::Uniform(-8.0, 8.0), &device)
                .require_grad();
            let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |forward: fn(Tensor<3>) -> Tensor<3>| {
                let output = forward(input.clone());
                let grads = (output.clone() * weights.clone()).sum().backward();
                (
                    output.inner(),
                    input.grad(&grads).expect("the input is tracked"),
                )
            };
            let (fused, fused_grad) = run(fused);
            let (decomposed, decomposed_grad) = run(decomposed);
            assert_close(fused, decomposed, &format!("{at}: outputs"));
            assert_close(
                fused_grad,
                decomposed_grad,
                &format!("{at}: input gradients"),
            );
        }
    }
}

#[test]
fn fused_gelu_matches_the_decomposed_outputs_and_gradients() {
    check_activation("GELU", gelu_tanh, gelu_tanh_decomposed);
}

#[test]
fn fused_silu_matches_the_decomposed_outputs_and_gradients() {
    check_activation("SiLU", silu, burn::tensor::activation::silu);
}

#[test]
fn fused_rms_norm_matches_the_decomposed_outputs_and_gradients() {
    for (backend, device) in devices() {
        let device = device.autodiff();
        for shape in SHAPES {
            let at = format!("{backend}, RMSNorm over {shape:?}");
            let norm = random_rms_norm(shape[2], &device);
            let input =
                Tensor::<3>::random(shape, Distribution::Normal(1.0, 2.0), &device).require_grad();
            let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |forward: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let output = forward(input.clone());
                let grads = (output.clone() * weights.clone()).sum().backward();
                (
                    output.inner(),
                    input.grad(&grads).expect("the input is tracked"),
                    norm.gamma.val().grad(&grads).expect("gamma is tracked"),
                )
            };
            let fused = run(&|x| rms_norm(&norm, x));
            let decomposed = run(&|x| norm.forward(x));
            assert_close(fused.0, decomposed.0, &format!("{at}: outputs"));
            assert_close(fused.1, decomposed.1, &format!("{at}: input gradients"));
            assert_close(fused.2, decomposed.2, &format!("{at}: gamma gradients"));
        }
    }
}

/// A norm's forward pass, fused or decomposed.
type Forward<'a> = &'a dyn Fn(Tensor<3>) -> Tensor<3>;

/// A frozen norm, as prompt and prefix tuning have: the fused backward is asked for the input's
/// gradient alone (the parameters' are not computed, as in PyTorch), which still equals the
/// decomposed form's, and the parameters get none.
#[test]
fn frozen_norms_give_their_input_gradient_alone() {
    for (backend, device) in devices() {
        let device = device.autodiff();
        let shape = SHAPES[1];
        let layer_norm_module = random_norm(shape[2], &device).no_grad();
        let rms_norm_module = random_rms_norm(shape[2], &device).no_grad();
        let input =
            Tensor::<3>::random(shape, Distribution::Normal(3.0, 2.0), &device).require_grad();
        let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let run = |forward: &dyn Fn(Tensor<3>) -> Tensor<3>, params: Vec<Tensor<1>>| {
            let grads = (forward(input.clone()) * weights.clone()).sum().backward();
            let parameter_grads = params.iter().filter(|p| p.grad(&grads).is_some()).count();
            (
                input.grad(&grads).expect("the input is tracked"),
                parameter_grads,
            )
        };
        let layer_norm_params = || {
            let beta = layer_norm_module
                .beta
                .as_ref()
                .expect("random_norm sets beta");
            vec![layer_norm_module.gamma.val(), beta.val()]
        };
        let checks: [(&str, Forward, Forward, Vec<Tensor<1>>); 2] = [
            (
                "LayerNorm",
                &|x| layer_norm(&layer_norm_module, EPSILON, x),
                &|x| layer_norm_module.forward(x),
                layer_norm_params(),
            ),
            (
                "RMSNorm",
                &|x| rms_norm(&rms_norm_module, x),
                &|x| rms_norm_module.forward(x),
                vec![rms_norm_module.gamma.val()],
            ),
        ];
        for (name, fused, decomposed, params) in checks {
            let at = format!("{backend}, frozen {name} over {shape:?}");
            let (fused_grad, fused_params) = run(fused, params.clone());
            let (decomposed_grad, _) = run(decomposed, params);
            assert_close(
                fused_grad,
                decomposed_grad,
                &format!("{at}: input gradients"),
            );
            assert_eq!(fused_params, 0, "{at}: a frozen parameter got a gradient");
        }
    }
}

#[test]
fn the_fused_layers_are_exact_where_they_are_known() {
    // Anchors independent of the decomposed forms: GELU(0) = 0 and GELU(x) → x for large x
    // (tanh → 1); a LayerNorm of a constant row is beta, and of [1, 3] with unit gamma is
    // [-1, 1] up to epsilon.
    for (backend, device) in devices() {
        let gelu = gelu_tanh(Tensor::<1>::from_floats([0.0, 20.0, -20.0], &device));
        let gelu: Vec<f32> = gelu.into_data().try_to_vec::<f32>().expect("f32");
        assert_eq!(
            gelu,
            vec![0.0, 20.0, 0.0],
            "{backend}: GELU at 0 and the tails"
        );
        let norm = LayerNormConfig::new(2).with_epsilon(EPSILON).init(&device);
        let rows = Tensor::<2>::from_floats([[5.0, 5.0], [1.0, 3.0]], &device);
        let normalised: Vec<f32> = layer_norm(&norm, EPSILON, rows)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let expected = [0.0, 0.0, -1.0, 1.0];
        for (value, expected) in normalised.iter().zip(expected) {
            assert!(
                (value - expected).abs() < 1e-4,
                "{backend}: LayerNorm gave {normalised:?}"
            );
        }
    }
}

/// A linear layer with a bias, over `[batch, len, d_in]` rows (`forward_rows`: on LibTorch one
/// `addmm` with its own backward), against Burn's `Linear::forward` of the same rows: the same
/// outputs and the same gradients for the input, the weight and the bias, whichever of them
/// autodiff tracks — all three (full fine-tuning), the input alone (a frozen layer, which then
/// gives the weight and bias none), the parameters alone, the bias alone.
#[test]
fn linear_rows_match_burns_linear() {
    for (backend, device) in devices() {
        let device = device.autodiff();
        for [batch, len, d_in] in SHAPES {
            let d_out = d_in + 3;
            for (input_tracked, weight_tracked, bias_tracked) in [
                (true, true, true),
                (true, false, false),
                (false, true, true),
                (false, false, true),
            ] {
                let at = format!(
                    "{backend}, linear [{batch}, {len}, {d_in}] -> {d_out}, tracked: input \
                     {input_tracked}, weight {weight_tracked}, bias {bias_tracked}"
                );
                let mut linear = LinearConfig::new(d_in, d_out).init(&device);
                linear.bias = Some(Param::from_tensor(Tensor::<1>::random(
                    [d_out],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )));
                if !weight_tracked {
                    linear.weight = linear.weight.set_require_grad(false);
                }
                if !bias_tracked {
                    linear.bias = linear.bias.map(|bias| bias.set_require_grad(false));
                }
                let mut input = Tensor::<3>::random(
                    [batch, len, d_in],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                if input_tracked {
                    input = input.require_grad();
                }
                let weights = Tensor::<3>::random(
                    [batch, len, d_out],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let run = |output: Tensor<3>| {
                    let grads = (output.clone() * weights.clone()).sum().backward();
                    let bias = linear.bias.as_ref().expect("a bias");
                    (
                        output.inner(),
                        input.grad(&grads),
                        linear.weight.val().grad(&grads),
                        bias.val().grad(&grads),
                    )
                };
                let fused = run(linear.forward_rows(input.clone()));
                let reference = run(linear
                    .forward(input.clone().reshape([batch * len, d_in]))
                    .reshape([batch, len, d_out]));
                assert_close(fused.0, reference.0, &format!("{at}: outputs"));
                for (name, fused, reference) in [
                    (
                        "input",
                        fused.1.map(|g| g.flatten::<1>(0, 2)),
                        reference.1.map(|g| g.flatten::<1>(0, 2)),
                    ),
                    (
                        "weight",
                        fused.2.map(|g| g.flatten::<1>(0, 1)),
                        reference.2.map(|g| g.flatten::<1>(0, 1)),
                    ),
                    ("bias", fused.3, reference.3),
                ] {
                    match (fused, reference) {
                        (Some(fused), Some(reference)) => {
                            assert_close(fused, reference, &format!("{at}: {name} gradients"))
                        }
                        (None, None) => {}
                        (fused, _) => panic!(
                            "{at}: {name} has a gradient {} but not {}",
                            if fused.is_some() {
                                "fused"
                            } else {
                                "in Burn's"
                            },
                            if fused.is_some() {
                                "in Burn's"
                            } else {
                                "fused"
                            },
                        ),
                    }
                }
            }
        }
    }
}

/// The rotary embedding as one node against its decomposed form (Hugging Face's
/// `rotate_half`), with phases shared by the batch and one per row: the same outputs and input
/// gradients.
#[test]
fn rope_matches_the_decomposed_form() {
    for (backend, device) in devices() {
        let device = device.autodiff();
        assert!(
            runs_on(&device),
            "{backend}: the rotary embedding is built for it"
        );
        for phase_rows in [1, 2] {
            let at = format!("{backend}, RoPE, phases for {phase_rows} row(s)");
            let x = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let phases = Tensor::<4>::random(
                [phase_rows, 1, 5, 8],
                Distribution::Uniform(-3.0, 3.0),
                &device,
            );
            let (cos, sin) = (phases.clone().cos(), phases.sin());
            let weights =
                Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), &device);
            let run = |output: Tensor<4>| {
                let grads = (output.clone() * weights.clone()).sum().backward();
                (output.inner(), x.grad(&grads).expect("x has a gradient"))
            };
            let rotary = RotaryPhases::new(cos.clone(), sin.clone());
            let (fused, fused_grad) = run(rope(x.clone(), &rotary));
            let (decomposed, decomposed_grad) = run(rope_decomposed(x.clone(), &cos, &sin));
            assert_close(fused, decomposed, &format!("{at}: outputs"));
            assert_close(
                fused_grad,
                decomposed_grad,
                &format!("{at}: input gradients"),
            );
        }
    }
}
