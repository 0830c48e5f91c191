//! Putting a checked SQLite database in place of the live one.
//!
//! The new file is already decompressed and checked in the target's folder,
//! so the swap is renames only. The old database moves aside together with
//! its `-wal` and `-shm` files: its committed rows may still live only in
//! the WAL, and a stale WAL left beside the new file would be replayed onto
//! it and corrupt it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::sync_dir;
use crate::error::{Error, Result};
use crate::restore::check::Prepared;

/// Where the replaced database went.
#[derive(Debug)]
pub struct Swapped {
    pub previous: Option<PathBuf>,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `target.pre-restore-STAMP` (and its `-wal`/`-shm`).
pub fn previous_path(target: &Path, stamp: &str) -> PathBuf {
    with_suffix(target, &format!(".pre-restore-{stamp}"))
}

pub fn swap(prepared: Prepared, target: &Path, stamp: &str) -> Result<Swapped> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let previous = previous_path(target, stamp);
    let had_old = match fs::symlink_metadata(target) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("inspect the live database", target, e)),
    };
    if had_old {
        fs::rename(target, &previous)
            .map_err(|e| Error::io("move the live database aside to", &previous, e))?;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = with_suffix(target, suffix);
        match fs::rename(&side, with_suffix(&previous, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("move aside", &side, e)),
        }
    }
    let new = prepared.keep();
    if let Err(e) = fs::rename(&new, target) {
        // Put the old database back: the live database must be as it was.
        if had_old {
            let _ = fs::rename(&previous, target);
            for suffix in ["-wal", "-shm", "-journal"] {
                let _ = fs::rename(with_suffix(&previous, suffix), with_suffix(target, suffix));
            }
        }
        let _ = fs::remove_file(&new);
        return Err(Error::io(
            "move the restored database into place at",
            target,
            e,
        ));
    }
    sync_dir(dir)?;
    Ok(Swapped {
        previous: had_old.then_some(previous),
    })
}

/// Crash recovery: if the live database is missing but the copy moved aside
/// by an interrupted restore exists, put it back.
pub fn recover(target: &Path, stamp: &str) -> Result<String> {
    let previous = previous_path(target, stamp);
    if target.exists() || !previous.exists() {
        return Ok(format!("{} is in place", target.display()));
    }
    fs::rename(&previous, target)
        .map_err(|e| Error::io("move the previous database back to", target, e))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = fs::rename(with_suffix(&previous, suffix), with_suffix(target, suffix));
    }
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir)?;
    Ok(format!(
        "moved {} back to {}",
        previous.display(),
        target.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_database_and_its_wal_move_aside_together() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        fs::write(&target, b"old").unwrap();
        fs::write(with_suffix(&target, "-wal"), b"old wal").unwrap();
        fs::write(with_suffix(&target, "-shm"), b"old shm").unwrap();
        let new = dir.path().join(".app.db.restore-X.tmp");
        fs::write(&new, b"new").unwrap();
        let swapped = swap(Prepared::new(new.clone()), &target, "X").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!with_suffix(&target, "-wal").exists());
        assert!(!with_suffix(&target, "-shm").exists());
        let previous = swapped.previous.unwrap();
        assert_eq!(fs::read(&previous).unwrap(), b"old");
        assert_eq!(
            fs::read(with_suffix(&previous, "-wal")).unwrap(),
            b"old wal"
        );
        assert!(!new.exists());
    }

    #[test]
    fn recovery_puts_the_previous_database_back_when_the_live_one_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        fs::write(previous_path(&target, "X"), b"old").unwrap();
        recover(&target, "X").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }
}
