//! The server under hostile clients: fuzzed and mistyped JSON, a 10 MB body, `max_tokens`
//! past the context (up to u64::MAX), options it does not support, clients that vanish in the
//! middle of a stream — interleaved with good requests. No request gets a 5xx, every good
//! request gets the same right answer throughout, and the server stays up.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{call, complete, start_server};
use serde_json::{Value, json};

fn good_request() -> Value {
    json!({"model": "prompt", "prompt": "The Mill", "max_tokens": 8, "temperature": 0})
}

/// Sends raw bytes over a fresh connection and returns what comes back (possibly nothing).
fn raw(address: &str, request: &[u8], read_for: Duration) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(read_for)).unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn hostile_requests_never_take_the_server_down_or_change_good_answers() {
    let server = start_server();
    let address = server.base.trim_start_matches("http://").to_string();
    let completions = format!("{}/v1/completions", server.base);
    let (status, reference) = complete(&server, good_request());
    assert_eq!(status, 200, "{reference}");
    let expected_text = reference["choices"][0]["text"].clone();
    let check_good = |round: &str| {
        let (status, body) = complete(&server, good_request());
        assert_eq!(status, 200, "after {round}: {body}");
        assert_eq!(body["choices"][0]["text"], expected_text, "after {round}");
    };

    // Requests that are well-formed JSON but wrong: each a 4xx with a JSON error naming it.
    let wrong: Vec<(Value, u16, &str)> = vec![
        (json!({"model": 5, "prompt": "x"}), 400, "model"),
        (json!({"model": "prompt", "prompt": 5}), 400, "prompt"),
        (
            json!({"model": "prompt", "prompt": "x", "max_tokens": "x"}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "max_tokens": -1}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "temperature": "hot"}),
            400,
            "temperature",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "temperature": -1}),
            400,
            "temperature",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "top_p": 0}),
            400,
            "top_p",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "stream": "yes"}),
            400,
            "stream",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "stop": 5}),
            400,
            "stop",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
            400,
            "stop",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "max_tokens": 100000}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "max_tokens": u64::MAX}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "n": 2}),
            400,
            "`n: 1`",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "logprobs": 5}),
            400,
            "logprobs",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "echo": true}),
            400,
            "echo",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "best_of": 3}),
            400,
            "best_of",
        ),
        (json!({"model": "prompt", "prompt": ""}), 400, "prompt"),
        (json!({"model": "nobody", "prompt": "x"}), 404, "nobody"),
        (
            json!({"model": "prompt", "prompt": "x", "frequency": 1}),
            400,
            "frequency",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "frequency_penalty": 0.5}),
            400,
            "frequency_penalty",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "presence_penalty": -1}),
            400,
            "presence_penalty",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "logit_bias": {"50256": -100}}),
            400,
            "logit_bias",
        ),
        (
            json!({"model": "prompt", "prompt": "x", "suffix": "y"}),
            400,
            "suffix",
        ),
        // Each stop string is matched after every token: their length is bounded.
        (
            json!({"model": "prompt", "prompt": "x", "stop": ["a".repeat(1001)]}),
            400,
            "1000 characters",
        ),
        (json!([]), 400, ""),
        (json!(null), 400, ""),
    ];
    for (body, status, named) in &wrong {
        let (got, error) = call(ureq::post(&completions), Some(&body.to_string()));
        assert_eq!(got, *status, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{body}: {message}");
    }
    check_good("mistyped requests");

    // What OpenAI clients send by default is accepted: options that ask for nothing, and
    // `null` for what has a default.
    let (status, body) = complete(
        &server,
        json!({"model": "prompt", "prompt": "The Mill", "max_tokens": 8, "temperature": 0,
               "logprobs": null, "n": 1, "user": "someone", "echo": false,
               "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {},
               "suffix": null, "stream": null, "stop": null, "top_p": null, "seed": null}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], expected_text);
    let (status, body) = complete(
        &server,
        json!({"model": "prompt", "prompt": "The Mill", "max_tokens": null, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["usage"]["completion_tokens"], 16,
        "OpenAI's default: {body}"
    );
    let (status, body) = complete(
        &server,
        json!({"model": "prompt", "prompt": "The Mill", "max_tokens": 2, "temperature": null}),
    );
    assert_eq!(status, 200, "{body}");

    // Routes and methods the API does not have are JSON errors too.
    for (request, status, named) in [
        (
            ureq::get(&format!("{}/v1/chat", server.base)),
            404,
            "/v1/chat",
        ),
        (ureq::get(&completions), 405, "GET"),
        (
            ureq::delete(&format!("{}/v1/adapters/%FF", server.base)),
            400,
            "",
        ),
    ] {
        let (got, error) = call(request, None);
        assert_eq!(got, status, "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{message}");
    }

    // Fuzzed bodies: a valid request with bytes replaced, cut or inserted (a fixed generator,
    // so a failure repeats). Whatever they parse to, the answer is never a 5xx.
    let valid = good_request().to_string().into_bytes();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..80 {
        let mut body = valid.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % body.len().max(1);
            match next() % 3 {
                0 => {
                    let structural = b"{}[]\",:0-9e \\";
                    body[at] = structural[next() as usize % structural.len()];
                }
                1 => body.truncate(at.max(1)),
                _ => body.insert(at, (next() % 256) as u8),
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let (status, _) = call(ureq::post(&completions), Some(&text));
        assert!(status < 500, "fuzz round {round}: {status} for {text}");
    }
    check_good("fuzzed requests");

    // A 10 MB body is refused as too large once the first MiB is read: the server answers
    // 413 while the client is still sending.
    let huge = 10 << 20;
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {huge}\r\n\r\n{{\"model\": \"prompt\", \"prompt\": \""
        );
        let _ = writer.write_all(head.as_bytes());
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..huge / chunk.len() {
            if writer.write_all(&chunk).is_err() {
                break; // the server has answered and closed
            }
        }
    });
    let mut response = Vec::new();
    let mut buffer = [0u8; 256];
    while response.len() < 12 {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    drop(stream);
    sending.join().unwrap();
    check_good("a 10 MB body");

    // Clients that leave in the middle of a streamed completion, or of their own request.
    for _ in 0..6 {
        let body = json!({"model": "prefix", "prompt": "The Mill", "max_tokens": 40,
                          "temperature": 0, "stream": true})
        .to_string();
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .write_all(
                format!(
                    "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        let mut first = [0u8; 64];
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.read(&mut first);
        drop(stream);
        let half = raw(
            &address,
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"mod",
            Duration::from_millis(50),
        );
        assert!(!half.contains("HTTP/1.1 5"), "{half}");
    }
    check_good("vanishing clients");

    let (status, models) = call(ureq::get(&format!("{}/v1/models", server.base)), None);
    assert_eq!(status, 200, "{models}");
    let mut server = server;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}
