//! What the command-line tests share: the fixtures, and the binary run offline with its token
//! cache where the test says.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The tiny fixture GPT-2.
pub fn model() -> String {
    path_str(&fixtures().join("tiny-gpt2"))
}

/// A fixture dataset.
pub fn data(name: &str) -> String {
    path_str(&fixtures().join("data").join(name))
}

/// Runs `peft-train` with its token cache in `cache`, never reaching for the network.
pub fn run_caching_in(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peft-train"))
        .args(args)
        .env("PEFT_RS_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the binary runs")
}

/// Runs `peft-train` with its token cache in this test process's own directory.
pub fn run(args: &[&str]) -> Output {
    static CACHE: std::sync::LazyLock<tempfile::TempDir> =
        std::sync::LazyLock::new(|| tempfile::tempdir().unwrap());
    run_caching_in(args, CACHE.path())
}

/// Runs `peft-train`, which must succeed; returns what it printed.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    let log = log_of(&out);
    assert!(out.status.success(), "peft-train {args:?} failed:\n{log}");
    log
}

/// Standard output and standard error together.
pub fn log_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
