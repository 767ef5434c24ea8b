//! Whether the host can hold what a command is about to allocate, asked before the allocation:
//! Rust aborts the process when an allocation fails, with no message naming the flag that asked
//! for it, and the kernel's out-of-memory killer gives none either.

use sysinfo::System;

use crate::backend::ComputeBackend;

/// Bytes training keeps for each trainable f32 parameter besides the parameter itself: its
/// gradient and AdamW's two moments.
pub const TRAINING_BYTES_PER_PARAMETER: usize = 3 * size_of::<f32>();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{what} would need {}, more than the {} of memory free on this machine",
    bytes.map_or_else(|| "more bytes than can be counted".into(), |b| gibibytes(b as f64)),
    gibibytes(*.free as f64)
)]
pub struct NoRoom {
    /// What asked for the memory, as the user named it (`--prefix-projection 1000000`).
    pub what: String,
    /// `None`: more bytes than can be counted.
    pub bytes: Option<usize>,
    pub free: u64,
}

/// Whether `bytes` more (`None`: more than can be counted) fit in the host's free memory, for
/// tensors of `backend`. Only a backend that keeps its tensors in the host's memory is asked
/// about; a GPU's memory is its driver's to refuse, with a message of its own.
///
/// What passes may still not fit beside what the command allocates next (activations, say):
/// this refuses what cannot possibly fit, before any of it is allocated.
pub fn ensure_host_room(
    backend: ComputeBackend,
    bytes: Option<usize>,
    what: impl FnOnce() -> String,
) -> Result<(), NoRoom> {
    if !backend.is_cpu() {
        return Ok(());
    }
    ensure_room(bytes, free_host_memory(), what)
}

/// [`ensure_host_room`] against `free` bytes.
pub fn ensure_room(
    bytes: Option<usize>,
    free: u64,
    what: impl FnOnce() -> String,
) -> Result<(), NoRoom> {
    match bytes {
        Some(bytes) if bytes as u64 <= free => Ok(()),
        _ => Err(NoRoom {
            what: what(),
            bytes,
            free,
        }),
    }
}

/// Memory the process can still have: what the kernel counts as available (free, and caches
/// it can drop) plus free swap, within the container's limit where there is one.
fn free_host_memory() -> u64 {
    let mut system = System::new();
    system.refresh_memory();
    let free = system.available_memory().saturating_add(system.free_swap());
    match system.cgroup_limits() {
        Some(limits) => free.min(limits.free_memory.saturating_add(limits.free_swap)),
        None => free,
    }
}

fn gibibytes(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_is_free_is_refused_by_name() {
        let free = 3 << 30;
        let refused = ensure_room(Some(5 << 30), free, || "--x 9".into()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "--x 9 would need 5.0 GiB, more than the 3.0 GiB of memory free on this machine"
        );
        let uncountable = ensure_room(None, free, || "--x 9".into()).unwrap_err();
        assert!(
            uncountable
                .to_string()
                .starts_with("--x 9 would need more bytes than can be counted"),
            "{uncountable}"
        );
        assert_eq!(ensure_room(Some(3 << 30), free, String::new), Ok(()));
    }

    #[test]
    fn the_host_is_asked_only_for_cpu_backends() {
        let no_machine_has = Some(usize::MAX / 2);
        assert!(ensure_host_room(ComputeBackend::Flex, no_machine_has, String::new).is_err());
        assert!(ensure_host_room(ComputeBackend::Flex, Some(1 << 20), String::new).is_ok());
        assert!(ensure_host_room(ComputeBackend::TchCuda, no_machine_has, String::new).is_ok());
    }
}
