//! Writing result files (metrics, reports, plots, caches) so that a crash or a second reader
//! never sees half of one.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `path` through a temporary file in the same directory and a rename, so readers see
/// either the old file or the complete new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = temporary_file_beside(path)?;
    std::io::Write::write_all(&mut file, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Fails now, naming the directory, where [`write_atomically`] would fail later for want of
/// one that exists and takes a new file: a command that computes for minutes before writing
/// its result checks first, so that the time is not spent for nothing.
pub fn check_writable(path: &Path) -> Result<()> {
    // The probe is the file `write_atomically` would start with, deleted when dropped.
    temporary_file_beside(path).map(drop)
}

/// A new temporary file in `path`'s directory (`.` for a bare file name): the same directory,
/// since a rename across file systems would not be atomic.
fn temporary_file_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    // The file gets the mode `std::fs::write` would give it, not a temporary file's 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot write into {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn mode_is_that_of_a_plain_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (atomic, plain) = (dir.path().join("a"), dir.path().join("b"));
        write_atomically(&atomic, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&atomic), mode(&plain));
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("report.json");
        let message = format!("{:#}", write_atomically(&path, b"x").unwrap_err());
        assert!(message.contains("absent"), "{message}");
    }

    #[test]
    fn writability_is_checked_without_leaving_a_file() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("report.json")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let absent = dir.path().join("absent").join("report.json");
        let message = format!("{:#}", check_writable(&absent).unwrap_err());
        assert!(message.contains("absent"), "{message}");
    }
}
