//! A load test of a running `peft-serve`: concurrent clients, each sending completion
//! requests back to back over several adapters for a fixed time; reports requests/s,
//! latency percentiles and errors, and with `--stream` the time to the first piece of text.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use peft_runtime::args::at_least_one;
use serde::Serialize;
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct LoadBench {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Models (adapters or the base) the clients cycle through.
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub clients: usize,
    /// How long clients keep sending.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub max_tokens: usize,
    #[arg(
        long,
        default_value = "The Mill | pub | Indian | cheap | riverside | yes =>"
    )]
    pub prompt: String,
    /// Stream the completions (server-sent events) and measure the time to their first text.
    #[arg(long)]
    pub stream: bool,
}

#[derive(Debug, Serialize)]
pub struct LoadRecord {
    pub mode: &'static str,
    pub clients: usize,
    pub models: Vec<String>,
    pub max_tokens: usize,
    pub seconds: f64,
    pub requests: usize,
    pub errors: usize,
    pub requests_per_s: f64,
    pub completion_tokens_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// With `--stream`: from sending the request to receiving its first text.
    pub first_text_ms_p50: Option<f64>,
    pub first_text_ms_p99: Option<f64>,
    pub stream: bool,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

struct ClientResult {
    latencies: Vec<Duration>,
    first_texts: Vec<Duration>,
    tokens: usize,
    errors: Vec<String>,
}

/// What one successful request measured.
struct Answer {
    tokens: usize,
    first_text: Option<Duration>,
}

/// One request, whole or streamed; the time to its first text when streamed.
fn send(url: &str, mut body: serde_json::Value, stream: bool) -> Result<Answer> {
    let asked = Instant::now();
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let response = ureq::post(url).send_json(body)?;
    if !stream {
        let reply: serde_json::Value = response.into_json()?;
        return Ok(Answer {
            tokens: reply["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize,
            first_text: None,
        });
    }
    let mut answer = Answer {
        tokens: 0,
        first_text: None,
    };
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return Ok(answer);
        }
        let piece: serde_json::Value = serde_json::from_str(data)?;
        if let Some(error) = piece.get("error") {
            bail!("error in the stream: {error}");
        }
        let has_text = piece["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty());
        if has_text && answer.first_text.is_none() {
            answer.first_text = Some(asked.elapsed());
        }
        if let Some(tokens) = piece["usage"]["completion_tokens"].as_u64() {
            answer.tokens = tokens as usize;
        }
    }
    bail!("the stream ended without `data: [DONE]`")
}

pub fn run(args: &LoadBench) -> Result<LoadRecord> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let url = format!("{}/v1/completions", args.url.trim_end_matches('/'));
    ureq::get(&format!("{}/v1/models", args.url.trim_end_matches('/')))
        .call()
        .with_context(|| format!("no peft-serve answering at {}", args.url))?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let results: Vec<ClientResult> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..args.clients)
            .map(|client| {
                let url = &url;
                scope.spawn(move || {
                    let mut result = ClientResult {
                        latencies: Vec::new(),
                        first_texts: Vec::new(),
                        tokens: 0,
                        errors: Vec::new(),
                    };
                    let mut sent = client;
                    while Instant::now() < until {
                        let model = &args.models[sent % args.models.len()];
                        sent += 1;
                        let body = json!({
                            "model": model,
                            "prompt": args.prompt,
                            "max_tokens": args.max_tokens,
                            "temperature": 0,
                        });
                        let asked = Instant::now();
                        match send(url, body, args.stream) {
                            Ok(answer) => {
                                result.latencies.push(asked.elapsed());
                                result.tokens += answer.tokens;
                                result.first_texts.extend(answer.first_text);
                            }
                            Err(err) => result.errors.push(format!("{err:#}")),
                        }
                    }
                    result
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let latencies = sorted_ms(results.iter().flat_map(|r| &r.latencies));
    let first_texts = sorted_ms(results.iter().flat_map(|r| &r.first_texts));
    let errors: Vec<&String> = results.iter().flat_map(|r| &r.errors).collect();
    let tokens: usize = results.iter().map(|r| r.tokens).sum();
    Ok(LoadRecord {
        mode: "serve-load",
        clients: args.clients,
        models: args.models.clone(),
        max_tokens: args.max_tokens,
        seconds,
        requests: latencies.len(),
        errors: errors.len(),
        requests_per_s: latencies.len() as f64 / seconds,
        completion_tokens_per_s: tokens as f64 / seconds,
        latency_ms_p50: percentile(&latencies, 0.5).unwrap_or(f64::NAN),
        latency_ms_p99: percentile(&latencies, 0.99).unwrap_or(f64::NAN),
        latency_ms_max: latencies.last().copied().unwrap_or(f64::NAN),
        first_text_ms_p50: percentile(&first_texts, 0.5),
        first_text_ms_p99: percentile(&first_texts, 0.99),
        stream: args.stream,
        first_error: errors.first().map(|e| e.to_string()),
    })
}

fn sorted_ms<'a>(durations: impl Iterator<Item = &'a Duration>) -> Vec<f64> {
    let mut ms: Vec<f64> = durations.map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The `q` quantile of sorted values (nearest rank), if there are any.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q).round() as usize])
}
