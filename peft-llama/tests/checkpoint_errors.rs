//! Broken Llama-family model directories give errors that name the file and what is wrong.

#[path = "../../peft-gpt2/tests/common/mod.rs"]
mod common;

use common::{devices, fixtures};
use peft_llama::load_pretrained;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn error_of(dir: &std::path::Path) -> String {
    let device = &devices()[0].1;
    match load_pretrained(dir, device) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-qwen2"), tmp.path());
    std::fs::remove_file(tmp.path().join("model-00003-of-00005.safetensors")).unwrap();
    let message = error_of(tmp.path());
    assert!(
        message.contains("model-00003-of-00005.safetensors"),
        "{message}"
    );
}

#[test]
fn a_checkpoint_of_another_shape_names_the_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-qwen3"), tmp.path());
    // Qwen3's weights under Llama's config: no q/k norms expected, different head_dim.
    std::fs::copy(
        fixtures().join("tiny-llama/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let message = error_of(tmp.path());
    assert!(
        message.contains("does not fit the model config"),
        "{message}"
    );
    assert!(
        message.contains("q_norm") || message.contains("shape"),
        "{message}"
    );
}

#[test]
fn a_gpt2_directory_is_not_taken_for_a_llama() {
    let message = error_of(&fixtures().join("tiny-gpt2"));
    assert!(message.contains("config.json"), "{message}");
}

#[test]
fn a_directory_without_weights_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny-llama/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let message = error_of(tmp.path());
    assert!(message.contains("model.safetensors"), "{message}");
}
