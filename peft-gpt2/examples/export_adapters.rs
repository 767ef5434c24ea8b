//! Saves one adapter of each kind, made here, for Python's `peft` to load — the other half of
//! the file-compatibility check. Run by `cargo xtask peft-check`, which then has
//! `scripts/reference/make_fixtures.py --check-rust-adapters` load each with
//! `PeftModel.from_pretrained` and compare its losses with the ones recorded here.
//!
//! Writes `fixtures/rust-adapters/<kind>/` (the PEFT files plus `rust_losses.json`).

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::*;
use peft_core::{
    AdapterModule, PeftAdapter, PeftConfig, PrefixReparameterisation, PromptEncoder, PromptInit,
    PromptLearningConfig, PromptTuningConfig, PromptTuningInit,
};
use peft_gpt2::loss::mean_loss;
use peft_gpt2::{AdaptedGpt2, Gpt2Tokenizer, load_pretrained};
use peft_runtime::ComputeBackend;

/// The texts `make_fixtures.py` scores (its `BATCH`).
const TEXTS: [&str; 3] = [
    "Alimentum serves cheap Indian food.",
    "The Mill is a family friendly pub in the city centre near Cafe Sicilia.",
    "Zizzi is rated 5 out of 5.",
];
const INIT_TEXT: &str = "Describe the restaurant:";
/// The base model, relative to the repository root (written into the adapter configs).
const BASE_MODEL: &str = "fixtures/tiny-gpt2";

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let device = ComputeBackend::Flex.device()?;
    device.seed(2026);
    let (gpt2, config, files) = load_pretrained(root.join(BASE_MODEL).to_str().unwrap(), &device)?;
    let tokenizer = Gpt2Tokenizer::from_dir(&files.dir)?;
    let shape = config.shape();

    let init_ids: Vec<i64> = tokenizer
        .encode(INIT_TEXT)?
        .into_iter()
        .map(i64::from)
        .collect();
    let init_ids =
        Tensor::<1, Int>::from_data(TensorData::new(init_ids.clone(), [init_ids.len()]), &device);
    let text_embeddings = gpt2.wte.weight.val().select(0, init_ids);

    let prompt_config = |init: PromptTuningInit, p: usize| {
        PeftConfig::PromptTuning(PromptTuningConfig {
            base: PromptLearningConfig::new(p, shape).for_base_model(BASE_MODEL),
            prompt_tuning_init: init,
            prompt_tuning_init_text: (init == PromptTuningInit::Text)
                .then(|| INIT_TEXT.to_string()),
            // PEFT insists on a tokenizer for TEXT init, even when it only loads the result.
            tokenizer_name_or_path: (init == PromptTuningInit::Text)
                .then(|| BASE_MODEL.to_string()),
        })
    };
    let prefix = |reparameterisation| {
        let base = PromptLearningConfig::new(4, shape).for_base_model(BASE_MODEL);
        PeftAdapter::prefix_tuning(base, reparameterisation, &device)
    };
    let adapters = [
        (
            "prompt-random",
            PeftAdapter {
                module: AdapterModule::Prompt(PromptEncoder::new(
                    6,
                    shape.d_model,
                    PromptInit::Random { std: 0.5 },
                    0.0,
                    &device,
                )),
                config: prompt_config(PromptTuningInit::Random, 6),
            },
        ),
        (
            "prompt-text",
            PeftAdapter {
                module: AdapterModule::Prompt(PromptEncoder::new(
                    8,
                    shape.d_model,
                    PromptInit::Text { text_embeddings },
                    0.0,
                    &device,
                )),
                config: prompt_config(PromptTuningInit::Text, 8),
            },
        ),
        ("prefix", prefix(PrefixReparameterisation::Direct)),
        (
            "prefix-projection",
            prefix(PrefixReparameterisation::Mlp { hidden: 24 }),
        ),
        // peft-rs's own encoder at half the model's width (so with its `up` layer): PEFT must
        // load the table it saves as a plain prefix. Last, so that the adapters above draw the
        // same random numbers as before it was added.
        (
            "prefix-layer-projection",
            prefix(PrefixReparameterisation::PerLayer {
                width: shape.d_model / 2,
            }),
        ),
    ];

    for (name, adapter) in adapters {
        let dir = root.join("fixtures/rust-adapters").join(name);
        adapter.save(&dir)?;
        let model = AdaptedGpt2::new(gpt2.clone(), Some(adapter));
        let mut losses = Vec::new();
        for text in TEXTS {
            let ids: Vec<i64> = tokenizer.encode(text)?.into_iter().map(i64::from).collect();
            let ids =
                Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &device)
                    .reshape([1, ids.len()]);
            let (logits, labels) = model.forward(ids.clone(), None, ids);
            losses.push(f64::from(mean_loss(logits, labels).into_scalar::<f32>()));
        }
        let record = serde_json::json!({ "texts": TEXTS, "losses": losses });
        std::fs::write(
            dir.join("rust_losses.json"),
            serde_json::to_string_pretty(&record)?,
        )?;
        println!(
            "{name}: {} trainable, losses {losses:?}",
            model.parameter_count().trainable
        );
    }
    Ok(())
}
