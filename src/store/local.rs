//! `BACKUP_DIR`: the lock that keeps one backup at a time, the listing of
//! this tool's backups, free names, stale partial files, and deletion.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{BackupName, Kind};
use crate::archive::{self, PARTIAL_SUFFIX};
use crate::db::sqlite::SNAPSHOT_SUFFIX;
use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".backupd.lock";

/// A backup found in the directory.
#[derive(Debug, Clone)]
pub struct StoredBackup {
    pub name: BackupName,
    pub path: PathBuf,
    pub size: u64,
    pub has_sidecar: bool,
}

pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create the backup directory", dir, e))
}

/// Held while a backup runs, so `backupd once` from cron and the daemon never
/// write at the same time. Released when dropped (or when the process dies).
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Waits for the lock. `on_wait` is called once if someone else holds it.
    pub fn acquire(dir: &Path, on_wait: impl FnOnce()) -> Result<Self> {
        Self::acquire_file(&dir.join(LOCK_FILE), on_wait)
    }

    /// [`DirLock::acquire`] on another lock file (created if missing).
    pub fn acquire_file(path: &Path, on_wait: impl FnOnce()) -> Result<Self> {
        let file = Self::open_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(|e| Error::io("lock", path, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
        Ok(DirLock { _file: file })
    }

    /// Takes the lock only if it is free.
    pub fn try_acquire(dir: &Path) -> Result<Option<Self>> {
        let file = Self::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &dir.join(LOCK_FILE), e)),
        }
    }

    fn open(dir: &Path) -> Result<File> {
        Self::open_file(&dir.join(LOCK_FILE))
    }

    fn open_file(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open the lock file", path, e))
    }
}

/// Removes what an interrupted run left: `.NAME.partial` and `.NAME.snapshot`
/// files whose NAME is one of ours. Call it only while holding the lock.
pub fn remove_stale_partials(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in read_dir(dir)? {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(hidden) = file_name.strip_prefix('.') else {
            continue;
        };
        let inner = hidden
            .strip_suffix(PARTIAL_SUFFIX)
            .or_else(|| hidden.strip_suffix(SNAPSHOT_SUFFIX));
        if inner.and_then(BackupName::parse).is_some() {
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|e| Error::io("remove the stale partial file", &path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// This tool's backups in `dir`, newest first. Other files are ignored.
pub fn list(dir: &Path) -> Result<Vec<StoredBackup>> {
    let mut backups = Vec::new();
    for entry in read_dir(dir)? {
        let Some(name) = BackupName::parse(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let path = entry.path();
        // A symlink or directory with our name is not a backup we wrote.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        backups.push(StoredBackup {
            has_sidecar: archive::sidecar_path(&path).is_file(),
            name,
            path,
            size: meta.len(),
        });
    }
    backups.sort_by(|a, b| BackupName::newest_first(&a.name, &b.name));
    Ok(backups)
}

/// The first name for a backup of `kind` at `now` that is not taken, counting
/// partial files and the encrypted or plain twin too, so two backups in one
/// second never collide.
pub fn free_name(dir: &Path, kind: Kind, now: DateTime<Utc>, encrypted: bool) -> BackupName {
    (0..)
        .map(|seq| BackupName::new(kind, now, seq))
        .find(|name| {
            [false, true].into_iter().all(|enc| {
                let file = name.clone().with_encryption(enc).file_name();
                !dir.join(&file).exists() && !archive::partial_path(dir, &file).exists()
            })
        })
        .expect("an unbounded range has a free name")
        .with_encryption(encrypted)
}

/// Deletes a backup and its sidecar.
pub fn delete(backup: &StoredBackup) -> Result<()> {
    fs::remove_file(&backup.path)
        .map_err(|e| Error::io("delete the old backup", &backup.path, e))?;
    let sidecar = archive::sidecar_path(&backup.path);
    match fs::remove_file(&sidecar) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("delete the checksum file", &sidecar, e)),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect())
        .map_err(|e| Error::io("list the backup directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn same_second_backups_get_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let first = free_name(dir.path(), Kind::Sqlite, now, false);
        fs::write(dir.path().join(first.file_name()), b"x").unwrap();
        let second = free_name(dir.path(), Kind::Sqlite, now, true);
        fs::write(archive::partial_path(dir.path(), &second.file_name()), b"x").unwrap();
        let third = free_name(dir.path(), Kind::Sqlite, now, false);
        assert_eq!((first.seq, second.seq, third.seq), (0, 1, 2));
        assert_eq!(second.file_name(), "sqlite-20260102T030405Z-1.db.gz.enc");
    }

    #[test]
    fn only_our_partials_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let ours = [
            ".pg_dump-20200101T000000Z.sql.gz.partial",
            ".sqlite-20200101T000000Z.db.gz.snapshot",
        ];
        let theirs = [
            ".encryption_key",
            ".other.partial",
            "pg_dump-20200101T000000Z.sql.gz",
        ];
        for name in ours.iter().chain(&theirs) {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_partials(dir.path()).unwrap().len(), 2);
        for name in theirs {
            assert!(dir.path().join(name).exists(), "{name}");
        }
    }
}
