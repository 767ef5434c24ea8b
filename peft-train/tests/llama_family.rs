//! The CLI on Llama-family models, named by `--model` alone: `info`, prompt and prefix tuning,
//! full fine-tuning, `eval` and `generate` on the tiny Llama, Qwen2 (sharded) and Qwen3
//! checkpoints.

mod common;

use common::{data, fixtures, ok, path_str, run};

fn family(name: &str) -> String {
    path_str(&fixtures().join(name))
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The mean loss an `eval` report holds.
fn mean_loss(report: &std::path::Path) -> f64 {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    json["mean_loss"].as_f64().unwrap()
}

#[test]
fn info_names_the_family_and_its_key_value_heads() {
    let info = ok(&["info", "--model", &family("tiny-qwen3")]);
    assert!(info.contains("Qwen3"), "{info}");
    assert!(info.contains("2 key/value heads of 16"), "{info}");
    let prefix = path_str(&fixtures().join("adapters/tiny-qwen3-prefix"));
    let info = ok(&[
        "info",
        "--model",
        &family("tiny-qwen3"),
        "--adapter",
        &prefix,
    ]);
    // PEFT's table for 4 virtual tokens: 2 layers × keys and values × 2 heads × 16.
    assert!(info.contains("PEFT table [4, 128]"), "{info}");
}

#[test]
fn adapters_train_evaluate_and_generate_on_each_family() {
    let dir = tempfile::tempdir().unwrap();
    for (model, method) in [
        ("tiny-llama", "prefix"),
        ("tiny-qwen2", "prompt"),
        ("tiny-qwen3", "prefix"),
    ] {
        let out = dir.path().join(model);
        let mut args: Vec<String> = [
            "train",
            "--model",
            &family(model),
            "--method",
            method,
            "--num-virtual-tokens",
            "4",
            "--data",
            &data("text.jsonl"),
            "--output-dir",
            &path_str(&out),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--lr",
            "0.05",
        ]
        .map(String::from)
        .into();
        if method == "prefix" {
            args.extend(["--prefix-projection".into(), "16".into()]);
        }
        ok(&strs(&args));
        let adapter = path_str(&out.join("adapter"));
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
                .unwrap();
        let first = metrics[0]["train_loss"].as_f64().unwrap();
        let last = metrics[1]["train_loss"].as_f64().unwrap();
        assert!(last < first, "{model} {method}: loss {first} -> {last}");

        // The trained adapter scores the data better than the frozen base.
        let (base_report, tuned_report) = (out.join("base.json"), out.join("tuned.json"));
        for (report, adapter) in [(&base_report, None), (&tuned_report, Some(&adapter))] {
            let mut args = vec![
                "eval".to_string(),
                "--model".into(),
                family(model),
                "--data".into(),
                data("text.jsonl"),
                "--output".into(),
                path_str(report),
            ];
            if let Some(adapter) = adapter {
                args.extend(["--adapter".into(), adapter.clone()]);
            }
            ok(&strs(&args));
        }
        assert!(
            mean_loss(&tuned_report) < mean_loss(&base_report),
            "{model} {method}: tuned {} vs base {}",
            mean_loss(&tuned_report),
            mean_loss(&base_report)
        );
        let text = ok(&[
            "generate",
            "--model",
            &family(model),
            "--adapter",
            &adapter,
            "--prompt",
            "The Mill is",
            "--max-new-tokens",
            "5",
        ]);
        assert!(text.contains("The Mill is"), "{text}");
    }
}

#[test]
fn a_fully_fine_tuned_llama_saves_a_checkpoint_that_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("full");
    ok(&[
        "train",
        "--model",
        &family("tiny-llama"),
        "--method",
        "full",
        "--data",
        &data("text.jsonl"),
        "--output-dir",
        &path_str(&out),
        "--epochs",
        "1",
        "--lr",
        "0.001",
    ]);
    let saved = path_str(&out.join("model"));
    let info = ok(&["info", "--model", &saved]);
    assert!(info.contains("Llama: 2 layers"), "{info}");
    let report = dir.path().join("r.json");
    ok(&[
        "eval",
        "--model",
        &saved,
        "--data",
        &data("text.jsonl"),
        "--output",
        &path_str(&report),
    ]);
    assert!(mean_loss(&report).is_finite());
}

#[test]
fn an_adapter_for_another_family_is_refused() {
    let gpt2_prefix = path_str(&fixtures().join("adapters/prefix"));
    let out = run(&[
        "generate",
        "--model",
        &family("tiny-llama"),
        "--adapter",
        &gpt2_prefix,
        "--prompt",
        "The Mill",
    ]);
    let log = common::log_of(&out);
    assert!(!out.status.success());
    assert!(
        log.contains("use the base model it was trained on"),
        "{log}"
    );
}
