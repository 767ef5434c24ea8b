//! Checkpoints that hold what training changes — the adapter and the optimizer state, not
//! the frozen base model — written atomically so that a kill mid-write never leaves a
//! checkpoint that looks complete but is not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::store::ModuleRecord;
use burn::store::burn_pack::{Reader, Writer};
use burn::tensor::Bytes;
use burn::train::checkpoint::{
    Checkpoint, Checkpointer, CheckpointerError, CheckpointingAction, CheckpointingStrategy,
    KeepLastNCheckpoints,
};
use burn::train::metric::store::EventStoreClient;

use crate::epochs::EpochClock;

pub const MODEL: &str = "model";
pub const OPTIMIZER: &str = "optim";
pub const SCHEDULER: &str = "scheduler";

fn file(dir: &Path, name: &str, epoch: usize) -> PathBuf {
    dir.join(format!("{name}-{epoch}.bpk"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(CheckpointerError::IOError)?;
    }
    peft_core::adapter::write_atomically(path, bytes)
        .map_err(|err| CheckpointerError::Unknown(err.to_string()))
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
            std::fs::read(file(&self.dir, self.name, epoch)).map_err(CheckpointerError::IOError)?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
    }
}

/// The model record, keeping only the parameters under `keep_prefix` (the adapter), or all of
/// them for full fine-tuning.
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
            std::fs::read(file(&self.dir, MODEL, epoch)).map_err(CheckpointerError::IOError)?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(CheckpointerError::Record)?;
        // The frozen base is not in the file: it comes from the base checkpoint.
        Ok(record.allow_partial(self.keep_prefix.is_some()))
    }
}

/// The newest epoch whose model, optimizer and scheduler checkpoints are all on disk.
pub fn last_complete_epoch(dir: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let epoch = name
                .strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse()
                .ok()?;
            [OPTIMIZER, SCHEDULER]
                .iter()
                .all(|other| file(dir, other, epoch).is_file())
                .then_some(epoch)
        })
        .max()
}

/// Keeps the last two checkpoints, and notes when each epoch ended (for tokens/s).
pub struct TimedKeepLast {
    inner: KeepLastNCheckpoints,
    pub epoch_ends: Arc<Mutex<Vec<(usize, Instant)>>>,
    /// Told of every epoch end, so the next epoch's order and randomness follow from it.
    clock: EpochClock,
}

impl TimedKeepLast {
    pub fn new(epoch_ends: Arc<Mutex<Vec<(usize, Instant)>>>, clock: EpochClock) -> Self {
        Self {
            inner: KeepLastNCheckpoints::new(2),
            epoch_ends,
            clock,
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
            .expect("no panics while holding the lock")
            .push((epoch, Instant::now()));
        self.clock.epoch_completed(epoch);
        self.inner.checkpointing(epoch, store)
    }
}
