//! A load test of a running `peft-serve`: concurrent clients, each sending completion
//! requests back to back over several adapters for a fixed time; reports requests/s,
//! latency percentiles and errors.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
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
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// How long clients keep sending.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[arg(long, default_value_t = 8)]
    pub max_tokens: usize,
    #[arg(
        long,
        default_value = "The Mill | pub | Indian | cheap | riverside | yes =>"
    )]
    pub prompt: String,
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
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

struct ClientResult {
    latencies: Vec<Duration>,
    tokens: usize,
    errors: Vec<String>,
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
                        match ureq::post(url).send_json(body) {
                            Ok(response) => {
                                result.latencies.push(asked.elapsed());
                                let reply: serde_json::Value =
                                    response.into_json().unwrap_or_default();
                                result.tokens +=
                                    reply["usage"]["completion_tokens"].as_u64().unwrap_or(0)
                                        as usize;
                            }
                            Err(err) => result.errors.push(err.to_string()),
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
    let mut latencies: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies.iter().map(|d| d.as_secs_f64() * 1e3))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies[((latencies.len() - 1) as f64 * q).round() as usize]
    };
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
        latency_ms_p50: percentile(0.5),
        latency_ms_p99: percentile(0.99),
        latency_ms_max: latencies.last().copied().unwrap_or(f64::NAN),
        first_error: errors.first().map(|e| e.to_string()),
    })
}
