//! What a user can get wrong, through the real binary on the tiny fixture model: every case
//! is a clear error that names the thing and the fix (never a panic), or the right result,
//! and no case loses trained work.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{data, fixtures, log_of, model, ok, path_str, run};

/// Fails with a message (exit 1 for errors, 2 for bad flags), never a panic (101).
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let log = log_of(&out);
    let code = out.status.code();
    assert!(
        matches!(code, Some(1 | 2)),
        "peft-train {args:?} should fail with a message, exited {code:?}:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    log
}

fn train_args(out: &Path, data: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--model",
        &model(),
        "--num-virtual-tokens",
        "4",
        "--data",
        data,
        "--valid-data",
        data,
        "--output-dir",
        &path_str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--lr",
        "0.05",
        "--device",
        "flex",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `extra` overrides a flag already given (clap takes each once) or adds it.
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra.get(i + 1).filter(|v| !v.starts_with("--"));
        match (args.iter().position(|a| a == flag), value) {
            (Some(at), Some(value)) => args[at + 1] = value.to_string(),
            _ => {
                args.push(flag.to_string());
                args.extend(value.map(|v| v.to_string()));
            }
        }
        i += 1 + usize::from(value.is_some());
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path_str(&path)
}

/// A copy of the tiny model whose tokenizer has one token more than the model's 320 rows.
fn model_with_a_larger_tokenizer(dir: &Path) -> String {
    let copy = dir.join("bigger-tokenizer");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-gpt2").join(file), copy.join(file)).unwrap();
    }
    let mut tokenizer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny-gpt2/tokenizer.json")).unwrap(),
    )
    .unwrap();
    tokenizer["added_tokens"].as_array_mut().unwrap().push(
        serde_json::json!({"id": 320, "content": "<extra>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
    );
    std::fs::write(copy.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    path_str(&copy)
}

#[test]
fn a_tokenizer_larger_than_the_model_is_an_error_not_an_index_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_a_larger_tokenizer(dir.path());
    let text = write(
        dir.path(),
        "extra.jsonl",
        "{\"text\": \"The Mill <extra>\"}\n",
    );
    let report = path_str(&dir.path().join("r.json"));
    let message = fails(&[
        "eval", "--model", &model, "--data", &text, "--output", &report,
    ]);
    assert!(
        message.contains("extra.jsonl:1") && message.contains("outside the model's vocabulary"),
        "{message}"
    );
    let message = fails(&["generate", "--model", &model, "--prompt", "Hi <extra>"]);
    assert!(message.contains("`<extra>` (id 320)"), "{message}");
    let mut args = train_args(&dir.path().join("run"), &text, &[]);
    args[2] = model.clone();
    let message = fails(&strs(&args));
    assert!(
        message.contains("outside the model's vocabulary"),
        "{message}"
    );
    // Text without the extra token is fine.
    ok(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "The Mill",
        "--max-new-tokens",
        "2",
    ]);
}

#[test]
fn numeric_flags_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let text = data("text.jsonl");
    for (flag, value) in [
        ("--batch-size", "0"),
        ("--grad-accumulation", "0"),
        ("--epochs", "0"),
        ("--prompt-dropout", "1"),
        ("--prompt-dropout", "1.5"),
        ("--prompt-dropout", "-0.1"),
        ("--prefix-projection", "0"),
        ("--prefix-layer-projection", "0"),
        ("--lr", "NaN"),
        ("--lr", "0"),
        ("--max-steps", "0"),
        ("--adam-epsilon", "-1"),
    ] {
        let message = fails(&strs(&train_args(&out, &text, &[flag, value])));
        assert!(message.contains(flag), "{flag} {value}: {message}");
    }
    assert!(!out.join("adapter").exists());
    let message = fails(&[
        "generate",
        "--model",
        &model(),
        "--prompt",
        "x",
        "--top-p",
        "0",
    ]);
    assert!(message.contains("--top-p"), "{message}");
}

/// The per-layer projection's width is checked against the model before anything trains, and
/// it is one reparameterisation or the other, never both.
#[test]
fn a_per_layer_prefix_wider_than_the_model_or_beside_the_mlp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let text = data("text.jsonl");
    let wide = ["--method", "prefix", "--prefix-layer-projection", "64"];
    let message = fails(&strs(&train_args(&out, &text, &wide)));
    assert!(
        message.contains("--prefix-layer-projection")
            && message.contains("peft_rs_layer_projection 64")
            && message.contains("token_dim 32"),
        "{message}"
    );
    let both = [
        "--method",
        "prefix",
        "--prefix-projection",
        "16",
        "--prefix-layer-projection",
        "16",
    ];
    let message = fails(&strs(&train_args(&out, &text, &both)));
    assert!(
        message.contains("--prefix-projection") && message.contains("--prefix-layer-projection"),
        "{message}"
    );
    assert!(!out.join("adapter").exists());
}

#[test]
fn dataset_lines_with_missing_or_misspelled_keys_name_the_line_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (line, expected) in [
        (
            r#"{"text": "The Mill", "lable": "yes"}"#,
            "unknown key `lable` (did you mean `label`?)",
        ),
        (r#"{"prompt": "x"}"#, "`prompt` without `completion`"),
        (r#"{"completion": "x"}"#, "`completion` without `prompt`"),
        (r#"{"label": "yes"}"#, "`label` without `text`"),
        (
            r#"{"input_ids": [1, 2], "text": "x"}"#,
            "`input_ids` goes alone",
        ),
    ] {
        let file = write(
            dir.path(),
            "bad.jsonl",
            &format!("{{\"text\": \"fine\"}}\n{line}\n"),
        );
        let message = fails(&strs(&train_args(&out, &file, &[])));
        assert!(
            message.contains("bad.jsonl:2") && message.contains(expected),
            "{line}: {message}"
        );
    }
}

#[test]
fn eval_refuses_to_write_its_report_over_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("data.jsonl");
    std::fs::copy(data("text.jsonl"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let copy = path_str(&copy);
    let message = fails(&[
        "eval",
        "--model",
        &model(),
        "--data",
        &copy,
        "--output",
        &copy,
    ]);
    assert!(
        message.contains("--output") && message.contains("--data"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the dataset was changed"
    );
}

/// An unwritable `--output` is reported before the dataset is read and scored, not after.
#[test]
fn eval_checks_its_output_directory_before_it_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    // A malformed dataset: had eval read it first, the error would name its line instead.
    let malformed = write(dir.path(), "bad.jsonl", "{\"text\": 5}\n");
    let report = path_str(&dir.path().join("absent").join("report.json"));
    let message = fails(&[
        "eval",
        "--model",
        &model(),
        "--data",
        &malformed,
        "--output",
        &report,
    ]);
    assert!(
        message.contains("--output") && message.contains("absent") && !message.contains(":1:"),
        "{message}"
    );
}

#[test]
fn a_test_set_of_one_class_is_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let only_yes: String = std::fs::read_to_string(data("classify.jsonl"))
        .unwrap()
        .lines()
        .filter(|line| line.contains("\"yes\""))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(!only_yes.is_empty());
    let file = write(dir.path(), "yes.jsonl", &only_yes);
    let report = dir.path().join("r.json");
    ok(&[
        "eval",
        "--model",
        &model(),
        "--data",
        &file,
        "--output",
        &path_str(&report),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(report["mean_loss"].as_f64().unwrap().is_finite());
}

#[test]
fn a_model_without_a_tokenizer_takes_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-gpt2").join(file), bare.join(file)).unwrap();
    }
    let bare = path_str(&bare);
    let info = ok(&["info", "--model", &bare]);
    assert!(info.contains("no tokenizer"), "{info}");
    let mut args = train_args(&dir.path().join("run"), &data("ids.jsonl"), &[]);
    args[2] = bare.clone();
    ok(&strs(&args));
    let report = path_str(&dir.path().join("r.json"));
    ok(&[
        "eval",
        "--model",
        &bare,
        "--data",
        &data("ids.jsonl"),
        "--output",
        &report,
    ]);
    // Text still needs one, and the message says where it goes.
    let message = fails(&[
        "eval",
        "--model",
        &bare,
        "--data",
        &data("text.jsonl"),
        "--output",
        &report,
    ]);
    assert!(
        message.contains("text.jsonl:1") && message.contains("tokenizer.json"),
        "{message}"
    );
}

#[test]
fn a_missing_relative_model_path_is_not_reported_as_a_network_problem() {
    let message = fails(&[
        "eval",
        "--model",
        "models/no-such-model",
        "--data",
        &data("text.jsonl"),
        "--output",
        "unused.json",
    ]);
    assert!(
        message.contains("no directory `models/no-such-model`"),
        "{message}"
    );
}

#[test]
fn progress_lines_count_epochs_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = ok(&strs(&train_args(
        &dir.path().join("run"),
        &data("completion.jsonl"),
        &["--epochs", "2"],
    )));
    assert!(log.contains("epoch 1/2 train"), "{log}");
    assert!(log.contains("epoch 2/2 train"), "{log}");
    assert!(!log.contains("epoch 3/2"), "{log}");
}

#[test]
fn a_second_run_into_a_locked_output_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    // What a running `train` holds for as long as it trains.
    let lock = std::fs::File::create(out.join(".lock")).unwrap();
    lock.lock().unwrap();
    let message = fails(&strs(&train_args(&out, &data("text.jsonl"), &[])));
    assert!(message.contains("another peft-train"), "{message}");
    assert!(
        !out.join("train").exists(),
        "the refused run wrote into the directory"
    );
    drop(lock);
    ok(&strs(&train_args(&out, &data("text.jsonl"), &[])));
}

#[test]
fn a_diverging_run_fails_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let message = fails(&strs(&train_args(
        &out,
        &data("completion.jsonl"),
        &["--lr", "1e38", "--epochs", "2", "--batch-size", "2"],
    )));
    assert!(message.contains("training diverged"), "{message}");
    assert!(!out.join("adapter").exists());
    assert!(!out.join("adapter-interrupted").exists());
}

#[test]
fn resume_refuses_other_settings_and_keeps_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let text = data("completion.jsonl");
    ok(&strs(&train_args(&out, &text, &["--epochs", "2"])));
    let adapter = std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();

    let message = fails(&strs(&train_args(
        &out,
        &text,
        &["--epochs", "3", "--resume", "--lr", "1e30"],
    )));
    assert!(message.contains("--lr was 0.05, now 1e+30"), "{message}");
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(
        &edited,
        std::fs::read_to_string(&text)
            .unwrap()
            .replace("Mill", "Mall"),
    )
    .unwrap();
    let message = fails(&strs(&train_args(
        &out,
        &path_str(&edited),
        &["--epochs", "3", "--resume"],
    )));
    assert!(
        message.contains("--data file's contents have changed"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap(),
        adapter,
        "a refused resume changed the adapter"
    );
    // The same settings with more epochs continue the run.
    let log = ok(&strs(&train_args(
        &out,
        &text,
        &["--epochs", "3", "--resume"],
    )));
    assert!(log.contains("resuming after epoch 2"), "{log}");
}

#[test]
fn a_damaged_last_checkpoint_resumes_from_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let text = data("completion.jsonl");
    ok(&strs(&train_args(&out, &text, &["--epochs", "2"])));
    let last = out.join("train/checkpoint/model-2.bpk");
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let log = ok(&strs(&train_args(
        &out,
        &text,
        &["--epochs", "3", "--resume"],
    )));
    assert!(
        log.contains("checkpoint of epoch 2 is unusable") && log.contains("resuming after epoch 1"),
        "{log}"
    );
}

/// Enough lines of text for an epoch to take a moment.
fn long_dataset(dir: &Path) -> String {
    let mut text = String::new();
    for i in 0..1500 {
        text.push_str(&format!(
            "{{\"text\": \"The Mill {i} is a pub near the river with cheap food\"}}\n"
        ));
    }
    write(dir, "long.jsonl", &text)
}

/// Ctrl-C and SIGTERM stop a run, save the adapter as it was, and exit 130 — not 0, so a
/// script can tell an interrupted run from a finished one.
#[test]
fn interrupted_runs_save_their_adapter_and_exit_130() {
    let dir = tempfile::tempdir().unwrap();
    let data = long_dataset(dir.path());
    for signal in ["INT", "TERM"] {
        let out = dir.path().join(signal);
        let mut child = Command::new(env!("CARGO_BIN_EXE_peft-train"))
            .args(train_args(&out, &data, &["--epochs", "50"]))
            .env("PEFT_RS_CACHE", dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signal once training is under way (its metric logs appear).
        let started = Instant::now();
        while !out.join("train/train/epoch-1").exists() {
            assert!(child.try_wait().unwrap().is_none(), "training ended early");
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "training never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(stderr.contains("adapter-interrupted"), "{stderr}");
        assert!(
            out.join("adapter-interrupted/adapter_model.safetensors")
                .is_file()
        );
    }
}

/// `--early-stopping` ends with the best epoch's adapter: evaluating the saved adapter gives
/// the lowest validation loss of `metrics.json`, not the last epoch's.
#[test]
fn early_stopping_keeps_the_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let lines = |file: &str| -> Vec<String> {
        std::fs::read_to_string(data(file))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    // Two training texts and a high rate: the prompt overfits them, and the loss on four
    // held-out examples (one batch, so the logged loss is the token-weighted mean `eval`
    // gives) falls for a few epochs, then rises (measured: lowest at epoch 3 of 5).
    let train = write(
        dir.path(),
        "train.jsonl",
        &lines("text.jsonl")[..2].join("\n"),
    );
    let valid = write(
        dir.path(),
        "valid.jsonl",
        &lines("completion.jsonl")[8..12].join("\n"),
    );
    let out = dir.path().join("run");
    let mut args = train_args(
        &out,
        &train,
        &["--epochs", "12", "--early-stopping", "2", "--lr", "3"],
    );
    let at = args.iter().position(|a| a == "--valid-data").unwrap() + 1;
    args[at] = valid.clone();
    let log = ok(&strs(&args));
    let metrics: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let losses: Vec<f64> = metrics
        .iter()
        .map(|m| m["valid_loss"].as_f64().unwrap())
        .collect();
    let best = losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        *losses.last().unwrap() > best,
        "the run should end past its best epoch for this test to mean anything: {losses:?}"
    );
    assert!(log.contains("early stopping: keeping epoch"), "{log}");
    let report = dir.path().join("r.json");
    ok(&[
        "eval",
        "--model",
        &model(),
        "--adapter",
        &path_str(&out.join("adapter")),
        "--data",
        &valid,
        "--output",
        &path_str(&report),
        "--batch-size",
        "4",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let saved = report["mean_loss"].as_f64().unwrap();
    assert!(
        (saved - best).abs() < 1e-4,
        "the saved adapter scores {saved}; the best epoch scored {best} ({losses:?})"
    );
}

/// A prompt started from another adapter records that adapter's init, as PEFT does when it
/// trains a loaded adapter further — not `RANDOM`.
#[test]
fn a_transferred_prompt_records_its_sources_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let source = fixtures().join("adapters/prompt-text");
    let source_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("adapter_config.json")).unwrap())
            .unwrap();
    let virtual_tokens = source_config["num_virtual_tokens"].to_string();
    let mut args = train_args(
        &out,
        &data("text.jsonl"),
        &["--prompt-init-from", &path_str(&source)],
    );
    let at = args
        .iter()
        .position(|a| a == "--num-virtual-tokens")
        .unwrap()
        + 1;
    args[at] = virtual_tokens;
    ok(&strs(&args));
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["prompt_tuning_init"], "TEXT", "{config}");
    assert_eq!(
        config["prompt_tuning_init_text"],
        source_config["prompt_tuning_init_text"]
    );
}

#[test]
fn an_adapter_holding_nan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("nan");
    std::fs::create_dir_all(&adapter).unwrap();
    let source = fixtures().join("adapters/prompt");
    std::fs::copy(
        source.join("adapter_config.json"),
        adapter.join("adapter_config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(source.join("adapter_model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("prompt_embeddings").unwrap();
    let mut values = view.data().to_vec();
    values[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let nan =
        safetensors::tensor::TensorView::new(view.dtype(), view.shape().to_vec(), &values).unwrap();
    std::fs::write(
        adapter.join("adapter_model.safetensors"),
        safetensors::serialize([("prompt_embeddings", nan)], None).unwrap(),
    )
    .unwrap();
    let report = path_str(&dir.path().join("r.json"));
    let message = fails(&[
        "eval",
        "--model",
        &model(),
        "--adapter",
        &path_str(&adapter),
        "--data",
        &data("text.jsonl"),
        "--output",
        &report,
    ]);
    assert!(message.contains("NaN or infinite"), "{message}");
}

/// A model whose weights give NaN scores: `eval` names the line and writes no report, rather
/// than reporting a NaN mean loss as a result.
#[test]
fn eval_refuses_to_report_nan_scores() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixtures().join("tiny-gpt2").join(file), broken.join(file)).unwrap();
    }
    let bytes = std::fs::read(fixtures().join("tiny-gpt2/model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            if name == "ln_f.weight" {
                data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            (name, data, view.dtype(), view.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, data, dtype, shape)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    std::fs::write(
        broken.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let message = fails(&[
        "eval",
        "--model",
        &path_str(&broken),
        "--data",
        &data("text.jsonl"),
        "--output",
        &path_str(&report),
    ]);
    assert!(
        message.contains("text.jsonl:1") && message.contains("non-finite"),
        "{message}"
    );
    assert!(!report.exists());
}

/// Counts given as the largest number a flag takes are refused with the flag's name or mean
/// "all of it"; none overflows or reserves memory for its value.
#[test]
fn huge_counts_are_refused_or_capped_never_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let text = data("text.jsonl");
    let huge = usize::MAX.to_string();
    let out = dir.path().join("virtual");
    let message = fails(&strs(&train_args(
        &out,
        &text,
        &["--num-virtual-tokens", &huge],
    )));
    assert!(
        message.contains("--num-virtual-tokens") && message.contains("positions"),
        "{message}"
    );
    // A batch larger than the data is all of it, as PyTorch's DataLoader gives.
    for (name, extra) in [
        ("batch", ["--batch-size", &huge, "--max-steps", "1"]),
        (
            "accumulation",
            ["--grad-accumulation", &huge, "--max-steps", "1"],
        ),
        ("steps", ["--batch-size", &huge, "--max-steps", &huge]),
    ] {
        let out = dir.path().join(name);
        ok(&strs(&train_args(&out, &text, &extra)));
        assert!(out.join("adapter").exists(), "{name}");
    }
    let message = fails(&[
        "generate",
        "--model",
        &model(),
        "--prompt",
        "The Mill",
        "--max-new-tokens",
        &huge,
    ]);
    assert!(message.contains("positions"), "{message}");
    // A projection wider than any memory (the allocator used to abort the process) or than
    // can be counted is refused by its flag before anything is allocated.
    for hidden in ["1000000000000", &huge] {
        let out = dir.path().join(format!("projection{}", hidden.len()));
        let message = fails(&strs(&train_args(
            &out,
            &text,
            &["--method", "prefix", "--prefix-projection", hidden],
        )));
        assert!(
            message.contains(&format!("--prefix-projection {hidden}"))
                && message.contains("of memory free on this machine"),
            "{message}"
        );
    }
}

/// An example of one token predicts nothing without virtual tokens before it: `eval` scores it
/// with 0 tokens (as it does an example whose targets are all ignored) beside the others.
#[test]
fn eval_scores_an_example_of_one_token_as_predicting_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "short.jsonl",
        "{\"input_ids\": [5]}\n{\"input_ids\": [5, 6, 7]}\n",
    );
    for batch_size in ["1", "8"] {
        let report = dir.path().join(format!("r{batch_size}.json"));
        ok(&[
            "eval",
            "--model",
            &model(),
            "--data",
            &file,
            "--output",
            &path_str(&report),
            "--batch-size",
            batch_size,
        ]);
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let tokens: Vec<u64> = report["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["tokens"].as_u64().unwrap())
            .collect();
        assert_eq!(tokens, [0, 2], "batch size {batch_size}");
        assert!(report["mean_loss"].as_f64().unwrap() > 0.0);
    }
}

/// A labelled line needs text: with none, no position may be left to predict its label from
/// (prefix tuning, full fine-tuning), so it is refused by its line, for every method.
#[test]
fn a_label_without_text_is_refused_by_its_line() {
    let dir = tempfile::tempdir().unwrap();
    // " the" and " and" are one token each in the fixture tokenizer: the label's deciding
    // token is its first.
    let file = write(
        dir.path(),
        "labels.jsonl",
        "{\"text\": \"The Mill\", \"label\": \"the\"}\n{\"text\": \"\", \"label\": \"and\"}\n",
    );
    for method in ["prompt", "prefix", "full"] {
        let out = dir.path().join(method);
        let message = fails(&strs(&train_args(&out, &file, &["--method", method])));
        assert!(
            message.contains("labels.jsonl:2") && message.contains("`text` is empty"),
            "{method}: {message}"
        );
    }
}

/// Training lines may mix labels with plain text; accuracy is then not measured (a batch of
/// plain text has no classes), even when the validation lines all have labels.
#[test]
fn labelled_and_plain_lines_train_together() {
    let dir = tempfile::tempdir().unwrap();
    let labelled = "{\"text\": \"The Mill\", \"label\": \"the\"}\n\
                    {\"text\": \"Alimentum\", \"label\": \"and\"}\n";
    let mixed = write(
        dir.path(),
        "mixed.jsonl",
        &format!("{labelled}{{\"text\": \"The Eagle\"}}\n"),
    );
    let valid = write(dir.path(), "valid.jsonl", labelled);
    let out = dir.path().join("run");
    let log = ok(&strs(&train_args(
        &out,
        &mixed,
        &["--valid-data", &valid, "--batch-size", "1"],
    )));
    assert!(!log.contains("Accuracy"), "{log}");
    assert!(out.join("adapter").exists());
}
