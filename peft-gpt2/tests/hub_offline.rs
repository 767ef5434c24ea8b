//! Hub ids resolve through the local Hugging Face cache without network, and a model that is
//! not cached is a clear error when offline. One test in its own binary: it sets environment
//! variables, which must not race with other tests.

mod common;

use common::fixtures;
use peft_gpt2::{Error, ModelFiles, load_pretrained};
use peft_runtime::ComputeBackend;

#[test]
fn hub_ids_resolve_from_the_cache_and_fail_clearly_offline() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: this is the only test in this binary, so no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::remove_var("HF_HUB_CACHE");
    }

    let err = ModelFiles::resolve("some-org/not-cached").unwrap_err();
    assert!(matches!(err, Error::Hub { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");

    // Lay out the cache as `huggingface_hub` does: refs/main names a snapshot directory.
    let repo = home.path().join("hub/models--some-org--tiny-gpt2");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("tiny-gpt2").join(file), snapshot.join(file)).unwrap();
    }
    let device = ComputeBackend::Flex.device().unwrap();
    let (_, config, files) = load_pretrained("some-org/tiny-gpt2", &device).unwrap();
    assert_eq!(config.n_layer, 2);
    assert_eq!(files.dir, snapshot);
    assert!(files.has_tokenizer());

    let err = ModelFiles::resolve("./no/such/dir").unwrap_err();
    assert!(matches!(err, Error::ModelNotFound(_)), "{err}");
}
