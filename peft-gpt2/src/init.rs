//! GPT-2's fresh weights (`_init_weights`), shared by the model and its attention; the
//! Hugging Face initialisers themselves are `peft_decoder::init`'s.

use crate::config::Gpt2Config;

/// Standard deviation of fresh weights: Hugging Face's `initializer_range` default.
pub(crate) const INIT_STD: f64 = peft_decoder::init::DEFAULT_INITIALIZER_RANGE;

/// Layers that write into the residual stream start smaller, N(0, 0.02/√(2·layers)), as in
/// GPT-2 and Hugging Face.
pub(crate) fn residual_projection_std(config: &Gpt2Config) -> f64 {
    INIT_STD / (2.0 * config.n_layer as f64).sqrt()
}
