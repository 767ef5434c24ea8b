//! Checkpoints that hold what training changes — the adapter and the optimizer state, not
//! the frozen base model — written atomically so that a kill mid-write never leaves a
//! checkpoint that looks complete but is not, and sealed with a SHA-256 of their contents so
//! that one damaged afterwards (a full disk, a copy cut short) is recognised and skipped in
//! favour of the epoch before it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::store::ModuleRecord;
use burn::store::burn_pack::{Reader, Writer};
use burn::tensor::Bytes;
use burn::train::checkpoint::{
    Checkpoint, Checkpointer, CheckpointerError, CheckpointingAction, CheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, Direction, EventStoreClient, Split};
use sha2::{Digest, Sha256};

use crate::train::epochs::EpochClock;

pub const MODEL: &str = "model";
pub const OPTIMIZER: &str = "optim";
pub const SCHEDULER: &str = "scheduler";

fn file(dir: &Path, name: &str, epoch: usize) -> PathBuf {
    dir.join(format!("{name}-{epoch}.bpk"))
}

/// Ends every checkpoint file, after the SHA-256 of what precedes it.
const SEAL: &[u8; 8] = b"PEFTRSv1";
const SEAL_LEN: usize = 32 + SEAL.len();

/// `bytes` followed by their SHA-256 and [`SEAL`].
fn seal(bytes: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(bytes.len() + SEAL_LEN);
    sealed.extend_from_slice(bytes);
    sealed.extend_from_slice(&Sha256::digest(bytes));
    sealed.extend_from_slice(SEAL);
    sealed
}

/// The contents of a sealed checkpoint file, or why it is damaged.
fn unseal(mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.len() < SEAL_LEN || !bytes.ends_with(SEAL) {
        return Err("it is cut short (no seal at its end)".into());
    }
    let body = bytes.len() - SEAL_LEN;
    if Sha256::digest(&bytes[..body]).as_slice() != &bytes[body..body + 32] {
        return Err("its contents do not match their checksum".into());
    }
    bytes.truncate(body);
    Ok(bytes)
}

/// The contents of the sealed checkpoint file at `path`, or why it cannot be used (naming it).
fn read_sealed(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|err| err.to_string())
        .and_then(unseal)
        .map_err(|why| format!("{}: {why}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(CheckpointerError::IOError)?;
    }
    peft_runtime::write_atomically(path, &seal(bytes))
        .map_err(|err| CheckpointerError::Unknown(format!("{err:#}")))
}

fn delete(dir: &Path, name: &str, epoch: usize) -> Result<(), CheckpointerError> {
    match std::fs::remove_file(file(dir, name, epoch)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(CheckpointerError::IOError(err))
        }
        _ => Ok(()),
    }
}

/// Optimizer and scheduler records, saved whole.
pub struct AtomicCheckpointer {
    pub dir: PathBuf,
    pub name: &'static str,
}

impl<R: Checkpoint> Checkpointer<R> for AtomicCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        write_atomically(&file(&self.dir, self.name, epoch), &bytes)
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        delete(&self.dir, self.name, epoch)
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        let bytes =
            read_sealed(&file(&self.dir, self.name, epoch)).map_err(CheckpointerError::Unknown)?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
    }
}

/// The model record, keeping only the parameters under `keep_prefix` (the adapter), or all of
/// them for full fine-tuning.
#[derive(Clone)]
pub struct ModelCheckpointer {
    pub dir: PathBuf,
    pub keep_prefix: Option<String>,
}

impl Checkpointer<ModuleRecord> for ModelCheckpointer {
    fn save(&self, epoch: usize, record: ModuleRecord) -> Result<(), CheckpointerError> {
        let mut bytes = record.into_bytes().map_err(CheckpointerError::Record)?;
        if let Some(prefix) = &self.keep_prefix {
            let record_error =
                |e: burn::store::burn_pack::Error| CheckpointerError::Record(e.into());
            let kept: Vec<_> = Reader::from_bytes(bytes)
                .and_then(Reader::into_tensors)
                .map_err(record_error)?
                .into_iter()
                .filter(|tensor| tensor.name.starts_with(prefix.as_str()))
                .collect();
            bytes = Writer::new(kept).into_bytes().map_err(record_error)?;
        }
        write_atomically(&file(&self.dir, MODEL, epoch), &bytes)
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        delete(&self.dir, MODEL, epoch)
    }

    fn restore(&self, epoch: usize) -> Result<ModuleRecord, CheckpointerError> {
        let bytes =
            read_sealed(&file(&self.dir, MODEL, epoch)).map_err(CheckpointerError::Unknown)?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(CheckpointerError::Record)?;
        // The frozen base is not in the file: it comes from the base checkpoint.
        Ok(record.allow_partial(self.keep_prefix.is_some()))
    }
}

/// The epochs with at least one checkpoint file in `dir`, newest first.
pub fn checkpointed_epochs(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let (_, rest) = name.split_once('-')?;
            rest.strip_suffix(".bpk")?.parse().ok()
        })
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.dedup();
    epochs
}

/// The newest epoch whose model, optimizer and scheduler checkpoints are all on disk and
/// intact, with a line for each newer epoch that had to be passed over and why.
pub fn last_intact_epoch(dir: &Path) -> (Option<usize>, Vec<String>) {
    let mut passed_over = Vec::new();
    for epoch in checkpointed_epochs(dir) {
        let damage = [MODEL, OPTIMIZER, SCHEDULER]
            .iter()
            .find_map(|name| read_sealed(&file(dir, name, epoch)).err());
        match damage {
            None => return (Some(epoch), passed_over),
            Some(why) => passed_over.push(format!(
                "the checkpoint of epoch {epoch} is unusable ({why})"
            )),
        }
    }
    (None, passed_over)
}

/// Keeps the checkpoints of the last two epochs — and, when `keep_best` (early stopping), of
/// the epoch with the lowest validation loss, whose adapter the run ends with — and notes
/// when each epoch ended (for tokens/s).
pub struct TimedKeepLast {
    pub epoch_ends: Arc<Mutex<Vec<(usize, Instant)>>>,
    /// Told of every epoch end, so the next epoch's order and randomness follow from it.
    clock: EpochClock,
    keep_best: bool,
    /// Epochs whose checkpoints are on disk.
    saved: Vec<usize>,
}

impl TimedKeepLast {
    /// `on_disk`: the epochs an earlier run (being resumed) left checkpoints of.
    pub fn new(
        epoch_ends: Arc<Mutex<Vec<(usize, Instant)>>>,
        clock: EpochClock,
        keep_best: bool,
        on_disk: Vec<usize>,
    ) -> Self {
        Self {
            epoch_ends,
            clock,
            keep_best,
            saved: on_disk,
        }
    }
}

impl CheckpointingStrategy for TimedKeepLast {
    fn checkpointing(
        &mut self,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        self.epoch_ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((epoch, Instant::now()));
        self.clock.epoch_completed(epoch);
        let best = if self.keep_best {
            store.find_epoch("Loss", Aggregate::Mean, Direction::Lowest, &Split::Valid)
        } else {
            None
        };
        self.saved.push(epoch);
        let mut actions = vec![CheckpointingAction::Save];
        self.saved.retain(|&saved| {
            let keep = saved + 2 > epoch || Some(saved) == best;
            if !keep {
                actions.push(CheckpointingAction::Delete(saved));
            }
            keep
        });
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_reads_back_and_damage_is_named() {
        let sealed = seal(b"adapter weights");
        assert_eq!(unseal(sealed.clone()).unwrap(), b"adapter weights");
        let cut = sealed[..sealed.len() - 5].to_vec();
        assert!(unseal(cut).unwrap_err().contains("cut short"));
        let mut flipped = sealed;
        flipped[3] ^= 1;
        assert!(unseal(flipped).unwrap_err().contains("checksum"));
        assert!(unseal(Vec::new()).is_err());
    }

    #[test]
    fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        for epoch in [1, 2] {
            for name in [MODEL, OPTIMIZER, SCHEDULER] {
                write_atomically(&file(dir.path(), name, epoch), &[epoch as u8; 100]).unwrap();
            }
        }
        assert_eq!(last_intact_epoch(dir.path()), (Some(2), vec![]));
        let newest = file(dir.path(), MODEL, 2);
        let bytes = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &bytes[..60]).unwrap();
        let (epoch, passed_over) = last_intact_epoch(dir.path());
        assert_eq!(epoch, Some(1));
        assert!(passed_over[0].contains("model-2.bpk"), "{passed_over:?}");
        std::fs::remove_file(file(dir.path(), SCHEDULER, 1)).unwrap();
        assert_eq!(last_intact_epoch(dir.path()).0, None);
        assert_eq!(checkpointed_epochs(dir.path()), vec![2, 1]);
    }
}
