//! A hub id of either family loads from the local Hugging Face cache without network — a
//! sharded Llama-family snapshot included — and `config.json` picks the family. One test in its
//! own binary: it sets environment variables, which must not race with other tests.

use std::path::PathBuf;

use peft_runtime::{ComputeBackend, DeviceArg, LoadedModel, ModelConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn cached_hub_ids_of_both_families_load_offline() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: this is the only test in this binary, so no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::remove_var("HF_HUB_CACHE");
    }
    // Lay out the cache as `huggingface_hub` does: refs/main names a snapshot directory.
    for (repo, fixture) in [("tiny-gpt2", "tiny-gpt2"), ("tiny-qwen2", "tiny-qwen2")] {
        let root = home.path().join(format!("hub/models--some-org--{repo}"));
        let snapshot = root.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), "0123abcd").unwrap();
        for file in std::fs::read_dir(fixtures().join(fixture)).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), snapshot.join(file.file_name())).unwrap();
        }
    }
    let device = &DeviceArg::on(ComputeBackend::Flex);
    let gpt2 = LoadedModel::load("some-org/tiny-gpt2", device, false).unwrap();
    assert!(matches!(gpt2.config, ModelConfig::Gpt2(_)));
    let qwen2 = LoadedModel::load("some-org/tiny-qwen2", device, false).unwrap();
    assert!(matches!(&qwen2.config, ModelConfig::Llama(c) if c.num_key_value_heads == 2));
    assert!(qwen2.tokenizer.is_some());

    let Err(missing) = LoadedModel::load("some-org/not-cached", device, false) else {
        panic!("a model that is not cached loaded offline");
    };
    let message = format!("{missing:#}");
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
}
