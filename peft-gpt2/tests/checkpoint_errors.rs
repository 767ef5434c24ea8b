//! A checkpoint that does not fit is a clear error naming the file and the tensors, never a
//! panic or a silently half-loaded model.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::fixtures;
use peft_gpt2::{Error, load_pretrained};
use peft_runtime::ComputeBackend;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

/// A copy of the `tiny-gpt2` fixture in a temporary directory, to damage.
fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(
            fixtures().join("tiny-gpt2").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> Error {
    let device = ComputeBackend::Flex.device().unwrap();
    match load_pretrained(dir.to_str().unwrap(), &device) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(err) => err,
    }
}

/// Rewrites `model.safetensors` with `edit` applied to its name → (shape, f32 values) map.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn truncated_file_names_the_file() {
    let dir = copy_fixture();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn config_of_another_shape_names_mismatched_tensors() {
    let dir = copy_fixture();
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["n_embd"] = 64.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let message = load_error(dir.path()).to_string();
    assert!(
        message.contains("`wte.weight` has shape [320, 32], the config needs [320, 64]"),
        "{message}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_fixture();
    rewrite_weights(dir.path(), |tensors| {
        tensors
            .remove("h.1.mlp.c_fc.bias")
            .expect("fixture has this tensor");
    });
    let message = load_error(dir.path()).to_string();
    assert!(
        message.contains("missing tensors: `h.1.mlp.c_fc.bias`"),
        "{message}"
    );
}

#[test]
fn tensors_of_a_deeper_model_are_named() {
    let dir = copy_fixture();
    rewrite_weights(dir.path(), |tensors| {
        let extra = tensors["h.1.ln_1.weight"].clone();
        tensors.insert("h.2.ln_1.weight".into(), extra);
    });
    let message = load_error(dir.path()).to_string();
    assert!(message.contains("unexpected tensors"), "{message}");
    assert!(message.contains("h.2.ln_1"), "{message}");
}

#[test]
fn directory_without_weights_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny-gpt2/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let message = load_error(dir.path()).to_string();
    assert!(
        message.contains("no model.safetensors or pytorch_model.bin"),
        "{message}"
    );
}

#[test]
fn malformed_config_names_the_file() {
    let dir = copy_fixture();
    std::fs::write(dir.path().join("config.json"), "{\"n_embd\": 32,").unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn saved_checkpoint_loads_back_with_identical_logits() {
    let device = ComputeBackend::Flex.device().unwrap();
    let (model, config, _) =
        load_pretrained(fixtures().join("tiny-gpt2").to_str().unwrap(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    peft_gpt2::save_pretrained(&model, &config, dir.path()).unwrap();
    let (reloaded, reloaded_config, _) =
        load_pretrained(dir.path().to_str().unwrap(), &device).unwrap();
    assert_eq!(reloaded_config, config);
    let ids = burn::prelude::Tensor::<2, burn::prelude::Int>::from_data([[1, 2, 3, 4]], &device);
    let before = model.forward_ids(ids.clone(), None).into_data();
    let after = reloaded.forward_ids(ids, None).into_data();
    assert_eq!(before.as_bytes(), after.as_bytes());
}
