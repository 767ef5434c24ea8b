//! Adapters trained and saved by Python's `peft` load here and give PEFT's numbers, on every
//! compiled-in CPU backend; adapters saved here load back unchanged; parameter counts are
//! PEFT's.

mod common;

use burn::prelude::*;
use common::*;
use peft_core::{
    Adapter, ModelShape, PeftAdapter, PeftConfig, PrefixEncoder, PromptEncoder, PromptInit,
};
use peft_gpt2::loss::{IGNORE_INDEX, mean_loss, per_example_loss};
use peft_gpt2::{AdaptedGpt2, Gpt2, Gpt2Config, load_pretrained};

const TOLERANCE: f32 = 1e-4;
const ADAPTERS: [&str; 4] = ["prompt", "prompt-text", "prefix", "prefix-projection"];

fn base(device: &Device) -> (Gpt2, Gpt2Config) {
    let (model, config, _) =
        load_pretrained(fixtures().join("tiny-gpt2").to_str().unwrap(), device).unwrap();
    (model, config)
}

#[test]
fn peft_adapters_reproduce_peft_losses_and_logits() {
    for (backend, device) in devices() {
        for name in ADAPTERS {
            let dir = fixtures().join("adapters").join(name);
            let reference = Reference::load_path(&dir.join("reference.safetensors"));
            let (gpt2, config) = base(&device);
            let adapter = PeftAdapter::load(&dir, config.shape(), &device).unwrap();
            let model = AdaptedGpt2::new(gpt2, Some(adapter));

            // The padded batch: logits at every real position, the batch loss, each row's loss.
            let ids = reference.int_tensor("batch.ids", &device);
            let mask = reference.mask_tensor("batch.mask", &device);
            let labels = ids.clone().mask_fill(mask.clone().bool_not(), IGNORE_INDEX);
            let (logits, labels) = model.forward(ids, Some(mask), labels);
            let expected = reference.get("batch.logits");
            assert_eq!(logits.dims().to_vec(), expected.shape, "{name}");
            let virtual_len = expected.shape[1] - reference.get("batch.mask").shape[1];
            let keep: Vec<i64> = reference
                .rows("batch.mask")
                .into_iter()
                .flat_map(|row| std::iter::repeat_n(1, virtual_len).chain(row))
                .collect();
            let diff = max_abs_diff(
                &to_vec(logits.clone()),
                &expected.floats,
                Some(&per_logit(&keep, expected.shape[2])),
            );
            println!("{backend} {name}: padded-batch logits max |diff| {diff:.2e}");
            assert!(
                diff <= TOLERANCE,
                "{backend} {name}: logits differ by {diff}"
            );

            let loss = to_vec1(mean_loss(logits.clone(), labels.clone()))[0];
            let expected_loss = reference.get("batch.loss").floats[0];
            assert!(
                (loss - expected_loss).abs() <= TOLERANCE,
                "{backend} {name}: batch loss {loss} vs {expected_loss}"
            );
            let (losses, _) = per_example_loss(logits, labels);
            let diff = max_abs_diff(
                &to_vec1(losses),
                &reference.get("batch.losses").floats,
                None,
            );
            println!("{backend} {name}: per-example loss (padded batch) max |diff| {diff:.2e}");
            assert!(
                diff <= TOLERANCE,
                "{backend} {name}: per-example losses differ by {diff}"
            );

            // Each row alone, unpadded.
            for (row, (ids, mask)) in reference
                .rows("batch.ids")
                .into_iter()
                .zip(reference.rows("batch.mask"))
                .enumerate()
            {
                let real: Vec<i64> = ids
                    .iter()
                    .zip(&mask)
                    .filter(|(_, m)| **m == 1)
                    .map(|(t, _)| *t)
                    .collect();
                let ids = Tensor::<1, Int>::from_data(
                    TensorData::new(real.clone(), [real.len()]),
                    &device,
                )
                .reshape([1, real.len()]);
                let (logits, labels) = model.forward(ids.clone(), None, ids);
                let loss = to_vec1(mean_loss(logits, labels))[0];
                let expected = reference.get("batch.losses").floats[row];
                assert!(
                    (loss - expected).abs() <= TOLERANCE,
                    "{backend} {name} row {row} alone: {loss} vs {expected}"
                );
            }

            // PEFT counted while training; a projected prefix it saved comes back as the
            // projected table alone, so its training-time count is that of a fresh projection.
            let count = model.parameter_count();
            let trainable = match &model.adapter.as_ref().unwrap().config {
                PeftConfig::PrefixTuning(c) if c.prefix_projection => {
                    let fresh = PrefixEncoder::projected(
                        c.base.num_virtual_tokens,
                        c.base.shape(),
                        c.encoder_hidden_size.unwrap(),
                        &device,
                    );
                    burn::module::Module::num_params(&fresh)
                }
                _ => count.trainable,
            };
            assert_eq!(
                trainable.to_string(),
                reference.metadata["trainable_params"],
                "{name}"
            );
            let total = count.total - count.trainable + trainable;
            assert_eq!(
                total.to_string(),
                reference.metadata["all_params"],
                "{name}"
            );
        }
    }
}

#[test]
fn saved_adapters_load_back_identically() {
    let device = peft_runtime::ComputeBackend::Flex.device().unwrap();
    let (gpt2, config) = base(&device);
    let shape = config.shape();
    for name in ADAPTERS {
        let original =
            PeftAdapter::load(&fixtures().join("adapters").join(name), shape, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        original.save(dir.path()).unwrap();
        let reloaded = PeftAdapter::load(dir.path(), shape, &device).unwrap();
        assert_eq!(
            reloaded.peft_table().into_data(),
            original.peft_table().into_data(),
            "{name}"
        );
        // The config round-trips, keys we do not interpret included.
        let mut expected = original.config.clone();
        expected.base_mut().inference_mode = true;
        assert_eq!(reloaded.config, expected, "{name}");
    }
    // A trainable projected prefix keeps its MLP through the native checkpoint...
    let projected = PeftAdapter::prefix_tuning(
        peft_core::PromptLearningConfig::new(3, shape),
        peft_core::PrefixReparameterisation::Mlp { hidden: 16 },
        &device,
    );
    let dir = tempfile::tempdir().unwrap();
    projected.save(dir.path()).unwrap();
    let resumed = PeftAdapter::load(dir.path(), shape, &device).unwrap();
    assert_eq!(
        resumed.num_trainable_params(),
        projected.num_trainable_params()
    );
    assert_eq!(
        resumed.peft_table().into_data(),
        projected.peft_table().into_data()
    );
    // ...and without it, the PEFT table alone still gives the same prefix.
    std::fs::remove_file(dir.path().join(peft_core::adapter::NATIVE_FILE)).unwrap();
    let inference_only = PeftAdapter::load(dir.path(), shape, &device).unwrap();
    assert_eq!(inference_only.num_trainable_params(), 3 * 2 * 2 * 32);
    let diff = max_abs_diff(
        &inference_only
            .peft_table()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap(),
        &projected
            .peft_table()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap(),
        None,
    );
    assert!(diff == 0.0, "projected tables differ by {diff}");
    drop(gpt2);
}

#[test]
fn adapter_for_another_model_is_refused_naming_both_shapes() {
    let device = peft_runtime::ComputeBackend::Flex.device().unwrap();
    let other = ModelShape {
        d_model: 48,
        n_layer: 3,
        n_head: 3,
    };
    let err = PeftAdapter::load(&fixtures().join("adapters/prefix"), other, &device).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("d_model 32, 2 layers, 4 heads"),
        "{message}"
    );
    assert!(
        message.contains("d_model 48, 3 layers, 3 heads"),
        "{message}"
    );
    assert!(message.contains("adapter_config.json"), "{message}");
}

#[test]
fn trainable_parameter_counts_match_peft_for_gpt2_small() {
    // PEFT 0.21 `get_nb_trainable_parameters()` on GPT2LMHeadModel(GPT2Config()), p = 20.
    let device = peft_runtime::ComputeBackend::Flex.device().unwrap();
    let config = Gpt2Config::preset("gpt2").unwrap();
    let shape = config.shape();
    let base = config.num_params();
    let prompt = PromptEncoder::new(20, 768, PromptInit::Random { std: 1.0 }, 0.0, &device);
    let direct = PrefixEncoder::direct(20, shape, &device);
    let projected = PrefixEncoder::projected(20, shape, 768, &device);
    use burn::module::Module;
    let count = |n: usize| peft_core::ParameterCount::adapter_on(base, n);
    assert_eq!(
        count(prompt.num_params()),
        peft_core::ParameterCount {
            trainable: 15_360,
            total: 124_455_168
        }
    );
    assert_eq!(
        count(direct.num_params()),
        peft_core::ParameterCount {
            trainable: 368_640,
            total: 124_808_448
        }
    );
    assert_eq!(
        count(projected.num_params()),
        peft_core::ParameterCount {
            trainable: 14_780_160,
            total: 139_219_968
        }
    );
}

/// The adapters in `fixtures/rust-adapters` were saved by `cargo xtask peft-check`, which also
/// had Python's `peft` load them and agree with these losses (its report, `peft_check.txt`, is
/// committed beside them). Here: they still load and give the losses recorded when saved.
#[test]
fn adapters_checked_by_peft_still_reproduce_their_losses() {
    let device = peft_runtime::ComputeBackend::Flex.device().unwrap();
    let (gpt2, config) = base(&device);
    let tokenizer = peft_gpt2::Gpt2Tokenizer::from_dir(&fixtures().join("tiny-gpt2")).unwrap();
    let root = fixtures().join("rust-adapters");
    let report = std::fs::read_to_string(root.join("peft_check.txt")).unwrap();
    assert!(report.contains("PASS"), "{report}");
    for name in [
        "prompt-random",
        "prompt-text",
        "prefix",
        "prefix-projection",
        "prefix-layer-projection",
    ] {
        let dir = root.join(name);
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("rust_losses.json")).unwrap())
                .unwrap();
        let adapter = PeftAdapter::load(&dir, config.shape(), &device).unwrap();
        let model = AdaptedGpt2::new(gpt2.clone(), Some(adapter));
        for (text, expected) in record["texts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(record["losses"].as_array().unwrap())
        {
            let ids: Vec<i64> = tokenizer
                .encode(text.as_str().unwrap())
                .unwrap()
                .into_iter()
                .map(i64::from)
                .collect();
            let ids =
                Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &device)
                    .reshape([1, ids.len()]);
            let (logits, labels) = model.forward(ids.clone(), None, ids);
            let loss = to_vec1(mean_loss(logits, labels))[0];
            let expected = expected.as_f64().unwrap() as f32;
            assert!(
                (loss - expected).abs() <= 1e-5,
                "{name} {text}: {loss} vs {expected}"
            );
        }
    }
}
