//! Putting a checked SQLite database in place of the live one, under a
//! running app.
//!
//! The app keeps pooled connections open on the live file. A rename swap
//! leaves them on the old, renamed inode: they see the old data and every
//! write fails with "attempt to write a readonly database". So the restore
//! writes *into* the live file through SQLite's online backup API, from a
//! connection to that file: the app's connections stay valid, see the
//! restored rows at their next read, and write on. The live file keeps its
//! inode, mode and owner; the copy is one write transaction of the
//! destination, so a crash leaves the old or the new database, never a mix.
//!
//! Before that, the old content is copied (backup API, one read
//! transaction, so WAL rows are included) into `<db>.pre-restore-<stamp>`,
//! private and fsynced, and [`Evidence`] is recorded: the fingerprints of
//! the old and the new content, by which [`recover`] tells after a crash
//! what the live file actually holds.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Recovered;
use crate::archive::sync_dir;
use crate::error::{Error, Result};

/// How long the copy waits for the app to release a write lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// What a restore is about to do to the live file, recorded in the state
/// file before the first page is written, so recovery can tell the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The copy of the old content, `<db>.pre-restore-<stamp>` (`None`
    /// when there was no live database).
    pub previous: Option<String>,
    /// Fingerprint of the old content ([`fingerprint`]).
    pub previous_fingerprint: Option<String>,
    /// Fingerprint of the checked database, i.e. of the live file once the
    /// copy has committed.
    pub restored_fingerprint: String,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `target.pre-restore-STAMP`: where the old content is kept.
pub fn previous_path(target: &Path, stamp: &str) -> PathBuf {
    with_suffix(target, &format!(".pre-restore-{stamp}"))
}

/// Creates the first free `target.pre-restore-STAMP[-N]`, empty, mode 0600,
/// never following or overwriting anything already there (`O_CREAT|O_EXCL`
/// fails on any existing name, a planted symlink included).
fn create_previous(target: &Path, stamp: &str) -> Result<PathBuf> {
    for seq in 0u32.. {
        let path = if seq == 0 {
            previous_path(target, stamp)
        } else {
            previous_path(target, &format!("{stamp}-{seq}"))
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create the copy of the live database", &path, e)),
        }
    }
    unreachable!("an unbounded range has a free name")
}

fn db_error(target: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::database(
        format!("sqlite:{}", target.display()),
        format!("{what}: {e}"),
    )
}

/// A read-write connection to the live file that waits for the app's locks.
/// Writing into the file (not renaming over it) needs write access to the
/// file itself, and to its folder for the `-wal`/`-shm` files.
fn open_live(target: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        target,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        db_error(
            target,
            "cannot open the live database",
            access_hint(target, e),
        )
    })?;
    conn.busy_timeout(LOCK_WAIT)
        .map_err(|e| db_error(target, "cannot set a busy timeout", e))?;
    // Opening is lazy: read the schema now, so a file we may not write is
    // reported here, with the hint, before anything is copied.
    let read_only = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|e| access_hint(target, e))
        .and_then(|()| {
            conn.is_readonly(rusqlite::MAIN_DB)
                .map_err(|e| access_hint(target, e))
        })
        .map_err(|e| db_error(target, "cannot read the live database", e))?;
    if read_only {
        return Err(db_error(
            target,
            "cannot write the live database",
            access_hint(target, "it opened read-only"),
        ));
    }
    Ok(conn)
}

/// `e`, plus who owns the file, its mode and who backupd runs as.
fn access_hint(target: &Path, e: impl std::fmt::Display) -> String {
    let file = crate::files::owner_and_mode(target);
    let (uid, gid) = crate::files::running_as();
    format!(
        "{e} ({file}; backupd runs as uid {uid} gid {gid} and must read and write the file, \
         and create its -wal/-shm files in its folder)"
    )
}

/// The live file is missing (a first start): create it empty with its
/// folder's owner and group and the folder's mode without execute or world
/// bits (0750 → 0640, 0700 → 0600, 0770 → 0660), so the app can open it.
fn create_live(target: &Path) -> Result<()> {
    let folder = folder_of(target);
    let meta = fs::metadata(folder).map_err(|e| Error::io("inspect the folder of", target, e))?;
    let mode = meta.permissions().mode() & 0o770 & !0o111;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)
        .map_err(|e| Error::io("create the live database", target, e))?;
    // The umask may have taken bits away.
    let _ = file.set_permissions(fs::Permissions::from_mode(mode));
    // Only root can give the file away; as the folder's owner it is ours anyway.
    let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
    file.sync_all()
        .map_err(|e| Error::io("fsync the live database", target, e))?;
    sync_dir(folder)
}

/// Copies all of `from` into `to` in one step: one read transaction on the
/// source, one write transaction on the destination. Waits (bounded) while
/// another connection holds a lock.
fn copy_all(from: &Connection, to: &mut Connection, what: &Path) -> Result<()> {
    let backup =
        Backup::new(from, to).map_err(|e| db_error(what, "cannot start the online copy", e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match backup
            .step(-1)
            .map_err(|e| db_error(what, "the online copy failed", e))?
        {
            StepResult::Done => return Ok(()),
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            StepResult::Busy | StepResult::Locked => {
                return Err(db_error(
                    what,
                    "the online copy gave up",
                    format!(
                        "another connection (the app?) held the database locked for {}s",
                        LOCK_WAIT.as_secs()
                    ),
                ));
            }
            _ => continue,
        }
    }
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", path, e))
}

fn pragma_i64(conn: &Connection, pragma: &str, db: &Path) -> Result<i64> {
    conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        .map_err(|e| db_error(db, &format!("PRAGMA {pragma}"), e))
}

/// Readies the restore of `checked` (a private copy that passed
/// integrity_check; this may rewrite it) into `target`: keeps the old
/// content as `target.pre-restore-STAMP`, makes the copy's page size the
/// live one's (a WAL database cannot change its page size), and returns the
/// evidence to record before [`apply`]. Blocking.
pub fn prepare(checked: &Path, target: &Path, stamp: &str) -> Result<Evidence> {
    let exists = match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() => true,
        Ok(_) => {
            return Err(db_error(
                target,
                "cannot restore",
                "the live database path is not a regular file",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("inspect the live database", target, e)),
    };
    let source = Connection::open_with_flags(checked, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| db_error(checked, "cannot open the checked copy", e))?;
    // A rollback-journal source: the copy then carries no WAL flag into a
    // live file in rollback mode, and a WAL destination stays WAL.
    let _: String = source
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(|e| {
            db_error(
                checked,
                "cannot set the journal mode of the checked copy",
                e,
            )
        })?;

    let (previous, previous_fingerprint) = if exists {
        let live = open_live(target)?;
        let live_page = pragma_i64(&live, "page_size", target)?;
        let wal = live
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map_err(|e| db_error(target, "PRAGMA journal_mode", e))?
            .eq_ignore_ascii_case("wal");
        if wal && pragma_i64(&source, "page_size", checked)? != live_page {
            source
                .execute_batch(&format!("PRAGMA page_size = {live_page}; VACUUM;"))
                .map_err(|e| {
                    db_error(
                        checked,
                        &format!(
                            "cannot rewrite the checked copy with the live page size {live_page}"
                        ),
                        e,
                    )
                })?;
            tracing::info!(
                page_size = live_page,
                "rewrote the checked copy with the live database's page size"
            );
        }
        let path = create_previous(target, stamp)?;
        let keep = || -> Result<String> {
            let mut copy = Connection::open(&path)
                .map_err(|e| db_error(&path, "cannot open the copy of the live database", e))?;
            copy_all(&live, &mut copy, target)?;
            let print = fingerprint(&copy).map_err(|e| db_error(&path, "fingerprint", e))?;
            drop(copy);
            sync_file(&path)?;
            sync_dir(folder_of(&path))?;
            Ok(print)
        };
        match keep() {
            Ok(print) => (Some(path), Some(print)),
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        }
    } else {
        (None, None)
    };
    let restored_fingerprint =
        fingerprint(&source).map_err(|e| db_error(checked, "fingerprint", e))?;
    Ok(Evidence {
        previous: previous.map(|p| p.display().to_string()),
        previous_fingerprint,
        restored_fingerprint,
    })
}

/// Copies `checked` into the live file (one write transaction), then checks
/// the live file. If that check fails the old content is copied back.
/// Blocking.
pub fn apply(checked: &Path, target: &Path, evidence: &Evidence) -> Result<()> {
    if !target.exists() {
        create_live(target)?;
    }
    let source = Connection::open_with_flags(checked, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| db_error(checked, "cannot open the checked copy", e))?;
    let mut live = open_live(target)?;
    copy_all(&source, &mut live, target)?;
    match integrity(&live) {
        Ok(()) => Ok(()),
        Err(reason) => {
            let back = match &evidence.previous {
                Some(previous) => {
                    Connection::open_with_flags(previous, OpenFlags::SQLITE_OPEN_READ_ONLY)
                        .map_err(|e| db_error(Path::new(previous), "cannot open", e))
                        .and_then(|old| copy_all(&old, &mut live, target))
                        .map(|()| format!("its previous content was copied back from {previous}"))
                }
                None => Ok("there was no previous content".into()),
            };
            Err(db_error(
                target,
                "the restored live database fails integrity_check",
                format!(
                    "{reason}; {}",
                    back.unwrap_or_else(|e| format!(
                        "copying the previous content back failed too: {e}"
                    ))
                ),
            ))
        }
    }
}

fn integrity(conn: &Connection) -> std::result::Result<(), crate::db::sqlite::Unsound> {
    crate::db::sqlite::integrity_of(conn, "integrity_check")
}

/// A SHA-256 over the logical content: the schema (`sqlite_master`),
/// `user_version`, `application_id`, and every row of every table in key
/// order. Equal for a database and its online copy (whose page 1 differs
/// in the schema cookie and change counter); streams, so memory stays flat.
pub fn fingerprint(conn: &Connection) -> rusqlite::Result<String> {
    let mut hash = Sha256::new();
    let mut feed = |tag: u8, bytes: &[u8]| {
        hash.update([tag]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    for pragma in ["user_version", "application_id"] {
        let v: i64 = conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?;
        feed(b'p', &v.to_le_bytes());
    }
    let mut tables = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (kind, name, table, sql): (String, String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            for part in [&kind, &name, &table, &sql] {
                feed(b's', part.as_bytes());
            }
            let virtual_table = sql
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("CREATE VIRTUAL");
            if kind == "table" && !virtual_table {
                tables.push(name);
            }
        }
    }
    for table in tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        feed(b't', table.as_bytes());
        // Key order: rowid, or for WITHOUT ROWID tables every column.
        let mut stmt = match conn.prepare(&format!("SELECT * FROM {quoted} ORDER BY rowid")) {
            Ok(stmt) => stmt,
            Err(_) => {
                let columns = conn
                    .prepare(&format!("SELECT * FROM {quoted}"))?
                    .column_count();
                let order: Vec<String> = (1..=columns.max(1)).map(|i| i.to_string()).collect();
                conn.prepare(&format!(
                    "SELECT * FROM {quoted} ORDER BY {}",
                    order.join(", ")
                ))?
            }
        };
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            feed(b'r', &[]);
            for i in 0..columns {
                match row.get_ref(i)? {
                    ValueRef::Null => feed(b'n', &[]),
                    ValueRef::Integer(v) => feed(b'i', &v.to_le_bytes()),
                    ValueRef::Real(v) => feed(b'f', &v.to_bits().to_le_bytes()),
                    ValueRef::Text(v) => feed(b'x', v),
                    ValueRef::Blob(v) => feed(b'b', v),
                }
            }
        }
    }
    Ok(hex::encode(hash.finalize()))
}

/// Crash recovery: what does the live file hold? With `evidence` (recorded
/// before the copy began) the live content's fingerprint answers it.
/// Without, the copy had not begun. A live file missing beside a
/// `.pre-restore-STAMP` file is what an older backupd's rename swap left:
/// that file is moved back. Blocking.
pub fn recover(target: &Path, stamp: &str, evidence: Option<&Evidence>) -> Result<Recovered> {
    let legacy = previous_path(target, stamp);
    if !target.exists() && legacy.is_file() && evidence.is_none() {
        fs::rename(&legacy, target)
            .map_err(|e| Error::io("move the previous database back to", target, e))?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = fs::rename(with_suffix(&legacy, suffix), with_suffix(target, suffix));
        }
        sync_dir(folder_of(target))?;
        return Ok(Recovered::NotRestored(format!(
            "moved {} back to {}",
            legacy.display(),
            target.display()
        )));
    }
    let Some(evidence) = evidence else {
        return Ok(Recovered::NotRestored(format!(
            "the restore stopped before it began copying into {}; the live database was not written",
            target.display()
        )));
    };
    let kept = match &evidence.previous {
        Some(previous) => format!("the previous content is kept in {previous}"),
        None => "there was no previous database".to_string(),
    };
    if !target.exists() {
        return Ok(Recovered::NotRestored(format!(
            "{} does not exist: nothing was restored; {kept}",
            target.display()
        )));
    }
    // Opening read-write lets SQLite roll back a hot journal of a killed
    // copy before anything is read.
    let live = open_live(target)?;
    integrity(&live).map_err(|reason| {
        db_error(
            target,
            "the live database fails integrity_check after the crash",
            reason,
        )
    })?;
    let now = fingerprint(&live).map_err(|e| db_error(target, "fingerprint", e))?;
    let short = |print: &str| print.chars().take(12).collect::<String>();
    Ok(if now == evidence.restored_fingerprint {
        Recovered::Finished(format!(
            "the restore had finished: {} holds the restored database (content {}); {kept}",
            target.display(),
            short(&now)
        ))
    } else if evidence.previous_fingerprint.as_deref() == Some(now.as_str()) {
        Recovered::NotRestored(format!(
            "the copy had not committed: {} holds its previous content (content {}), unchanged; {kept}",
            target.display(),
            short(&now)
        ))
    } else {
        Recovered::Unknown(format!(
            "{} matches neither the restored database nor its previous content (written since the crash?); {kept}",
            target.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(path: &Path, rows: i64, wal: bool, page_size: i64) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!("PRAGMA page_size = {page_size};"))
            .unwrap();
        if wal {
            let _: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .unwrap();
        }
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        for i in 0..rows {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])
                .unwrap();
        }
        conn
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn an_open_wal_connection_sees_the_restore_and_writes_on() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        let app = db(&target, 3, true, 4096);
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let inode = fs::metadata(&target).unwrap().ino();
        let checked = dir.path().join("checked.db");
        drop(db(&checked, 7, false, 1024));

        let evidence = prepare(&checked, &target, "X").unwrap();
        apply(&checked, &target, &evidence).unwrap();
        assert_eq!(count(&app), 7);
        app.execute("INSERT INTO t (v) VALUES ('after')", [])
            .unwrap();
        assert_eq!(count(&app), 8);
        let meta = fs::metadata(&target).unwrap();
        assert_eq!((meta.ino(), meta.mode() & 0o777), (inode, 0o600));
        let previous = PathBuf::from(evidence.previous.as_ref().unwrap());
        assert_eq!(previous, previous_path(&target, "X"));
        assert_eq!(fs::metadata(&previous).unwrap().mode() & 0o777, 0o600);
        assert_eq!(count(&Connection::open(&previous).unwrap()), 3);

        // A second restore in the same second never overwrites the copy.
        let again = prepare(&checked, &target, "X").unwrap();
        assert_eq!(
            again.previous.unwrap(),
            previous_path(&target, "X-1").display().to_string()
        );
        assert_eq!(count(&Connection::open(&previous).unwrap()), 3);
    }

    #[test]
    fn a_rollback_journal_live_file_stays_in_its_mode_whatever_the_copy_was() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        let app = db(&target, 3, false, 4096);
        let checked = dir.path().join("checked.db");
        drop(db(&checked, 5, true, 1024));
        let evidence = prepare(&checked, &target, "X").unwrap();
        apply(&checked, &target, &evidence).unwrap();
        assert_eq!(count(&app), 5);
        app.execute("INSERT INTO t (v) VALUES ('after')", [])
            .unwrap();
        let mode: String = app
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        assert!(!with_suffix(&target, "-wal").exists());
    }

    #[test]
    fn recovery_tells_which_content_the_live_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        let app = db(&target, 3, true, 4096);
        let checked = dir.path().join("checked.db");
        drop(db(&checked, 7, false, 4096));
        let evidence = prepare(&checked, &target, "X").unwrap();
        assert!(matches!(
            recover(&target, "X", Some(&evidence)).unwrap(),
            Recovered::NotRestored(_)
        ));
        apply(&checked, &target, &evidence).unwrap();
        assert!(matches!(
            recover(&target, "X", Some(&evidence)).unwrap(),
            Recovered::Finished(_)
        ));
        app.execute("INSERT INTO t (v) VALUES ('after')", [])
            .unwrap();
        assert!(matches!(
            recover(&target, "X", Some(&evidence)).unwrap(),
            Recovered::Unknown(_)
        ));
        assert!(matches!(
            recover(&target, "Y", None).unwrap(),
            Recovered::NotRestored(_)
        ));
    }

    #[test]
    fn a_missing_live_database_is_created_with_its_folders_mode() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o750)).unwrap();
        let target = dir.path().join("app.db");
        let checked = dir.path().join("checked.db");
        drop(db(&checked, 2, false, 4096));
        let evidence = prepare(&checked, &target, "X").unwrap();
        assert_eq!(evidence.previous, None);
        apply(&checked, &target, &evidence).unwrap();
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o640);
        assert_eq!(count(&Connection::open(&target).unwrap()), 2);
    }

    #[test]
    fn recovery_puts_back_what_an_older_rename_swap_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        fs::write(previous_path(&target, "X"), b"old").unwrap();
        recover(&target, "X", None).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }
}
