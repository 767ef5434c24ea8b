//! The subcommands: parse nothing, run what `cli` parsed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use peft_core::{Adapter, AdapterModule, Conditioning, ParameterCount, PeftConfig};
use peft_decoder::Adapted;
use peft_gpt2::{GenerationConfig, Sampling, generate};

use crate::cli::{Cli, Command, DemoArgs, EvalArgs, GenerateArgs, InfoArgs};
use crate::data::token_cache;
use crate::data::token_cache::TokenCache;
use crate::{demo, eval, train};
use peft_runtime::{DeviceArg, LoadedModel};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Train(args)) => {
            let outcome = train::train(&args)?;
            if outcome.interrupted {
                return Err(train::Interrupted {
                    saved: outcome.adapter_dir,
                }
                .into());
            }
            Ok(())
        }
        Some(Command::Eval(args)) => eval_command(&args),
        Some(Command::Generate(args)) => generate_command(&args),
        Some(Command::Info(args)) => info_command(&args),
        Some(Command::Demo(args)) => demo::run(&args),
        None => demo::run(&DemoArgs::default()),
    }
}

fn eval_command(args: &EvalArgs) -> Result<()> {
    refuse_to_overwrite(&args.output, "--data", &args.data)?;
    peft_runtime::files::check_writable(&args.output).with_context(|| {
        format!(
            "--output {}: the report could not be written there; choose a path in an \
             existing, writable directory",
            args.output.display()
        )
    })?;
    let loaded = LoadedModel::load(&args.model, &args.device, false)?;
    let adapter = loaded.load_optional_adapter(args.adapter.as_deref())?;
    let virtual_tokens = adapter.as_ref().map_or(0, Adapter::num_virtual_tokens);
    let max_len = loaded.config.positions_after(virtual_tokens)?;
    let (dataset, _) = token_cache::load_tokenized(
        &args.data,
        loaded.vocabulary(),
        max_len,
        args.overlong,
        None,
        TokenCache::default_location().as_ref(),
    )?;
    let model = Adapted::new(loaded.model.clone(), adapter);
    let report = eval::evaluate(&model, &dataset.examples, loaded.pad_id(), args.batch_size)?;
    // A NaN score is no score: say which line, rather than report a NaN mean as a result.
    if let Some((example, score)) = dataset
        .examples
        .iter()
        .zip(&report.examples)
        .find(|(_, score)| !score.loss.is_finite())
    {
        bail!(
            "{}:{}: the loss is {}; the model or adapter gives non-finite scores (no report \
             written)",
            args.data.display(),
            example.line,
            score.loss
        );
    }
    eval::write_report(&report, &args.output).context("writing the report")?;
    println!(
        "{} examples: mean loss {:.4}, perplexity {:.3} -> {}",
        report.examples.len(),
        report.mean_loss,
        report.perplexity,
        args.output.display()
    );
    Ok(())
}

/// Refuses an output path that names an input file (`eval --output data.jsonl` would replace
/// the dataset with its scores).
fn refuse_to_overwrite(output: &Path, input_flag: &str, input: &Path) -> Result<()> {
    let same = match (output.canonicalize(), input.canonicalize()) {
        (Ok(output), Ok(input)) => output == input,
        _ => false,
    };
    if same {
        bail!(
            "--output {} is the {input_flag} file: writing the report would destroy it; choose \
             another --output",
            output.display()
        );
    }
    Ok(())
}

fn generate_command(args: &GenerateArgs) -> Result<()> {
    let loaded = LoadedModel::load(&args.model, &args.device, false)?;
    let adapter = loaded.load_optional_adapter(args.adapter.as_deref())?;
    let conditioning = Conditioning::of(adapter.as_ref());
    let sampling = Sampling::from_temperature(args.temperature, args.top_k, args.top_p);
    let tokenizer = loaded.tokenizer()?;
    let eos = tokenizer.eos_id();
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        eos_id: Some(eos),
        pad_id: eos,
        use_cache: true,
    };
    let prompts = args
        .prompt
        .iter()
        .map(|p| tokenizer.encode(p))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = generate(&loaded.model, &prompts, &conditioning, &config)?;
    for (prompt, output) in args.prompt.iter().zip(outputs) {
        let text = tokenizer.decode(&output)?;
        println!(
            "{prompt}{}",
            text.trim_end_matches(peft_gpt2::tokenizer::END_OF_TEXT)
        );
    }
    Ok(())
}

fn info_command(args: &InfoArgs) -> Result<()> {
    let loaded = LoadedModel::load(
        &args.model,
        &DeviceArg::on(peft_runtime::ComputeBackend::Flex),
        false,
    )?;
    let params = loaded.model.num_params();
    println!("model {} ({})", args.model, loaded.dir.display());
    println!("  {}", loaded.config.describe());
    println!("  {params} parameters");
    match &loaded.tokenizer {
        Some(tokenizer) => println!("  tokenizer of {} tokens", tokenizer.vocab_size()),
        None => println!("  no tokenizer (data must be given as `input_ids`)"),
    }
    if let Some(dir) = &args.adapter {
        let adapter = loaded.load_adapter(dir)?;
        let base = adapter.config.base();
        println!("adapter {} ({})", dir.display(), adapter.config.peft_type());
        println!(
            "  {} virtual tokens; PEFT table {:?}",
            base.num_virtual_tokens,
            adapter.peft_table().dims()
        );
        if let (AdapterModule::Prefix(encoder), PeftConfig::PrefixTuning(config)) =
            (&adapter.module, &adapter.config)
        {
            // What loaded, and what the config asked for when the two differ: a
            // reparameterisation whose native file was absent or stale loads as its table.
            let (loaded, saved) = (encoder.reparameterisation(), config.reparameterisation());
            println!("  prefix trains as {loaded}");
            if loaded != saved {
                println!(
                    "  (trained as {saved}, but {} was absent or no longer matches the PEFT \
                     table: the table loaded as saved)",
                    peft_core::adapter::NATIVE_FILE
                );
            }
        }
        println!(
            "  {}",
            ParameterCount::adapter_on(params, adapter.num_trainable_params())
        );
    }
    Ok(())
}
