//! `BACKUP_DIR`: the lock that keeps one backup at a time, the listing of
//! this tool's backups, free names, stale partial files, and deletion.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{BackupName, Kind, stamped_in_future, time_in_future};
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

/// Creates the backup folder (0750) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    crate::files::create_dir_all(dir).map_err(|e| Error::io("create the backup directory", dir, e))
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

    /// [`DirLock::try_acquire`] on another lock file (created if missing).
    pub fn try_acquire_file(path: &Path) -> Result<Option<Self>> {
        let file = Self::open_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
        }
    }

    fn open(dir: &Path) -> Result<File> {
        Self::open_file(&dir.join(LOCK_FILE))
    }

    fn open_file(path: &Path) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        // Never through a planted link: opening one would create its target.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::files::file_mode())
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io("open the lock file", path, e))
    }
}

/// Suffixes of the files that belong to a backup and mean nothing without
/// it: the checksum and the manifest.
pub const COMPANION_SUFFIXES: &[&str] = &[".sha256", crate::manifest::MANIFEST_SUFFIX];

/// The status file's default name; `.NAME.tmp` was its temporary name
/// before temporary names became random.
const STATUS_FILE_NAME: &str = "backup-status.json";

/// Something an interrupted run left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub path: PathBuf,
    /// What it was, for the log.
    pub what: &'static str,
}

/// Is `name` a backup this tool writes: a scheduled backup's name or a
/// safety backup's (`pre-restore-NAME`)?
pub fn is_our_backup_name(name: &str) -> bool {
    let name = name.strip_prefix(super::SAFETY_PREFIX).unwrap_or(name);
    BackupName::parse(name).is_some()
}

/// What a run killed at any moment leaves in `dir`, and nothing else:
/// partial backups (scheduled and safety), SQLite snapshots, random-named
/// temporary files (`.backupd-tmp-*`), the fixed-name temporaries of older
/// versions (`.NAME.sha256.tmp`, `.backup-status.json.tmp`), and checksum
/// files whose backup is missing (a kill between the two renames of a
/// commit). Only names this tool writes; call it only while holding the
/// lock, so no running backup's files are taken.
pub fn leftovers(dir: &Path) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    for entry in read_dir(dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(what) = leftover_kind(dir, &name) else {
            continue;
        };
        // A folder with our name is not something we wrote.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        found.push(Leftover {
            path: entry.path(),
            what,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// The files SQLite may create beside a database it writes.
const SQLITE_SIDE_FILES: [&str; 3] = ["-journal", "-wal", "-shm"];

fn leftover_kind(dir: &Path, name: &str) -> Option<&'static str> {
    if crate::files::is_our_temp(name) {
        return Some("temporary file");
    }
    if let Some(hidden) = name.strip_prefix('.') {
        if let Some(inner) = hidden.strip_suffix(PARTIAL_SUFFIX) {
            return is_our_backup_name(inner).then_some("partial backup");
        }
        if let Some(inner) = hidden.strip_suffix(SNAPSHOT_SUFFIX) {
            return is_our_backup_name(inner).then_some("SQLite snapshot");
        }
        // SQLite writes a rollback journal beside the snapshot while
        // `VACUUM INTO` fills it; a kill then leaves that journal behind.
        if let Some(inner) = SQLITE_SIDE_FILES
            .iter()
            .find_map(|side| hidden.strip_suffix(side)?.strip_suffix(SNAPSHOT_SUFFIX))
        {
            return is_our_backup_name(inner).then_some("SQLite snapshot journal");
        }
        let inner = hidden.strip_suffix(".tmp")?;
        if inner == STATUS_FILE_NAME {
            return Some("temporary status file");
        }
        let backup = COMPANION_SUFFIXES
            .iter()
            .find_map(|suffix| inner.strip_suffix(suffix))?;
        return is_our_backup_name(backup).then_some("temporary checksum file");
    }
    let (backup, what) = if let Some(backup) = name.strip_suffix(".sha256") {
        (backup, "checksum file without its backup")
    } else {
        (
            name.strip_suffix(crate::manifest::MANIFEST_SUFFIX)?,
            "manifest without its backup",
        )
    };
    let orphan = is_our_backup_name(backup)
        && matches!(fs::symlink_metadata(dir.join(backup)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    orphan.then_some(what)
}

/// Removes [`leftovers`] and logs each one; call it only while holding
/// the lock.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<Leftover>> {
    let found = leftovers(dir)?;
    for leftover in &found {
        match fs::remove_file(&leftover.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove the leftover file", &leftover.path, e)),
        }
        tracing::info!(file = %leftover.path.display(), what = leftover.what,
            "removed what an interrupted run left");
    }
    Ok(found)
}

/// This tool's backups in `dir`, newest first. Other files are ignored, and
/// so are names stamped after `now` (see [`stamped_in_future`]).
pub fn list_at(dir: &Path, now: DateTime<Utc>) -> Result<Vec<StoredBackup>> {
    let mut backups = Vec::new();
    let place = dir.display().to_string();
    for (file_name, path, meta) in regular_files(dir)? {
        let Some(name) = BackupName::parse(&file_name) else {
            continue;
        };
        if stamped_in_future(&name, now, &place) {
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

/// The regular files directly in `dir`: name, path and metadata (not
/// following links). A symlink or folder is never a backup, whatever its
/// name.
fn regular_files(dir: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>> {
    let mut files = Vec::new();
    for entry in read_dir(dir)? {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            files.push((entry.file_name().to_string_lossy().into_owned(), path, meta));
        }
    }
    Ok(files)
}

/// Who made a file found in `BACKUP_DIR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// backupd's own backup (`BackupName`), the only ones retention deletes.
    Scheduled,
    /// The app's admin page (`sqlite-manual-…`, `pg_dump-manual-…`).
    Manual,
    /// backupd's safety backup before a restore (`pre-restore-…`).
    Safety,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Scheduled => "scheduled",
            Origin::Manual => "manual",
            Origin::Safety => "safety",
        }
    }
}

/// Any backup file in the folder, whoever made it.
#[derive(Debug, Clone)]
pub struct ListedFile {
    pub file_name: String,
    pub path: PathBuf,
    pub size: u64,
    pub origin: Origin,
    /// The time in the name when it parses, else the file's mtime.
    pub time: DateTime<Utc>,
    pub has_sidecar: bool,
}

/// The time the app's admin page or a safety backup put in a name. The
/// app's stamp formats are not ours to fix, so a few common ones are read.
fn time_in_name(stem: &str) -> Option<DateTime<Utc>> {
    const FORMATS: &[&str] = &[
        "%Y%m%dT%H%M%SZ",
        "%Y%m%dT%H%M%S",
        "%Y%m%d_%H%M%S",
        "%Y%m%d-%H%M%S",
        "%Y%m%d%H%M%S",
        "%Y-%m-%dT%H-%M-%S",
        "%Y-%m-%d_%H-%M-%S",
    ];
    FORMATS.iter().find_map(|format| {
        NaiveDateTime::parse_from_str(stem, format)
            .ok()
            .map(|t| t.and_utc())
    })
}

/// The stem of a backup file name: no `.enc`, `.gz`, `.db`/`.sql`/`.dump`.
fn stem_of(name: &str) -> &str {
    let name = name.strip_suffix(super::ENCRYPTED_SUFFIX).unwrap_or(name);
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".db", ".sql", ".dump"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name)
}

/// Which backup file `name` is, and the time in its name, or `None` for
/// anything else (sidecars, the lock, the key, partial and temporary
/// dotfiles, the status file, the app's logs, unknown names).
pub fn classify(name: &str) -> Option<(Origin, Option<DateTime<Utc>>)> {
    if let Some(ours) = BackupName::parse(name) {
        return Some((Origin::Scheduled, Some(ours.time)));
    }
    if name.starts_with('.') || crate::restore::kind::classify(name).is_none() {
        return None;
    }
    if let Some(rest) = name.strip_prefix(super::SAFETY_PREFIX) {
        return Some((
            Origin::Safety,
            BackupName::parse(rest).map(|inner| inner.time),
        ));
    }
    let (_, stamp) = name.split_once("-manual-")?;
    Some((Origin::Manual, time_in_name(stem_of(stamp))))
}

/// Every backup file in `dir`, newest first: backupd's own, the app's
/// manual backups and the safety backups taken before restores. Only
/// regular files; the order is the time in the name (the mtime when the
/// name has none), then the name.
///
/// Files dated in the future (name, or mtime when the name has no time)
/// are left out, as in [`list_at`].
pub fn list_all(dir: &Path, now: DateTime<Utc>) -> Result<Vec<ListedFile>> {
    let place = dir.display().to_string();
    let mut files = Vec::new();
    for (file_name, path, meta) in regular_files(dir)? {
        let Some((origin, time)) = classify(&file_name) else {
            continue;
        };
        let time = time.unwrap_or_else(|| {
            meta.modified()
                .map(DateTime::<Utc>::from)
                .unwrap_or(DateTime::UNIX_EPOCH)
        });
        if time_in_future(&file_name, time, now, &place) {
            continue;
        }
        files.push(ListedFile {
            has_sidecar: archive::sidecar_path(&path).is_file(),
            file_name,
            path,
            size: meta.len(),
            origin,
            time,
        });
    }
    // Same second: backupd's `-N` counts up, so the higher one is newer.
    let seq = |f: &ListedFile| {
        let name = f
            .file_name
            .strip_prefix(super::SAFETY_PREFIX)
            .unwrap_or(&f.file_name);
        BackupName::parse(name).map_or(0, |n| n.seq)
    };
    files.sort_by(|a, b| {
        (b.time, seq(b))
            .cmp(&(a.time, seq(a)))
            .then_with(|| b.file_name.cmp(&a.file_name))
    });
    Ok(files)
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
                // A dangling link counts as taken, so creating never fails on one.
                fs::symlink_metadata(dir.join(&file)).is_err()
                    && fs::symlink_metadata(archive::partial_path(dir, &file)).is_err()
            })
        })
        .expect("an unbounded range has a free name")
        .with_encryption(encrypted)
}

/// Deletes a backup, then its checksum and manifest (a kill between the
/// two leaves companions without a backup, which [`leftovers`] finds).
pub fn delete(backup: &StoredBackup) -> Result<()> {
    fs::remove_file(&backup.path)
        .map_err(|e| Error::io("delete the old backup", &backup.path, e))?;
    for suffix in COMPANION_SUFFIXES {
        let mut companion = backup.path.as_os_str().to_owned();
        companion.push(suffix);
        let companion = PathBuf::from(companion);
        match fs::remove_file(&companion) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete the companion file", &companion, e)),
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect())
        .map_err(|e| Error::io("list the backup directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};
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
    fn every_backup_file_is_listed_newest_first_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let listed = [
            "sqlite-20260103T000000Z-1.db.gz",
            "sqlite-20260103T000000Z.db.gz.enc",
            "pre-restore-sqlite-20260102T120000Z.db.gz",
            "sqlite-manual-20260102T000000Z.db.gz.enc",
            "pg_dump-manual-20260101_093000.sql.gz",
        ];
        let ignored = [
            "sqlite-20260103T000000Z.db.gz.enc.sha256",
            ".backupd.lock",
            ".encryption_key",
            ".sqlite-20260104T000000Z.db.gz.partial",
            ".pre-restore-sqlite-20260104T000000Z.db.gz.partial",
            "backup-status.json",
            "pg_dump-malformed.sql.gz",
            "notes-manual-x.txt",
        ];
        for name in listed.iter().chain(&ignored) {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("sqlite-manual-link.db"))
            .unwrap();
        fs::create_dir(dir.path().join("pg_dump-manual-dir.sql.gz")).unwrap();
        let all = list_all(dir.path(), SystemClock.now()).unwrap();
        let names: Vec<&str> = all.iter().map(|f| f.file_name.as_str()).collect();
        assert_eq!(names, listed);
        let origins: Vec<Origin> = all.iter().map(|f| f.origin).collect();
        use Origin::*;
        assert_eq!(origins, [Scheduled, Scheduled, Safety, Manual, Manual]);
    }

    #[test]
    fn a_manual_name_without_a_readable_time_is_ordered_by_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("sqlite-manual-latest.db.gz");
        fs::write(&old, b"x").unwrap();
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(then)
            .unwrap();
        fs::write(dir.path().join("sqlite-20250101T000000Z.db.gz"), b"x").unwrap();
        let names: Vec<String> = list_all(dir.path(), SystemClock.now())
            .unwrap()
            .into_iter()
            .map(|f| f.file_name)
            .collect();
        assert_eq!(
            names,
            [
                "sqlite-manual-latest.db.gz",
                "sqlite-20250101T000000Z.db.gz"
            ]
        );
    }

    #[test]
    fn deleting_a_backup_takes_its_checksum_and_manifest_and_listings_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let name = "pg_dump-20200101T000000Z.sql.gz";
        for file in [
            name.to_string(),
            format!("{name}.sha256"),
            format!("{name}.manifest.json"),
        ] {
            fs::write(dir.path().join(file), b"x").unwrap();
        }
        let now = SystemClock.now();
        let listed: Vec<String> = list_all(dir.path(), now)
            .unwrap()
            .into_iter()
            .map(|f| f.file_name)
            .collect();
        assert_eq!(listed, [name]);
        let ours = list_at(dir.path(), now).unwrap();
        assert_eq!(ours.len(), 1);
        delete(&ours[0]).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_our_leftovers_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let ours = [
            ".pg_dump-20200101T000000Z.sql.gz.partial",
            ".sqlite-20200101T000000Z.db.gz.snapshot",
            ".pre-restore-sqlite-20200101T000000Z.db.gz.partial",
            ".pre-restore-sqlite-20200101T000000Z.db.gz.snapshot",
            ".sqlite-20200101T000000Z.db.gz.snapshot-journal",
            ".sqlite-20200101T000000Z.db.gz.snapshot-wal",
            ".sqlite-20200101T000000Z.db.gz.snapshot-shm",
            ".sqlite-20200101T000000Z-1.db.gz.enc.sha256.tmp",
            ".backup-status.json.tmp",
            ".backupd-tmp-Ab12Cd",
            "sqlite-20200101T000000Z-2.db.gz.sha256",
            "pre-restore-pg_dump-20200101T000000Z.sql.gz.sha256",
            "sqlite-20200101T000000Z-2.db.gz.manifest.json",
            "pre-restore-pg_dump-20200101T000000Z.sql.gz.manifest.json",
        ];
        let theirs = [
            ".encryption_key",
            ".other.partial",
            ".other.snapshot-journal",
            ".backupd.lock",
            "pg_dump-20200101T000000Z.sql.gz",
            "pg_dump-20200101T000000Z.sql.gz.sha256",
            "pg_dump-20200101T000000Z.sql.gz.manifest.json",
            "sqlite-manual-20200101.db.gz",
            "sqlite-manual-20200101.db.gz.manifest.json",
            "sqlite-manual-20200101.db.gz.sha256",
            "notes.txt.sha256",
            ".notes.sha256.tmp",
            "backup-status.json",
        ];
        for name in ours.iter().chain(&theirs) {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = remove_leftovers(dir.path()).unwrap();
        assert_eq!(removed.len(), ours.len(), "{removed:?}");
        for name in ours {
            assert!(!dir.path().join(name).exists(), "{name}");
        }
        for name in theirs {
            assert!(dir.path().join(name).exists(), "{name}");
        }
    }
}
