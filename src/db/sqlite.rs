//! SQLite backups: a consistent snapshot taken with `VACUUM INTO`, checked,
//! then streamed through the archive pipeline.
//!
//! Copying the file would lose commits that still sit in the `-wal` file, and
//! the online backup API restarts whenever another connection writes (with no
//! deadline). `VACUUM INTO` copies in one read transaction, so it sees exactly
//! the committed state at its start while writers carry on, and it can be
//! interrupted from another thread for the deadline and for shutdown.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::{Dumped, SqliteTarget};
use crate::archive::BackupFile;
use crate::error::{Error, Result};
use crate::manifest::DatabaseInfo;

/// Suffix of the uncompressed snapshot kept beside a backup while it is made.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";

const READ_CHUNK: usize = 1 << 20;

/// Snapshots `target` into `file` (a blocking call: run it off the runtime),
/// counting every table's rows in the snapshot before it is compressed.
pub fn backup(
    target: &SqliteTarget,
    mut file: BackupFile,
    cancel: &CancellationToken,
    timeout: Duration,
) -> Result<Dumped> {
    let db = format!("sqlite:{}", target.path.display());
    let fail = |reason: String| Error::database(db.clone(), reason);
    match fs::metadata(&target.path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(fail("the path is not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail("the SQLite database file does not exist".into()));
        }
        Err(e) => return Err(fail(format!("cannot read the database file: {e}"))),
    }

    let snapshot = Snapshot::path_for(file.final_path());
    // A stale snapshot or a link planted at the name goes (the link itself,
    // never its target); VACUUM INTO then fills the empty private file made
    // here, which it accepts, instead of creating one under the umask.
    let _ = fs::remove_file(&snapshot.0);
    let mut reader = crate::files::create_new(&snapshot.0)
        .map_err(|e| Error::io("create the snapshot file", &snapshot.0, e))?;
    // SQLite opens files by name, and whoever can write BACKUP_DIR could
    // swap the name for a link between our open and SQLite's, and so have
    // the whole database written where they like. /proc/self/fd/N names
    // the very file held open here, whatever happens to its name.
    let (sqlite_path, by_name) = match held_path(&reader) {
        Some(path) => (path, false),
        None => (snapshot.0.clone(), true),
    };
    let deadline = Instant::now() + timeout;
    take_snapshot(&target.path, &sqlite_path, cancel, deadline).map_err(|reason| match reason {
        SnapshotError::Cancelled => Error::Cancelled,
        SnapshotError::Failed(reason) => fail(reason),
    })?;
    check_integrity(&sqlite_path, "quick_check")
        .map_err(|reason| fail(format!("the snapshot failed PRAGMA quick_check: {reason}")))?;
    if by_name {
        // Without /proc SQLite wrote and checked the file by its name: what
        // is streamed is read from the descriptor made above, and only if
        // the name still leads to it.
        still_the_same_file(&reader, &snapshot.0)?;
    }
    let tables = match crate::manifest::sqlite_table_counts(&sqlite_path) {
        Ok(tables) => Some(tables),
        Err(e) => {
            tracing::warn!(error = %e, "the rows of this snapshot could not be counted; it gets no manifest");
            None
        }
    };

    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::io("read the snapshot", &snapshot.0, e))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
    }
    drop(reader);
    drop(snapshot);
    Ok(Dumped {
        file,
        database: DatabaseInfo {
            kind: "sqlite".into(),
            name: crate::archive::file_name(&target.path),
        },
        server_version: Some(rusqlite::version().to_string()),
        pg_dump_version: None,
        tables,
    })
}

/// A path that names the open `file` itself (its `/proc/self/fd` link),
/// or `None` where `/proc` is not mounted.
fn held_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    fs::symlink_metadata(&path).ok().map(|_| path)
}

/// Fails unless `path` is, right now, the regular file open as `file`.
fn still_the_same_file(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let held = file
        .metadata()
        .map_err(|e| Error::io("inspect the snapshot", path, e))?;
    let named =
        fs::symlink_metadata(path).map_err(|e| Error::io("inspect the snapshot", path, e))?;
    if named.is_file() && named.dev() == held.dev() && named.ino() == held.ino() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "the snapshot {} was replaced while SQLite wrote it; the backup was abandoned",
            path.display()
        )))
    }
}

/// The uncompressed snapshot file, removed when dropped.
struct Snapshot(PathBuf);

impl Snapshot {
    fn path_for(backup: &Path) -> Self {
        let dir = backup.parent().unwrap_or(Path::new("."));
        let name = crate::archive::file_name(backup);
        Snapshot(dir.join(format!(".{name}{SNAPSHOT_SUFFIX}")))
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

enum SnapshotError {
    Cancelled,
    Failed(String),
}

fn take_snapshot(
    source: &Path,
    snapshot: &Path,
    cancel: &CancellationToken,
    deadline: Instant,
) -> std::result::Result<(), SnapshotError> {
    // Read-only: backupd must never change the app's database, not even by a
    // checkpoint when its connection closes.
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| SnapshotError::Failed(format!("cannot open the database: {e}")))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| SnapshotError::Failed(e.to_string()))?;

    let interrupt = conn.get_interrupt_handle();
    let finished = Arc::new(AtomicBool::new(false));
    let why_interrupted = Arc::new(std::sync::Mutex::new(None::<SnapshotError>));
    let watchdog = {
        let finished = Arc::clone(&finished);
        let why = Arc::clone(&why_interrupted);
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            while !finished.load(Ordering::Acquire) {
                let reason = if cancel.is_cancelled() {
                    Some(SnapshotError::Cancelled)
                } else if Instant::now() >= deadline {
                    Some(SnapshotError::Failed(
                        "the snapshot did not finish within BACKUP_TIMEOUT_SECONDS".into(),
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                    interrupt.interrupt();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let result = conn.execute("VACUUM INTO ?1", [snapshot.to_string_lossy().as_ref()]);
    finished.store(true, Ordering::Release);
    let _ = watchdog.join();
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(why_interrupted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| SnapshotError::Failed(format!("cannot take a snapshot: {e}")))),
    }
}

/// Why a database is not sound; its text is what operators read after
/// "fails integrity_check: ".
#[derive(Debug, thiserror::Error)]
pub enum Unsound {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Query(rusqlite::Error),
    /// SQLite's own findings (the first five).
    #[error("{}", .0.join("; "))]
    Findings(Vec<String>),
}

/// Runs `PRAGMA quick_check` or `integrity_check`.
pub fn check_integrity(db: &Path, pragma: &str) -> std::result::Result<(), Unsound> {
    let conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            Unsound::Open {
                path: db.to_path_buf(),
                source,
            }
        })?;
    integrity_of(&conn, pragma)
}

/// [`check_integrity`] on an open connection.
pub fn integrity_of(conn: &Connection, pragma: &str) -> std::result::Result<(), Unsound> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA {pragma}"))
        .map_err(Unsound::Query)?;
    let findings: Vec<String> = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(Unsound::Query)?;
    if findings == ["ok"] {
        Ok(())
    } else {
        Err(Unsound::Findings(findings.into_iter().take(5).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_goes_into_the_held_file_whatever_happens_to_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("app.db");
        {
            let conn = Connection::open(&source).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
            )
            .unwrap();
        }
        let name = dir.path().join(".snap");
        let held = crate::files::create_new(&name).unwrap();
        // Someone who can write the folder swaps the name for a link.
        fs::rename(&name, dir.path().join("moved")).unwrap();
        let victim = dir.path().join("victim");
        std::os::unix::fs::symlink(&victim, &name).unwrap();

        let path = held_path(&held).expect("/proc is mounted here");
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(take_snapshot(&source, &path, &CancellationToken::new(), deadline).is_ok());
        check_integrity(&path, "quick_check").unwrap();
        assert!(!victim.exists(), "SQLite followed the planted link");
        assert!(
            held.metadata().unwrap().len() > 0,
            "the held file got the snapshot"
        );
        let copy = Connection::open(&path).unwrap();
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }
}
