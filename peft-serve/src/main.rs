//! `peft-serve --model DIR [--adapter NAME=DIR]...`: the HTTP server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use peft_runtime::{DeviceArg, LoadedModel};
use peft_serve::api::{AppState, router};
use peft_serve::engine::{BatchLimits, Engine};
use peft_serve::registry::Registry;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serve prompt- and prefix-tuning adapters over one frozen GPT-2"
)]
struct Args {
    /// The base model: a directory (config.json, weights, tokenizer) or a Hugging Face hub id.
    #[arg(long)]
    model: String,
    /// Name requests use for the base model without an adapter (default: the --model value).
    #[arg(long)]
    base_name: Option<String>,
    /// An adapter to load at start, `NAME=DIR` (PEFT format); repeat for more.
    #[arg(long = "adapter", value_parser = parse_adapter)]
    adapters: Vec<(String, PathBuf)>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed on start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most requests generated together in one batch.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// How long a request waits for others to share its batch, in milliseconds.
    #[arg(long, default_value_t = 10)]
    max_wait_ms: u64,
    /// Most positions one request may use (prompt, virtual tokens and max_tokens); default:
    /// the model's. Attention's memory grows with the square of it: lower it for models of
    /// long contexts (Qwen2.5's 32,768 positions, say) to bound what one request can take.
    #[arg(long)]
    max_context: Option<usize>,
    #[command(flatten)]
    device: DeviceArg,
}

fn parse_adapter(s: &str) -> Result<(String, PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=DIR"))?;
    Ok((name.to_string(), PathBuf::from(dir)))
}

fn main() {
    peft_runtime::allocator::keep_freed_memory();
    peft_runtime::init_logging();
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if args.max_context == Some(0) {
        bail!("--max-context must be at least 1");
    }
    let loaded = LoadedModel::load(&args.model, &args.device, false)?;
    // Requests are text: the server cannot run without the model's tokenizer.
    let tokenizer = loaded.tokenizer()?.clone();
    let base_name = args.base_name.clone().unwrap_or_else(|| args.model.clone());
    let mut registry = Registry::new(&base_name, loaded.shapes(), loaded.device.clone());
    for (name, dir) in &args.adapters {
        let info = registry.load(name, dir)?;
        eprintln!(
            "adapter `{name}`: {} with {} virtual tokens, {} parameters",
            info.peft_type, info.num_virtual_tokens, info.parameters
        );
    }
    let mut engine = Engine::start(
        loaded.model,
        registry,
        tokenizer.eos_id(),
        BatchLimits {
            max_batch: args.max_batch,
            max_wait: Duration::from_millis(args.max_wait_ms),
        },
    );
    if let Some(positions) = args.max_context {
        engine.limit_context(positions);
    }
    let state = Arc::new(AppState::new(engine, tokenizer));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        println!("peft-serve: base model `{base_name}` on http://{address}");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving HTTP")
    })
}
