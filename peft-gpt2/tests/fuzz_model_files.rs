//! `config.json` files that are damaged, hand-edited or not configs at all: reading them, and
//! loading a model with them, is an error that names the file, never a panic (nor an attempt to
//! allocate a model no checkpoint could fill).

use std::path::{Path, PathBuf};

use peft_gpt2::{Gpt2Config, load_pretrained};
use peft_runtime::ComputeBackend;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-gpt2")
}

/// The tiny model in `dir`, with `config.json` replaced by `config`.
fn model_with_config(dir: &Path, config: &[u8]) {
    std::fs::copy(
        fixture().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
}

/// Values a hand-edited config might hold in any field.
fn odd_values() -> Vec<Value> {
    vec![
        Value::from(0),
        Value::from(-1),
        Value::from(1),
        Value::from(3),
        Value::from(64),
        Value::from(1u64 << 40),
        Value::from(u64::MAX),
        Value::from(1e300),
        Value::from(-1e-5),
        Value::from(1.5),
        Value::from("relu"),
        Value::Null,
        serde_json::json!([]),
    ]
}

proptest! {
    // A fixed seed, so that CI runs the same cases every time; change it to explore others.
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: RngSeed::Fixed(11),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_configs_are_errors(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read(fixture().join("config.json")).unwrap();
        for (at, value) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at % bytes.len();
            if value % 3 == 0 {
                bytes.truncate(at);
            } else {
                bytes[at] = value;
            }
        }
        std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
        let _ = Gpt2Config::from_file(&dir.path().join("config.json"));
    }

    #[test]
    fn random_bytes_are_errors(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
        prop_assert!(Gpt2Config::from_file(&dir.path().join("config.json")).is_err());
    }
}

/// Every field of the config set to each odd value in turn, then the whole model loaded: it
/// fits, or it is an error naming what does not.
#[test]
fn hand_edited_configs_load_or_fail_cleanly() {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    let device = ComputeBackend::Flex.device().unwrap();
    for key in config.as_object().unwrap().keys() {
        for value in odd_values() {
            let dir = tempfile::tempdir().unwrap();
            let mut edited = config.clone();
            edited[key.as_str()] = value.clone();
            model_with_config(dir.path(), edited.to_string().as_bytes());
            let _ = load_pretrained(dir.path().to_str().unwrap(), &device);
        }
    }
}

#[test]
fn a_config_far_beyond_any_gpt2_is_refused_before_building_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    config["n_layer"] = (1u64 << 40).into();
    model_with_config(dir.path(), config.to_string().as_bytes());
    let device = ComputeBackend::Flex.device().unwrap();
    let message = load_pretrained(dir.path().to_str().unwrap(), &device)
        .expect_err("refused")
        .to_string();
    assert!(message.contains("n_layer"), "{message}");
}
