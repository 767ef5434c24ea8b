//! `peft-bench` runs every mode end to end on the tiny fixture config and reports what it
//! measured in the agreed JSON schema (the numbers themselves belong in BENCHMARKS.md, not
//! in tests).

use std::process::Command;

use serde_json::Value;

/// A model-level benchmark (`train`, `infer`, `mixed`) on the tiny model's shape.
fn bench(args: &[&str]) -> Value {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-gpt2");
    let mut args = args.to_vec();
    args.extend([
        "--model",
        model,
        "--batch",
        "2",
        "--seq",
        "6",
        "--virtual-tokens",
        "3",
    ]);
    run(&args)
}

/// `peft-bench ARGS`'s JSON line; fails the test if it does not succeed.
fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_peft-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peft-bench {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn positive(record: &Value, field: &str) -> f64 {
    let value = record[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {record}"));
    assert!(
        value.is_finite() && value > 0.0,
        "{field} = {value} in {record}"
    );
    value
}

#[test]
fn training_modes_report_steps_parameters_and_memory() {
    // tiny-gpt2: d_model 32, 2 layers; PEFT's counts for 3 virtual tokens.
    for (method, trainable) in [("prompt", 3 * 32), ("prefix-direct", 3 * 2 * 2 * 32)] {
        let record = bench(&["train", "--method", method, "--steps", "2", "--warmup", "1"]);
        assert_eq!(record["implementation"], "peft-rs");
        assert_eq!(record["mode"], "train");
        assert_eq!(record["method"], method);
        assert_eq!(record["trainable_params"], trainable, "{record}");
        assert_eq!(record["timed_steps"], 2);
        positive(&record, "tokens_per_s");
        positive(&record, "peak_rss_mib");
        assert!(positive(&record, "step_ms_min") <= positive(&record, "step_ms_max"));
    }
    let full = bench(&["train", "--method", "full", "--steps", "1", "--warmup", "0"]);
    assert_eq!(full["virtual_tokens"], 0);
    assert!(
        full["trainable_params"].as_u64().unwrap() > 10_000,
        "{full}"
    );
}

/// `--time-phases` times the very step the plain run takes: the same losses, and phases that fit
/// in the step.
#[test]
fn timing_the_phases_trains_as_the_plain_step_does() {
    for method in ["prompt", "full"] {
        let args = ["train", "--method", method, "--steps", "2", "--warmup", "1"];
        let plain = bench(&args);
        let phased = bench(&[args.as_slice(), &["--time-phases"]].concat());
        for loss in ["first_loss", "last_loss"] {
            assert_eq!(plain[loss], phased[loss], "{method}: {loss}");
        }
        assert!(plain.get("forward_ms_median").is_none(), "{plain}");
        let phases: f64 = [
            "forward_ms_median",
            "backward_ms_median",
            "optimizer_ms_median",
        ]
        .iter()
        .map(|field| positive(&phased, field))
        .sum();
        assert!(
            phases <= positive(&phased, "step_ms_max"),
            "{method}: phases of {phases} ms in a step: {phased}"
        );
    }
}

#[test]
fn generation_modes_report_prefill_decode_and_mixed_rates() {
    let record = bench(&[
        "infer",
        "--method",
        "prefix",
        "--new-tokens",
        "3",
        "--repeats",
        "1",
    ]);
    positive(&record, "prefill_tokens_per_s");
    positive(&record, "tokens_per_s");
    assert_eq!(record["new_tokens"], 3);
    let record = bench(&["mixed", "--new-tokens", "3", "--repeats", "1"]);
    assert_eq!(record["mode"], "mixed");
    positive(&record, "tokens_per_s");
    positive(&record, "single_adapter_tokens_per_s");
    positive(&record, "one_at_a_time_tokens_per_s");
}

#[test]
fn the_attention_mode_times_the_operation_under_each_masking() {
    for masking in ["causal", "padded", "bias"] {
        let record = run(&[
            "attention",
            "--batch",
            "2",
            "--heads",
            "2",
            "--seq",
            "6",
            "--prefix",
            "3",
            "--head-dim",
            "4",
            "--dropout",
            "0.1",
            "--calls",
            "2",
            "--warmup",
            "0",
            "--masking",
            masking,
            "--dtype",
            "bf16",
        ]);
        assert_eq!(record["mode"], "attention");
        // Read from the operands: the kernels ran in the type asked for.
        assert_eq!(record["dtype"], "bf16", "{record}");
        assert_eq!(record["masking"], masking);
        assert_eq!(record["queries"], 6, "{record}");
        assert_eq!(record["keys"], 9, "{record}");
        assert_eq!(record["timed_calls"], 2);
        positive(&record, "forward_ms_median");
        positive(&record, "training_ms_median");
    }
}

#[test]
fn the_loss_mode_gives_the_same_loss_with_either_cross_entropy() {
    let loss = |cross_entropy: &str| {
        let record = run(&[
            "loss",
            "--rows",
            "5",
            "--width",
            "8",
            "--vocab",
            "300",
            "--train-head",
            "--calls",
            "2",
            "--warmup",
            "0",
            "--cross-entropy",
            cross_entropy,
        ]);
        assert_eq!(record["mode"], "loss");
        assert_eq!(record["cross_entropy"], cross_entropy);
        assert_eq!(record["rows"], 5, "{record}");
        positive(&record, "training_ms_median");
        record["loss"].as_f64().expect("a finite loss")
    };
    let (fused, decomposed) = (loss("fused"), loss("decomposed"));
    // The same seed gives the same operands; the two differ by rounding only.
    assert!(
        (fused - decomposed).abs() <= 1e-5 * decomposed.abs(),
        "fused {fused}, decomposed {decomposed}"
    );
}

/// `--chunk-rows` changes how many rows of logits are computed at once, not the loss.
#[test]
fn the_loss_mode_gives_the_same_loss_in_any_chunks() {
    let loss = |chunk_rows: Option<&str>| {
        let mut args = vec!["loss", "--rows", "5", "--width", "8", "--vocab", "300"];
        args.extend(["--train-head", "--calls", "1", "--warmup", "0"]);
        if let Some(rows) = chunk_rows {
            args.extend(["--chunk-rows", rows]);
        }
        let record = run(&args);
        let used = record["chunk_rows"].as_u64().expect("chunk_rows reported");
        if let Some(rows) = chunk_rows {
            assert_eq!(used.to_string(), rows, "{record}");
        }
        record["loss"].as_f64().expect("a finite loss")
    };
    let whole = loss(None);
    for rows in ["1", "2"] {
        let chunked = loss(Some(rows));
        assert!(
            (chunked - whole).abs() <= 1e-5 * whole.abs(),
            "chunks of {rows}: {chunked}, the device's chunks: {whole}"
        );
    }
}

/// Counts of zero (a batch of no rows, no tokens, no timed steps) are usage errors naming the
/// flag, not a panic in the middle of a benchmark.
#[test]
fn zero_sizes_are_usage_errors() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-gpt2");
    for (mode, flag) in [
        ("train", "--seq"),
        ("train", "--batch"),
        ("train", "--steps"),
        ("mixed", "--batch"),
        ("infer", "--new-tokens"),
        ("attention", "--seq"),
        ("attention", "--heads"),
        ("loss", "--rows"),
        ("loss", "--vocab"),
    ] {
        let model_flag: &[&str] = match mode {
            "attention" | "loss" => &[],
            _ => &["--model", model],
        };
        let out = Command::new(env!("CARGO_BIN_EXE_peft-bench"))
            .arg(mode)
            .args(model_flag)
            .args([flag, "0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode} {flag} 0: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}
