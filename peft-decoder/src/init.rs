//! Fresh weights as Hugging Face's `_init_weights` makes them for GPT-2 and the Llama family:
//! linear and embedding weights from N(0, `initializer_range`), biases zero, norms one. A
//! random model then behaves like a trained one in scale — its logits, its loss (near
//! ln(vocabulary)), its timing — where Burn's defaults (Kaiming-uniform linears, N(0, 1)
//! embeddings, which a tied head turns into logits in the hundreds) would not.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// Hugging Face's `initializer_range` default, for configs that do not give one.
pub const DEFAULT_INITIALIZER_RANGE: f64 = 0.02;

pub fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// A linear layer with weights from N(0, `std`) and, if it has one, a zero bias.
pub fn hf_linear(d_in: usize, d_out: usize, bias: bool, std: f64, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(normal(std))
        .init(device);
    if bias {
        linear.bias = Some(Initializer::Zeros.init([d_out], device));
    }
    linear
}

/// An embedding table with rows from N(0, `std`).
pub fn hf_embedding(rows: usize, width: usize, std: f64, device: &Device) -> Embedding {
    EmbeddingConfig::new(rows, width)
        .with_initializer(normal(std))
        .init(device)
}
