//! A random Llama-family model is initialised as Hugging Face initialises one, so that its
//! loss, logits and timing (in `peft-bench`) are those of a real model's scale.

#[path = "../../peft-gpt2/tests/common/mod.rs"]
mod common;

use burn::prelude::*;
use common::{devices, to_vec1};
use peft_core::Conditioning;
use peft_decoder::adapted::forward_conditioned;
use peft_decoder::loss::mean_loss;
use peft_llama::{Llama, LlamaConfig};

/// With weights from N(0, 0.02) a fresh model predicts next to uniformly: its loss on random
/// tokens is a little above ln(vocabulary) (here 7.04 against 6.91; PEFT's Llama-3.2-1B shape
/// starts at 12.19 against 11.76). Burn's default N(0, 1) embeddings, through the tied LM head,
/// gave logits in the tens to hundreds and a loss of about 1,800 for a Llama-3.2-1B shape.
#[test]
fn a_random_model_starts_near_a_uniform_prediction() {
    let vocab = 1000;
    let config = LlamaConfig::from_json(&format!(
        r#"{{"model_type": "llama", "vocab_size": {vocab}, "hidden_size": 256,
            "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 64,
            "tie_word_embeddings": true}}"#
    ))
    .unwrap();
    assert_eq!(config.initializer_range, 0.02);
    for (backend, device) in devices() {
        device.seed(3);
        let model = Llama::new(&config, &device);
        let ids: Vec<i64> = (0..32).map(|i| (i * 37 + 11) % vocab as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 16]), &device);
        let logits = forward_conditioned(&model, ids.clone(), None, &Conditioning::none());
        let loss = to_vec1(mean_loss(logits, ids))[0];
        let uniform = (vocab as f32).ln();
        assert!(
            (loss - uniform).abs() < 0.5,
            "{backend}: a fresh model's loss {loss}, uniform prediction's {uniform}"
        );
    }
}
