//! The server over a Llama-family base (tiny Qwen2, saved in shards): prompt and prefix
//! adapters of that family, batched together, each completion what the library generates for
//! that request alone.

mod common;

use common::{complete, fixtures, start_server_with};
use peft_core::{Adapter, PeftAdapter};
use peft_decoder::{GenerationConfig, generate};
use peft_gpt2::Gpt2Tokenizer;
use peft_runtime::ComputeBackend;
use serde_json::json;

/// Greedy continuation of `prompt` under the adapter in `adapter`, by the library alone.
fn solo(prompt: &str, adapter: &str, max_tokens: usize) -> String {
    let device = ComputeBackend::Flex.device().unwrap();
    let dir = fixtures().join("tiny-qwen2");
    let (model, config) = peft_llama::load_pretrained(&dir, &device).unwrap();
    let tokenizer = Gpt2Tokenizer::from_dir(&dir).unwrap();
    let adapter = PeftAdapter::load(
        &fixtures().join("adapters").join(adapter),
        config.adapter_shapes(),
        &device,
    )
    .unwrap();
    let eos = tokenizer.eos_id();
    let ids = tokenizer.encode(prompt).unwrap();
    let mut out = generate(
        &model,
        &[ids],
        &adapter.conditioning(),
        &GenerationConfig::greedy(max_tokens, eos),
    )
    .unwrap()
    .remove(0);
    if out.last() == Some(&eos) {
        out.pop();
    }
    tokenizer.decode(&out).unwrap()
}

#[test]
fn completions_over_a_qwen2_base_match_the_library() {
    let adapters = fixtures().join("adapters");
    let server = start_server_with(
        "tiny-qwen2",
        &[
            ("prompt", adapters.join("tiny-qwen2-prompt")),
            ("prefix", adapters.join("tiny-qwen2-prefix-projection")),
        ],
    );
    let requests = [
        ("prompt", "tiny-qwen2-prompt", "The Mill is"),
        ("prefix", "tiny-qwen2-prefix-projection", "Zizzi serves"),
    ];
    // Sent together, so that the server batches the two adapters into one generation.
    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|(name, _, prompt)| {
                let server = &server;
                scope.spawn(move || {
                    complete(
                        server,
                        json!({"model": name, "prompt": prompt, "max_tokens": 6, "temperature": 0}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((_, adapter, prompt), (status, body)) in requests.iter().zip(answers) {
        assert_eq!(status, 200, "{body}");
        let text = body["choices"][0]["text"].as_str().unwrap();
        assert_eq!(text, solo(prompt, adapter, 6), "{adapter}");
    }
}
