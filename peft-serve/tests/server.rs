//! The real server on localhost, over real HTTP: completions through the base model and
//! through adapters equal the library's generation for that request alone — also when many
//! requests for different adapters arrive together and share batches, and when streamed piece
//! by piece — and bad input gets
//! the right status and a message that names the problem, without taking the server down.

use std::io::{Read, Write};
use std::path::Path;

use peft_core::{
    Adapter, Conditioning, ModelShape, PeftAdapter, PrefixReparameterisation, PromptLearningConfig,
};
use peft_gpt2::{GenerationConfig, Gpt2Tokenizer, generate, load_pretrained};
use peft_runtime::ComputeBackend;
use serde_json::{Value, json};

mod common;

use common::{Server, call, complete, fixtures, start_server, start_server_with_flags};

/// The JSON events of a streamed completion, checking the stream ends with `[DONE]`.
fn stream(server: &Server, body: Value) -> Vec<Value> {
    let response = ureq::post(&format!("{}/v1/completions", server.base))
        .send_json(body)
        .unwrap();
    assert_eq!(response.content_type(), "text/event-stream");
    let body = response.into_string().unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn text_of(response: &Value) -> String {
    response["choices"][0]["text"].as_str().unwrap().to_string()
}

/// What the library generates for one prompt alone (greedy, stopping at end-of-text).
fn solo(prompt: &str, adapter: Option<&Path>, max_tokens: usize) -> String {
    let device = ComputeBackend::Flex.device().unwrap();
    let dir = fixtures().join("tiny-gpt2");
    let (gpt2, config, _) = load_pretrained(dir.to_str().unwrap(), &device).unwrap();
    let tokenizer = Gpt2Tokenizer::from_dir(&dir).unwrap();
    let shape = config.shape();
    let conditioning = adapter.map_or_else(Conditioning::none, |dir| {
        PeftAdapter::load(dir, shape, &device)
            .unwrap()
            .conditioning()
    });
    let ids = tokenizer.encode(prompt).unwrap();
    let eos = tokenizer.eos_id();
    let mut out = generate(
        &gpt2,
        &[ids],
        &conditioning,
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
fn completions_match_solo_generation_even_when_batched_together() {
    let server = start_server();
    let (status, models) = call(ureq::get(&format!("{}/v1/models", server.base)), None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "prefix", "prompt"]);
    assert_eq!(models["data"][2]["adapter"]["num_virtual_tokens"], 5);

    let adapters = fixtures().join("adapters");
    let cases = [
        ("tiny", None, "The Mill is a pub"),
        ("prompt", Some(adapters.join("prompt")), "The Mill is a pub"),
        ("prefix", Some(adapters.join("prefix")), "riverside, cheap"),
        ("prompt", Some(adapters.join("prompt")), "yes"),
    ];
    let expected: Vec<String> = cases
        .iter()
        .map(|(_, dir, prompt)| solo(prompt, dir.as_deref(), 12))
        .collect();
    for ((model, _, prompt), want) in cases.iter().zip(&expected) {
        let (status, response) = complete(
            &server,
            json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0}),
        );
        assert_eq!(status, 200, "{response}");
        assert_eq!(&text_of(&response), want, "{model}: {prompt}");
        assert_eq!(response["model"], *model);
        assert!(response["usage"]["completion_tokens"].as_u64().unwrap() <= 12);
    }

    // 24 requests at once over three models: they share batches, and each still gets its
    // solo answer.
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (model, _, prompt) = &cases[i % cases.len()];
                let want = &expected[i % cases.len()];
                let server = &server;
                scope.spawn(move || {
                    let (status, response) = complete(
                        server,
                        json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0.0}),
                    );
                    assert_eq!(status, 200, "{response}");
                    assert_eq!(&text_of(&response), want, "concurrent {model}: {prompt}");
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });

    // Sampling: the same seed gives the same text; `stop` cuts it.
    let sampled = json!({"model": "prefix", "prompt": "a", "max_tokens": 10, "temperature": 1.0, "top_p": 0.9, "seed": 7});
    let (_, first) = complete(&server, sampled.clone());
    let (_, second) = complete(&server, sampled.clone());
    assert_eq!(text_of(&first), text_of(&second));
    // Without a seed, as in OpenAI's API, each request samples its own text.
    let mut unseeded = sampled;
    unseeded.as_object_mut().unwrap().remove("seed");
    let texts: std::collections::BTreeSet<String> = (0..4)
        .map(|_| text_of(&complete(&server, unseeded.clone()).1))
        .collect();
    assert!(texts.len() > 1, "four unseeded samples were all {texts:?}");
    let full = &expected[0];
    if let Some(stop) = full.get(2..4).filter(|s| !s.trim().is_empty()) {
        let (status, cut) = complete(
            &server,
            json!({"model": "tiny", "prompt": cases[0].2, "max_tokens": 12, "temperature": 0, "stop": [stop]}),
        );
        assert_eq!(status, 200);
        assert_eq!(text_of(&cut), full[..full.find(stop).unwrap()]);
        assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    }
}

#[test]
fn bad_requests_get_clear_errors_and_adapters_load_and_unload() {
    let server = start_server();
    let url = |path: &str| format!("{}{path}", server.base);

    let (status, body) = complete(&server, json!({"model": "nope", "prompt": "hi"}));
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nope`")
    );

    let long = "word ".repeat(200);
    let (status, body) = complete(
        &server,
        json!({"model": "prompt", "prompt": long, "max_tokens": 4}),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("5 virtual tokens") && message.contains("64"),
        "{message}"
    );

    let (status, body) = call(ureq::post(&url("/v1/completions")), Some("{\"model\": "));
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        ureq::post(&url("/v1/completions")),
        Some(r#"{"prompt": "no model"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("model"));

    // Load a new adapter, refuse a duplicate and one made for another model shape.
    let projection = fixtures().join("adapters/prefix-projection");
    let load = |name: &str, path: &Path| {
        call(
            ureq::post(&url("/v1/adapters")),
            Some(&json!({"name": name, "path": path}).to_string()),
        )
    };
    let (status, body) = load("projected", &projection);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["peft_type"], "PREFIX_TUNING");
    let (status, _) = load("projected", &projection);
    assert_eq!(status, 409);

    let other = std::env::temp_dir().join(format!("peft-serve-test-{}", std::process::id()));
    let wider = ModelShape {
        d_model: 48,
        n_layer: 2,
        n_head: 4,
    };
    let device = ComputeBackend::Flex.device().unwrap();
    PeftAdapter::prefix_tuning(
        PromptLearningConfig::new(3, wider),
        PrefixReparameterisation::Direct,
        &device,
    )
    .save(&other)
    .unwrap();
    let (status, body) = load("wider", &other);
    let _ = std::fs::remove_dir_all(&other);
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("48") && message.contains("32"),
        "{message}"
    );

    let (status, body) = complete(
        &server,
        json!({"model": "projected", "prompt": "hi", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(ureq::delete(&url("/v1/adapters/projected")), None);
    assert_eq!(status, 200);
    let (status, _) = complete(&server, json!({"model": "projected", "prompt": "hi"}));
    assert_eq!(status, 404);
    let (status, _) = call(ureq::delete(&url("/v1/adapters/projected")), None);
    assert_eq!(status, 404);

    // Still serving after all of that.
    let (status, _) = complete(
        &server,
        json!({"model": "tiny", "prompt": "hi", "max_tokens": 2, "temperature": 0}),
    );
    assert_eq!(status, 200);
}

#[test]
fn streamed_completions_arrive_piece_by_piece_with_the_same_text() {
    let server = start_server();
    for (model, prompt, stop) in [
        ("prompt", "The Mill is a pub", None),
        ("prefix", "riverside, cheap", None),
        ("tiny", "The Mill is a pub", Some(2..4)),
    ] {
        let mut request =
            json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0});
        if let Some(range) = stop {
            let whole = text_of(&complete(&server, request.clone()).1);
            if let Some(stop) = whole.get(range).filter(|s| !s.trim().is_empty()) {
                request["stop"] = json!([stop]);
            }
        }
        let (status, whole) = complete(&server, request.clone());
        assert_eq!(status, 200, "{whole}");
        request["stream"] = json!(true);
        request["stream_options"] = json!({"include_usage": true});
        let mut events = stream(&server, request);
        let usage = events.pop().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], whole["usage"]);
        let (last, pieces) = events.split_last().unwrap();
        assert!(
            pieces.len() >= 2,
            "{model}: expected several pieces, got {events:?}"
        );
        for piece in pieces {
            assert_eq!(piece["object"], "text_completion");
            assert_eq!(piece["model"], model);
            assert!(piece["choices"][0]["finish_reason"].is_null(), "{piece}");
            assert!(!text_of(piece).is_empty());
        }
        assert_eq!(last["choices"][0]["text"], "");
        assert_eq!(
            last["choices"][0]["finish_reason"],
            whole["choices"][0]["finish_reason"]
        );
        let streamed: String = pieces.iter().map(text_of).collect();
        assert_eq!(streamed, text_of(&whole), "{model}: {prompt}");
    }

    // Errors before the first token are plain JSON errors.
    let (status, body) = complete(
        &server,
        json!({"model": "nope", "prompt": "hi", "stream": true}),
    );
    assert_eq!(status, 404, "{body}");

    // A client that leaves mid-stream costs nothing more and breaks nothing.
    let address = server.base.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    let body = json!({"model": "prefix", "prompt": "a", "max_tokens": 40, "temperature": 0, "stream": true})
        .to_string();
    write!(
        socket,
        "POST /v1/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 64];
    let read = socket.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..read]).starts_with("HTTP/1.1 200"));
    drop(socket);
    let (status, _) = complete(
        &server,
        json!({"model": "prefix", "prompt": "hi", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(status, 200);
}

/// `--max-context` lowers what one request may use below the model's positions.
#[test]
fn max_context_bounds_each_request() {
    let adapters = [("prompt", fixtures().join("adapters/prompt"))];
    let server = start_server_with_flags("tiny-gpt2", &adapters, &["--max-context", "16"]);
    let request = |max_tokens: usize| json!({"model": "prompt", "prompt": "The Mill", "max_tokens": max_tokens, "temperature": 0});
    let (status, body) = complete(&server, request(4));
    assert_eq!(status, 200, "{body}");
    let (status, body) = complete(&server, request(20));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("over the 16 this server allows"),
        "{message}"
    );
}
