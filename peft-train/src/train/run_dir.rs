//! A run's output directory: held by one run at a time, recording what the run was started
//! with (`run.json`), and continued by `--resume` only as the same run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::train::TrainArgs;
use crate::train::checkpoint::{checkpointed_epochs, last_intact_epoch};

/// What a run was started with, kept whole in `OUTPUT_DIR/run.json`: `--resume` continues
/// only the same run.
#[derive(Serialize)]
struct RunRecord<'a> {
    #[serde(flatten)]
    args: &'a TrainArgs,
    /// The training data's contents, so that an edited file is not silently resumed on.
    data_sha256: String,
}

/// Settings a resumed run may change: how long it trains and what it is validated on.
const CHANGEABLE_ON_RESUME: [&str; 5] = [
    "epochs",
    "max_steps",
    "valid_data",
    "early_stopping",
    "output_dir",
];

/// Holds `OUTPUT_DIR/.lock` for as long as a run trains there, so that a second run into the
/// same directory is refused instead of clobbering the first one's checkpoints and adapter.
/// The operating system releases the lock when the process ends, however it ends.
pub(crate) struct OutputLock(#[allow(dead_code)] std::fs::File);

impl OutputLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "another peft-train (process {}) is training into {}; wait for it to \
                     finish, or choose another --output-dir",
                    holder.trim(),
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message above; the lock, not the text, is what counts.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Self(file))
    }
}

/// Refuses to start over a previous run's checkpoints unless resuming it, and to resume it
/// with settings that would make it another run. Returns the epoch to resume after.
pub(crate) fn check_resume(args: &TrainArgs, checkpoint_dir: &Path) -> Result<Option<usize>> {
    let data = std::fs::read(&args.data)
        .with_context(|| format!("cannot read dataset {}", args.data.display()))?;
    let record = serde_json::to_value(RunRecord {
        args,
        data_sha256: Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })?;
    let record_path = args.output_dir.join("run.json");
    if !args.resume {
        if let Some(epoch) = checkpointed_epochs(checkpoint_dir).first() {
            bail!(
                "{} already holds checkpoints (up to epoch {epoch}) of an earlier run; pass \
                 --resume to continue it, or choose another --output-dir",
                args.output_dir.display()
            );
        }
        let json = serde_json::to_string_pretty(&record)?;
        peft_runtime::write_atomically(&record_path, json.as_bytes())?;
        return Ok(None);
    }
    let (epoch, passed_over) = last_intact_epoch(checkpoint_dir);
    for why in &passed_over {
        tracing::warn!("{why}; resuming from an earlier epoch");
        println!("warning: {why}");
    }
    let Some(epoch) = epoch else {
        bail!(
            "--resume: no complete checkpoint in {}{}",
            checkpoint_dir.display(),
            if passed_over.is_empty() {
                String::new()
            } else {
                format!(" ({})", passed_over.join("; "))
            }
        );
    };
    let recorded: serde_json::Value = std::fs::read_to_string(&record_path)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(serde_json::from_str(&text)?))
        .with_context(|| format!("--resume: reading {}", record_path.display()))?;
    let differences = resume_differences(&recorded, &record);
    if !differences.is_empty() {
        bail!(
            "--resume: {} holds a run started with other settings ({}); resume with the \
             settings it was started with (only {} may change), or start a new run in another \
             --output-dir",
            args.output_dir.display(),
            differences.join(", "),
            CHANGEABLE_ON_RESUME[..4]
                .iter()
                .map(|key| format!("--{}", key.replace('_', "-")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(Some(epoch))
}

/// The settings of `now` that differ from those a run was `recorded` with, as
/// "--flag: then, now"; settings the record lacks (an older peft-train wrote it) are not
/// compared.
fn resume_differences(recorded: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (Some(recorded), Some(now)) = (recorded.as_object(), now.as_object()) else {
        return vec!["run.json is not a JSON object".into()];
    };
    now.iter()
        .filter(|(key, _)| !CHANGEABLE_ON_RESUME.contains(&key.as_str()))
        .filter_map(|(key, value)| {
            let then = recorded.get(key)?;
            (then != value).then(|| match key.as_str() {
                "data_sha256" => "the --data file's contents have changed".to_string(),
                _ => format!("--{} was {then}, now {value}", key.replace('_', "-")),
            })
        })
        .collect()
}
