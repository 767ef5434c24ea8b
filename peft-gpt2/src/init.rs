//! Fresh weights as Hugging Face initialises GPT-2 (`_init_weights`), shared by the model and
//! its attention: a random model then behaves like a real GPT-2 in scale (its logits, its
//! loss, its timing).

use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use crate::config::Gpt2Config;

/// Standard deviation of fresh weights: Hugging Face's `initializer_range` default.
pub(crate) const INIT_STD: f64 = 0.02;

pub(crate) fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// A fresh linear layer as Hugging Face initialises GPT-2's (`_init_weights`): weights from
/// N(0, std), biases zero. Burn's default (Kaiming-uniform) would make a random model's
/// logits, and so its loss and timing, unlike any real GPT-2's.
pub(crate) fn hf_linear(d_in: usize, d_out: usize, std: f64, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(normal(std))
        .init(device);
    linear.bias = Some(Initializer::Zeros.init([d_out], device));
    linear
}

/// Layers that write into the residual stream start smaller, N(0, 0.02/√(2·layers)), as in
/// GPT-2 and Hugging Face.
pub(crate) fn residual_projection_std(config: &Gpt2Config) -> f64 {
    INIT_STD / (2.0 * config.n_layer as f64).sqrt()
}
