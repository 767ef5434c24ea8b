//! Dataset files that are damaged, hand-edited or not JSON Lines at all: reading them is an
//! error naming the file (and line), never a panic.

use std::path::{Path, PathBuf};

use peft_gpt2::Gpt2Tokenizer;
use peft_train::data::token_cache::load_tokenized;
use peft_train::data::{Overlong, Vocabulary};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn tokenizer() -> Gpt2Tokenizer {
    let dir = fixtures().join("tiny-gpt2");
    Gpt2Tokenizer::from_dir(&dir)
        .unwrap()
        .for_model(320, &dir)
        .unwrap()
}

/// Reads `bytes` as a dataset with and without a tokenizer, as train and eval do; errors must
/// name the file.
fn read(dir: &Path, bytes: &[u8], tokenizer: &Gpt2Tokenizer) {
    let path = dir.join("data.jsonl");
    std::fs::write(&path, bytes).unwrap();
    for tokenizer in [Some(tokenizer), None] {
        let vocabulary = Vocabulary {
            tokenizer,
            size: 320,
        };
        for overlong in [Overlong::Reject, Overlong::Truncate] {
            if let Err(err) = load_tokenized(&path, vocabulary, 60, overlong, None, None) {
                let message = format!("{err:#}");
                assert!(message.contains("data.jsonl"), "{message}");
            }
        }
    }
}

/// All fixture datasets' lines, one file.
fn fixture_lines() -> Vec<u8> {
    [
        "text.jsonl",
        "completion.jsonl",
        "classify.jsonl",
        "ids.jsonl",
    ]
    .iter()
    .flat_map(|f| std::fs::read(fixtures().join("data").join(f)).unwrap())
    .collect()
}

proptest! {
    // A fixed seed, so that CI runs the same cases every time; change it to explore others.
    #![proptest_config(ProptestConfig {
        cases: 128,
        rng_seed: RngSeed::Fixed(11),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_datasets_are_errors(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0..4u8), 1..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = fixture_lines();
        for (at, value, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at % bytes.len();
            match kind {
                0 => bytes.truncate(at),
                1 => bytes.insert(at, value),
                // Structural characters, where damage changes what a line means.
                2 => bytes[at] = b"{}[]\",:0-e\n"[value as usize % 11],
                _ => bytes[at] = value,
            }
        }
        read(dir.path(), &bytes, &tokenizer());
    }

    #[test]
    fn random_bytes_are_errors(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        read(dir.path(), &bytes, &tokenizer());
    }

    #[test]
    fn odd_lines_are_errors(line in prop_oneof![
        Just(r#"{"input_ids": [1e300]}"#.to_string()),
        Just(r#"{"input_ids": [-1, 2]}"#.to_string()),
        Just(r#"{"input_ids": [4294967296]}"#.to_string()),
        Just(r#"{"input_ids": [319, 320]}"#.to_string()),
        Just(r#"{"text": ""}"#.to_string()),
        Just(r#"{"text": "x", "label": ""}"#.to_string()),
        Just(r#"{"text": "x", "label": null}"#.to_string()),
        Just(r#"{"prompt": "", "completion": ""}"#.to_string()),
        Just("[]".to_string()),
        Just("null".to_string()),
        "\\PC{0,80}",
    ]) {
        let dir = tempfile::tempdir().unwrap();
        read(dir.path(), format!("{{\"text\": \"fine\"}}\n{line}\n").as_bytes(), &tokenizer());
    }
}
