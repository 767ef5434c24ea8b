//! Adapter directories that are damaged, truncated, hand-edited or not adapters at all: loading
//! them is an error that names the file, never a panic.

use std::path::{Path, PathBuf};

use peft_core::{ModelShape, PeftAdapter};
use peft_runtime::ComputeBackend;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::Value;

/// The tiny fixture model's shape, which the fixture adapters were made for.
const SHAPE: ModelShape = ModelShape {
    d_model: 32,
    n_layer: 2,
    n_head: 4,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/rust-adapters")
        .join(name)
}

/// Copies a fixture adapter into `dir`, with `file` replaced by `bytes`.
fn with_file(dir: &Path, adapter: &str, file: &str, bytes: &[u8]) {
    for entry in std::fs::read_dir(fixture(adapter)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join(file), bytes).unwrap();
}

/// Loads; `Err` is fine, a panic fails the property.
fn load(dir: &Path) -> Result<PeftAdapter, String> {
    let device = ComputeBackend::Flex.device().unwrap();
    PeftAdapter::load(dir, SHAPE, &device).map_err(|err| err.to_string())
}

const ADAPTERS: [&str; 5] = [
    "prompt-random",
    "prompt-text",
    "prefix",
    "prefix-projection",
    "prefix-layer-projection",
];
const FILES: [&str; 3] = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "peft_rs_adapter.safetensors",
];

/// Byte-level damage: flips, cuts and insertions at random places.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] ^= value.max(1),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, value),
            _ => bytes[at] = value,
        }
    }
    bytes
}

/// Values a hand-edited config might hold in any field.
fn odd_values() -> Vec<Value> {
    vec![
        Value::from(0),
        Value::from(-1),
        Value::from(u64::MAX),
        Value::from(1u64 << 40),
        Value::from(1e300),
        Value::from(3),
        Value::from("PREFIX_TUNING"),
        Value::from("x"),
        Value::Null,
        Value::from(true),
        serde_json::json!([]),
        serde_json::json!({}),
    ]
}

proptest! {
    // A fixed seed, so that CI runs the same cases every time; change it to explore others.
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: RngSeed::Fixed(11),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_files_are_errors(
        adapter in 0..ADAPTERS.len(),
        file in 0..FILES.len(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let original = std::fs::read(fixture(ADAPTERS[adapter]).join(FILES[file])).unwrap_or_default();
        with_file(dir.path(), ADAPTERS[adapter], FILES[file], &mutate(original, &edits));
        let _ = load(dir.path());
    }

    #[test]
    fn random_bytes_are_errors(
        adapter in 0..ADAPTERS.len(),
        file in 0..FILES.len(),
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = tempfile::tempdir().unwrap();
        with_file(dir.path(), ADAPTERS[adapter], FILES[file], &bytes);
        let _ = load(dir.path());
    }
}

/// Every field of every fixture adapter's config set to each odd value in turn: the adapter
/// loads, or it is an error.
#[test]
fn hand_edited_configs_are_errors_or_load() {
    for adapter in ADAPTERS {
        let path = fixture(adapter).join("adapter_config.json");
        let config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for key in config.as_object().unwrap().keys() {
            for value in odd_values() {
                let dir = tempfile::tempdir().unwrap();
                let mut edited = config.clone();
                edited[key.as_str()] = value.clone();
                with_file(
                    dir.path(),
                    adapter,
                    "adapter_config.json",
                    edited.to_string().as_bytes(),
                );
                let _ = load(dir.path());
            }
        }
    }
}

#[test]
fn a_projection_width_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("prefix-projection").join("adapter_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    config["encoder_hidden_size"] = 0.into();
    with_file(
        dir.path(),
        "prefix-projection",
        "adapter_config.json",
        config.to_string().as_bytes(),
    );
    let message = load(dir.path()).unwrap_err();
    assert!(message.contains("encoder_hidden_size"), "{message}");
}
