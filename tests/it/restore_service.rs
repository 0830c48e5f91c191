//! The restore service end to end, through the built binary and without
//! Docker containers: `backupd restore` watching a folder (and `backupd
//! restore --file`) restoring real SQLite files and a real PostgreSQL
//! cluster. Bad files go to the failed folder with their reason and never
//! touch the live database; the newest of several files wins; a file still
//! being copied is restored once, complete; an interrupted restore is
//! recovered at start-up.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rusqlite::Connection;
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long to wait for the service to act on a file (a guard against
/// hanging, not a timed assertion).
const GIVE_UP: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(100);

/// Every key of a history entry in the state file.
const HISTORY_KEYS: &[&str] = &[
    "file",
    "sha256",
    "result",
    "error",
    "started_at",
    "finished_at",
    "duration_seconds",
    "containers_stopped",
    "previous_database",
    "safety_backup",
];

/// One stack in a temporary folder: `app/app.db` (SQLite) or a PostgreSQL
/// URL, `backups/`, `restore/{incoming,failed,state}`.
struct Stack {
    work: TempDir,
    url: String,
    /// SQLite: the live database file (`<tmp>/app/app.db`).
    db: PathBuf,
    backups: PathBuf,
    incoming: PathBuf,
    failed: PathBuf,
    state: PathBuf,
    pg_bin: Option<PathBuf>,
}

impl Stack {
    fn new(url: String, pg_bin: Option<PathBuf>, work: TempDir) -> Stack {
        let root = work.path().to_path_buf();
        let incoming = root.join("restore/incoming");
        fs::create_dir_all(&incoming).unwrap();
        Stack {
            url,
            db: root.join("app/app.db"),
            backups: root.join("backups"),
            failed: root.join("restore/failed"),
            state: root.join("restore/state/restore-state.json"),
            incoming,
            pg_bin,
            work,
        }
    }

    /// A SQLite app whose database `<tmp>/app/app.db` is made by `create`.
    fn sqlite(create: impl FnOnce(&Path)) -> Stack {
        let work = temp_dir();
        let db = work.path().join("app/app.db");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        create(&db);
        Stack::new(sqlite_url(&db), None, work)
    }

    /// The app's database in `cluster`.
    fn postgres(cluster: &PgCluster) -> Stack {
        Stack::new(cluster.app_url(), Some(cluster.bin.clone()), temp_dir())
    }

    fn app_dir(&self) -> PathBuf {
        self.db.parent().unwrap().to_path_buf()
    }

    /// backupd configured for this stack's restore service.
    fn backupd(&self) -> Backupd {
        let mut b = Backupd::for_database(&self.url, &self.backups)
            .env("RESTORE_WATCH_DIR", &self.incoming)
            .env("RESTORE_STATE_FILE", &self.state)
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1");
        if let Some(bin) = &self.pg_bin {
            b = b.path_prepend(bin);
        } else {
            b = b.env("RESTORE_SQLITE_PATH", &self.db);
        }
        b
    }

    /// Starts `backupd restore` (as configured by `b`) and waits until it
    /// watches the folder.
    fn start(&self, b: Backupd) -> Daemon {
        let mut service = b.background(&["restore"]);
        let watching =
            service.wait_for_log(Duration::from_secs(20), |log| log.contains("watching"));
        if !watching {
            let state = if service.is_running() {
                "still running"
            } else {
                "exited"
            };
            panic!(
                "`backupd restore` ({state}) never logged that it watches the folder:\n{}",
                service.log()
            );
        }
        service
    }

    /// `backupd once` of the database at `url` into a scratch folder (not
    /// the stack's BACKUP_DIR); returns the new backup.
    fn backup_of_url(&self, url: &str) -> PathBuf {
        let dir = self.work.path().join("made");
        let mut b = Backupd::for_database(url, &dir);
        if let Some(bin) = &self.pg_bin {
            b = b.path_prepend(bin);
        }
        b.once().backup_path()
    }

    /// A backup of a fresh SQLite database of `rows` notes (table `notes`).
    fn small_backup(&self, rows: u32) -> PathBuf {
        let source = self.work.path().join(format!("sources/small-{rows}.db"));
        fs::create_dir_all(source.parent().unwrap()).unwrap();
        if !source.exists() {
            sqlite_small(&source, rows);
        }
        self.backup_of_url(&sqlite_url(&source))
    }

    /// Copies `src` to a staging folder beside the watch folder as `name`
    /// (with `mtime` when given); [`Stack::put`] moves it in atomically.
    fn stage(&self, src: &Path, name: &str, mtime: Option<SystemTime>) -> PathBuf {
        let staging = self.work.path().join("staging");
        fs::create_dir_all(&staging).unwrap();
        let staged = staging.join(name);
        fs::copy(src, &staged).unwrap();
        if let Some(t) = mtime {
            fs::File::options()
                .write(true)
                .open(&staged)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        staged
    }

    /// Renames a staged file into the watch folder; returns its new path.
    fn put(&self, staged: &Path) -> PathBuf {
        let dest = self.incoming.join(staged.file_name().unwrap());
        fs::rename(staged, &dest).unwrap();
        dest
    }

    /// Drops a copy of `src` into the watch folder as `name`, complete.
    fn drop_file(&self, src: &Path, name: &str) -> PathBuf {
        let staged = self.stage(src, name, None);
        self.put(&staged)
    }

    /// The state file, parsed; `None` while it does not exist (or cannot be
    /// parsed, which the next poll retries).
    fn state_json(&self) -> Option<Value> {
        let text = fs::read_to_string(&self.state).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn history(&self) -> Vec<Value> {
        self.state_json()
            .and_then(|s| s["history"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The newest history entry for the file `name`.
    fn entry(&self, name: &str) -> Option<Value> {
        self.history()
            .into_iter()
            .find(|e| e["file"].as_str() == Some(name))
    }

    fn in_watch_folder(&self, name: &str) -> bool {
        fs::symlink_metadata(self.incoming.join(name)).is_ok()
    }

    /// Everything a failed assertion should show.
    fn context(&self, service: &Daemon) -> String {
        format!(
            "state file:\n{}\nwatch folder: {:?}\nfailed folder: {:?}\nbackups: {:?}\napp folder: {:?}\nservice log:\n{}",
            fs::read_to_string(&self.state).unwrap_or_else(|e| format!("<{e}>")),
            dir_names(&self.incoming),
            dir_names(&self.failed),
            dir_names(&self.backups),
            dir_names(&self.app_dir()),
            service.log()
        )
    }

    /// Polls `check` until it answers; panics with the whole context after
    /// [`GIVE_UP`] or when the service exits.
    fn wait<T>(
        &self,
        service: &mut Daemon,
        what: &str,
        mut check: impl FnMut(&Stack) -> Option<T>,
    ) -> T {
        let mut exited = false;
        let found = poll(STEP, GIVE_UP, || {
            if let Some(v) = check(self) {
                return Some(Some(v));
            }
            if !service.is_running() {
                exited = true;
                return Some(None);
            }
            None
        });
        match found.flatten() {
            Some(v) => v,
            None => panic!(
                "waiting for {what}: {}\n{}",
                if exited {
                    "the service exited"
                } else {
                    "gave up"
                },
                self.context(service)
            ),
        }
    }

    /// Waits until the service has recorded `name` and it has left the
    /// watch folder; returns its history entry.
    fn wait_done(&self, service: &mut Daemon, name: &str) -> Value {
        self.wait(service, &format!("`{name}` to be handled"), |s| {
            let entry = s.entry(name)?;
            (!s.in_watch_folder(name)).then_some(entry)
        })
    }

    /// Waits for `name` to be restored and checks the history entry.
    fn wait_restored(&self, service: &mut Daemon, name: &str) -> Value {
        let entry = self.wait_done(service, name);
        assert_eq!(
            entry["result"].as_str(),
            Some("restored"),
            "`{name}` was not restored:\n{}",
            self.context(service)
        );
        assert_history_keys(&entry);
        assert!(entry["error"].is_null(), "error after a restore: {entry:#}");
        entry
    }

    /// Waits for `name` to land in the failed folder with its reason and
    /// checks both; returns (history entry, reason JSON).
    fn wait_failed(&self, service: &mut Daemon, name: &str, results: &[&str]) -> (Value, Value) {
        let reason_file = self.failed.join(format!("{name}.reason.json"));
        let entry = self.wait(service, &format!("`{name}` in the failed folder"), |s| {
            let entry = s.entry(name)?;
            if s.in_watch_folder(name) || !reason_file.is_file() {
                return None;
            }
            Some(entry)
        });
        let ctx = self.context(service);
        assert_history_keys(&entry);
        assert!(
            entry["result"]
                .as_str()
                .is_some_and(|r| results.contains(&r)),
            "`{name}`: result should be one of {results:?}: {entry:#}\n{ctx}"
        );
        assert!(
            entry["error"].as_str().is_some_and(|e| !e.is_empty()),
            "`{name}`: no error recorded: {entry:#}"
        );
        assert!(
            fs::symlink_metadata(self.failed.join(name)).is_ok(),
            "`{name}` is not in the failed folder:\n{ctx}"
        );
        let text = fs::read_to_string(&reason_file).unwrap();
        let reason: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", reason_file.display()));
        assert_eq!(reason["file"].as_str(), Some(name), "{reason:#}");
        assert_eq!(
            reason["original_path"].as_str(),
            Some(self.incoming.join(name).to_str().unwrap()),
            "{reason:#}"
        );
        assert!(
            reason["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "no reason: {reason:#}"
        );
        assert!(
            reason["failed_at"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "failed_at is not a timestamp: {reason:#}"
        );
        (entry, reason)
    }

    /// The app folder's entries with the SHA-256 of each: equal before and
    /// after means the live database was not touched.
    fn app_fingerprint(&self) -> Vec<(String, String)> {
        dir_names(&self.app_dir())
            .into_iter()
            .map(|n| {
                let sum = sha256_file(&self.app_dir().join(&n));
                (n, sum)
            })
            .collect()
    }

    /// Backups (safety backups included) in BACKUP_DIR.
    fn safety_backups(&self, prefix: &str) -> Vec<String> {
        dir_names(&self.backups)
            .into_iter()
            .filter(|n| n.starts_with(prefix) && !is_companion(n))
            .collect()
    }
}

fn assert_history_keys(entry: &Value) {
    for key in HISTORY_KEYS {
        assert!(
            entry.get(key).is_some(),
            "history entry lacks `{key}`: {entry:#}"
        );
    }
}

/// Writes one test file at the given path.
type MakeFile = Box<dyn Fn(&Path)>;

/// True when `s` is a `YYYYMMDDTHHMMSS.ffffffZ` stamp (microseconds, so
/// two restores within a second get different names).
fn is_stamp(s: &str) -> bool {
    s.len() == 23 && chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S%.6fZ").is_ok()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Every row of every table of the SQLite database at `path`.
fn contents(path: &Path) -> BTreeMap<String, Vec<String>> {
    assert!(path.is_file(), "{} does not exist", path.display());
    let conn = Connection::open(path).unwrap();
    sqlite_contents(&conn)
}

fn notes_count(path: &Path) -> i64 {
    assert!(path.is_file(), "{} does not exist", path.display());
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap()
}

fn mtime_seconds(path: &Path) -> f64 {
    fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs `backupd verify FILE` and asserts it accepts the file.
fn assert_verifies(path: &Path) {
    Backupd::new()
        .run(&["verify", path.to_str().unwrap()])
        .assert_code(0);
}

// ---------------------------------------------------------------- SQLite

#[test]
fn sqlite_restore_over_a_live_wal_database_keeps_the_old_content_with_its_wal_rows() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_fixture(db, 1, true));
    let backup = stack.backup_of_url(&stack.url);
    let expected = {
        let conn = open_sqlite_backup(&backup, &stack.work.path().join("expected.db"));
        sqlite_contents(&conn)
    };

    // The app writes rows that so far live only in the -wal file, and
    // closes without a checkpoint: the WAL holds rows the backup lacks.
    let live_before = {
        let writer = Connection::open(&stack.db).unwrap();
        let autocheckpoint: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint = 0", [], |r| r.get(0))
            .unwrap();
        assert_eq!(autocheckpoint, 0);
        writer
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .unwrap();
        for seq in 0..50 {
            writer
                .execute(
                    "INSERT INTO audit_log (action, entity_type, entity_id, message) \
                     VALUES ('restore.test', 'marker', ?1, 'only in the WAL')",
                    [seq],
                )
                .unwrap();
        }
        let live = sqlite_contents(&writer);
        writer.close().map_err(|(_, e)| e).unwrap();
        live
    };
    let wal = with_suffix(&stack.db, "-wal");
    assert!(
        fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the app's commits should be in {}, which is missing or empty",
        wal.display()
    );
    assert_ne!(
        live_before["audit_log"].len(),
        expected["audit_log"].len(),
        "the live database should differ from the backup"
    );

    let name = file_name(&backup);
    let sha = sha256_file(&backup);
    let staged = stack.stage(&backup, &name, None);
    let mtime = mtime_seconds(&staged);
    let mut service = stack.start(stack.backupd());
    let dropped = stack.put(&staged);
    let entry = stack.wait_restored(&mut service, &name);
    let ctx = stack.context(&service);

    // The old content, WAL rows included, beside the live file.
    let previous: Vec<String> = dir_names(&stack.app_dir())
        .into_iter()
        .filter(|n| n.starts_with("app.db.pre-restore-"))
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm") && !n.ends_with("-journal"))
        .collect();
    assert_eq!(previous.len(), 1, "one previous database expected:\n{ctx}");
    let stamp = previous[0].strip_prefix("app.db.pre-restore-").unwrap();
    assert!(is_stamp(stamp), "`{}`: bad stamp\n{ctx}", previous[0]);
    let previous = stack.app_dir().join(&previous[0]);
    // A complete copy on its own (the WAL's rows are in it), private.
    assert!(
        !with_suffix(&previous, "-wal").exists(),
        "the previous copy should need no -wal:\n{ctx}"
    );
    assert_eq!(
        fs::metadata(&previous).unwrap().permissions().mode() & 0o777,
        0o600,
        "{ctx}"
    );
    assert_eq!(
        entry["previous_database"].as_str(),
        Some(previous.to_str().unwrap()),
        "{entry:#}"
    );
    assert_eq!(entry["sha256"].as_str(), Some(sha.as_str()), "{entry:#}");
    assert_eq!(entry["containers_stopped"], json!([]), "{entry:#}");
    assert!(
        entry["duration_seconds"].is_number(),
        "duration_seconds: {entry:#}"
    );

    // The safety backup holds the live database as it was (WAL rows too).
    let safety = stack.safety_backups("pre-restore-sqlite-");
    assert_eq!(safety.len(), 1, "one safety backup expected:\n{ctx}");
    assert!(safety[0].ends_with(".db.gz"), "{safety:?}");
    let safety = stack.backups.join(&safety[0]);
    assert_eq!(
        entry["safety_backup"].as_str(),
        Some(safety.to_str().unwrap()),
        "{entry:#}"
    );
    assert_verifies(&safety);
    let saved = open_sqlite_backup(&safety, &stack.work.path().join("safety.db"));
    assert_same_sqlite_contents(&live_before, &sqlite_contents(&saved));

    // State: idle, last_processed set; the file is gone.
    let state = stack.state_json().unwrap();
    assert!(state["in_progress"].is_null(), "{state:#}");
    let last = &state["last_processed"];
    assert_eq!(
        last["path"].as_str(),
        Some(dropped.to_str().unwrap()),
        "{state:#}"
    );
    assert!(
        last["mtime"]
            .as_f64()
            .is_some_and(|m| (m - mtime).abs() < 1.0),
        "last_processed.mtime should be the file's mtime {mtime}: {state:#}"
    );
    assert!(last["completed_at"].is_string(), "{state:#}");
    assert!(!dropped.exists(), "the restored file was not deleted");
    assert!(dir_names(&stack.failed).is_empty(), "{ctx}");
    service.stop_cleanly();

    // The live database is exactly the backup; the old one keeps its rows.
    assert_eq!(sqlite_integrity(&stack.db), "ok");
    assert_same_sqlite_contents(&expected, &contents(&stack.db));
    assert_same_sqlite_contents(&live_before, &contents(&previous));
}

#[test]
fn bad_files_go_to_the_failed_folder_and_never_touch_the_live_database() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_fixture(db, 1, true));
    let good = stack.backup_of_url(&stack.url);
    let good_bytes = fs::read(&good).unwrap();
    let scratch = stack.work.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();

    // Outside the watch folder: a valid backup a symlink points to. Were
    // the link followed, the live database would become this one.
    let outside = stack.work.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = outside.join("target.db.gz");
    fs::copy(stack.small_backup(13), &target).unwrap();
    let target_sha = sha256_file(&target);

    let mut service = stack.start(stack.backupd());
    let before = stack.app_fingerprint();

    let half = good_bytes[..good_bytes.len() / 2].to_vec();
    let mut flipped = good_bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    // (name, words one of which the reason mentions, how to make the file)
    let cases: Vec<(&str, &[&str], MakeFile)> = vec![
        (
            "empty.db.gz",
            &["empty", "0 bytes"],
            Box::new(|p| fs::write(p, b"").unwrap()),
        ),
        (
            "truncated.db.gz",
            &[],
            Box::new(move |p| fs::write(p, &half).unwrap()),
        ),
        (
            "flipped.db.gz",
            &[],
            Box::new(move |p| fs::write(p, &flipped).unwrap()),
        ),
        (
            "text.db.gz",
            &[],
            Box::new(|p| {
                write_gzip(
                    p,
                    "this is a text file, not a SQLite database\n"
                        .repeat(200)
                        .as_bytes(),
                )
            }),
        ),
        (
            "pg_dump-20260101T000000Z.sql.gz",
            &["sqlite"],
            Box::new(|p| {
                write_gzip(
                    p,
                    b"--\n-- PostgreSQL database dump\n--\n\nSELECT 1;\n\n\
                      --\n-- PostgreSQL database dump complete\n--\n\n",
                )
            }),
        ),
    ];

    for (name, words, make) in &cases {
        let staged = scratch.join(name);
        make(&staged);
        let dest = stack.incoming.join(name);
        fs::rename(&staged, &dest).unwrap();
        let (entry, reason) = stack.wait_failed(&mut service, name, &["refused", "failed"]);
        eprintln!("{name}: {} ({})", reason["reason"], entry["result"]);
        let text = reason["reason"].as_str().unwrap().to_lowercase();
        assert!(
            words.is_empty() || words.iter().any(|w| text.contains(w)),
            "{name}: the reason should mention one of {words:?}: {reason:#}"
        );
        assert_eq!(
            stack.app_fingerprint(),
            before,
            "{name}: the live database changed\n{}",
            stack.context(&service)
        );
        assert!(
            stack.safety_backups("pre-restore-").is_empty(),
            "{name}: a safety backup was taken for a file that fails its checks\n{}",
            stack.context(&service)
        );
    }

    // A symlink is refused, moved as the link itself; its target stays.
    let evil = stack.incoming.join("evil.db.gz");
    std::os::unix::fs::symlink(&target, &evil).unwrap();
    let (_, reason) = stack.wait_failed(&mut service, "evil.db.gz", &["refused", "failed"]);
    eprintln!("evil.db.gz: {}", reason["reason"]);
    let text = reason["reason"].as_str().unwrap().to_lowercase();
    assert!(
        ["symlink", "symbolic", "regular"]
            .iter()
            .any(|w| text.contains(w)),
        "the reason should say it is a symlink / not a regular file: {reason:#}"
    );
    let moved = stack.failed.join("evil.db.gz");
    assert!(
        fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the failed folder should hold the link itself"
    );
    assert!(
        target.is_file(),
        "the symlink's target was moved or deleted"
    );
    assert_eq!(
        sha256_file(&target),
        target_sha,
        "the symlink's target changed"
    );
    assert_eq!(
        stack.app_fingerprint(),
        before,
        "the live database changed through a symlink\n{}",
        stack.context(&service)
    );

    // Spaces and non-ASCII in a valid file's name are fine.
    let name = "my backup ü 2026.db.gz";
    stack.drop_file(&stack.small_backup(11), name);
    let entry = stack.wait_restored(&mut service, name);
    assert!(entry["safety_backup"].is_string(), "{entry:#}");
    assert_eq!(notes_count(&stack.db), 11);

    // Every file of the folder is accounted for in the history.
    let history = stack.history();
    assert_eq!(history.len(), cases.len() + 2, "{history:#?}");
    service.stop_cleanly();
}

#[test]
fn of_two_files_dropped_together_only_the_newest_is_restored() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_small(db, 2));
    let now = SystemTime::now();
    // The newest by mtime sorts first by name: the name must not decide.
    let newest = "a-newest.db.gz";
    let older = "z-older.db.gz";
    let newest_staged = stack.stage(
        &stack.small_backup(7),
        newest,
        Some(now - Duration::from_secs(60)),
    );
    let older_staged = stack.stage(
        &stack.small_backup(3),
        older,
        Some(now - Duration::from_secs(3600)),
    );

    let mut service = stack.start(stack.backupd());
    stack.put(&older_staged);
    stack.put(&newest_staged);
    let (entry, reason) = stack.wait_failed(&mut service, older, &["superseded"]);
    assert_eq!(
        reason["reason"].as_str(),
        Some(format!("superseded by {newest}").as_str()),
        "{reason:#}"
    );
    assert_eq!(
        entry["error"].as_str(),
        Some(format!("superseded by {newest}").as_str()),
        "{entry:#}"
    );
    stack.wait_restored(&mut service, newest);
    assert_eq!(notes_count(&stack.db), 7);
    let results: Vec<(String, String)> = stack
        .history()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap_or_default().to_string(),
                e["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        !results.iter().any(|(f, r)| f == older && r == "restored"),
        "the older file was restored: {results:?}"
    );
    service.stop_cleanly();
}

#[test]
fn a_file_copied_in_slowly_is_restored_once_when_complete() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_small(db, 2));
    let source = stack.small_backup(5000);
    let bytes = fs::read(&source).unwrap();
    let name = "slow-copy.db.gz";

    let mut service = stack.start(stack.backupd());
    // Written under its final name, a chunk every 400 ms for about 3 s.
    let chunks = 8;
    let size = bytes.len().div_ceil(chunks);
    {
        let mut out = fs::File::create(stack.incoming.join(name)).unwrap();
        for (i, chunk) in bytes.chunks(size).enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(400));
            }
            out.write_all(chunk).unwrap();
            out.flush().unwrap();
        }
    }
    let entry = stack.wait_restored(&mut service, name);
    assert_eq!(
        entry["sha256"].as_str(),
        Some(sha256_file(&source).as_str())
    );
    assert_eq!(notes_count(&stack.db), 5000);
    let history = stack.history();
    assert_eq!(
        history.len(),
        1,
        "the file must be tried exactly once:\n{}",
        stack.context(&service)
    );
    assert!(
        dir_names(&stack.failed).is_empty(),
        "nothing should fail:\n{}",
        stack.context(&service)
    );
    service.stop_cleanly();
}

#[test]
fn polling_alone_finds_and_restores_a_file() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_small(db, 2));
    let backup = stack.small_backup(4);
    let mut service = stack.start(stack.backupd().env("RESTORE_USE_NOTIFY", "false"));
    let name = file_name(&backup);
    stack.drop_file(&backup, &name);
    stack.wait_restored(&mut service, &name);
    assert_eq!(notes_count(&stack.db), 4);
    service.stop_cleanly();
}

#[test]
fn notify_finds_a_file_long_before_the_next_sweep() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_small(db, 2));
    let backup = stack.small_backup(6);
    // The start-up sweep has run (the folder was empty); the next is 30 s
    // away, beyond the wait below: only a notify wake-up finds the file.
    let mut service = stack.start(
        stack
            .backupd()
            .env("RESTORE_USE_NOTIFY", "true")
            .env("RESTORE_POLL_INTERVAL", "30"),
    );
    let name = file_name(&backup);
    stack.drop_file(&backup, &name);
    let found = poll(STEP, Duration::from_secs(20), || {
        stack.entry(&name).filter(|_| !stack.in_watch_folder(&name))
    });
    let entry = found.unwrap_or_else(|| {
        panic!(
            "notify did not wake the service for `{name}`:\n{}",
            stack.context(&service)
        )
    });
    assert_eq!(entry["result"].as_str(), Some("restored"), "{entry:#}");
    assert_eq!(notes_count(&stack.db), 6);
    service.stop_cleanly();
}

// ---------------------------------------------------------------- PostgreSQL

/// Makes the live database differ from every dump taken before.
fn change_live(cluster: &PgCluster, marker: i32) {
    cluster.psql_app(&format!(
        "CREATE TABLE IF NOT EXISTS marker (x int); INSERT INTO marker VALUES ({marker}); \
         DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT 3)"
    ));
}

/// The non-template databases whose names start with `prefix`, sorted.
fn databases_like(cluster: &PgCluster, prefix: &str) -> Vec<String> {
    cluster
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
        )
        .lines()
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn postgres_restore_through_the_service_keeps_the_previous_database() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    let stack = Stack::postgres(&cluster);
    let good = stack.backup_of_url(&stack.url);
    let original = cluster.table_checksums(PG_APP_DB);
    change_live(&cluster, 1);
    let changed = cluster.table_checksums(PG_APP_DB);
    assert_ne!(changed, original);

    let mut service = stack.start(stack.backupd());
    let name = file_name(&good);
    stack.drop_file(&good, &name);
    let entry = stack.wait_restored(&mut service, &name);
    let ctx = stack.context(&service);
    assert_eq!(
        cluster.table_checksums(PG_APP_DB),
        original,
        "the restored database differs from the dump:\n{ctx}"
    );
    let previous = databases_like(&cluster, "appdb_pre_restore_");
    assert_eq!(previous.len(), 1, "{previous:?}\n{ctx}");
    let stamp = previous[0].strip_prefix("appdb_pre_restore_").unwrap();
    assert!(is_stamp(stamp), "`{}`: bad stamp", previous[0]);
    assert_eq!(
        entry["previous_database"].as_str(),
        Some(previous[0].as_str()),
        "{entry:#}"
    );
    assert_eq!(
        cluster.table_checksums(&previous[0]),
        changed,
        "the previous database should hold the contents before the restore"
    );
    let safety = stack.safety_backups("pre-restore-pg_dump-");
    assert_eq!(safety.len(), 1, "one safety backup expected:\n{ctx}");
    assert!(safety[0].ends_with(".sql.gz"), "{safety:?}");
    assert_verifies(&stack.backups.join(&safety[0]));
    assert!(stack.state_json().unwrap()["in_progress"].is_null());

    // A dump with an error in the middle (trailer intact): refused by the
    // load, the live database exactly as it was, no staging database left.
    let sql = String::from_utf8(gunzip_bytes(&good)).unwrap();
    let (broken, _) = insert_in_middle(&sql, "SELECT * FROM no_such_table;");
    assert!(broken.contains("\n-- PostgreSQL database dump complete\n"));
    let bad = stack.work.path().join("pg_dump-broken.sql.gz");
    write_gzip(&bad, broken.as_bytes());
    change_live(&cluster, 2);
    let live = cluster.table_checksums(PG_APP_DB);
    stack.drop_file(&bad, "pg_dump-broken.sql.gz");
    let (entry, reason) = stack.wait_failed(&mut service, "pg_dump-broken.sql.gz", &["failed"]);
    eprintln!("pg_dump-broken.sql.gz: {}", reason["reason"]);
    assert!(
        reason["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no_such_table")),
        "the reason should carry psql's error: {reason:#}"
    );
    assert!(entry["previous_database"].is_null(), "{entry:#}");
    assert_eq!(
        cluster.table_checksums(PG_APP_DB),
        live,
        "a failed load changed the live database:\n{}",
        stack.context(&service)
    );
    assert_eq!(
        databases_like(&cluster, "appdb_restore_"),
        Vec::<String>::new(),
        "a staging database was left behind"
    );
    service.stop_cleanly();
}

// ---------------------------------------------------------------- one-shot

#[test]
fn one_shot_dry_run_changes_nothing_and_a_bad_file_exits_1_with_the_reason() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_small(db, 2));
    let elsewhere = stack.work.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let good = elsewhere.join("sqlite-20260101T000000Z.db.gz");
    fs::copy(stack.small_backup(9), &good).unwrap();
    let good_sha = sha256_file(&good);
    let before = stack.app_fingerprint();

    // --dry-run: the plan, and nothing changed.
    let run = stack.backupd().run_bounded(
        &["restore", "--file", good.to_str().unwrap(), "--dry-run"],
        GIVE_UP,
    );
    eprintln!("{run}");
    run.assert_code(0);
    assert!(
        run.stdout.contains(stack.db.to_str().unwrap()),
        "the plan should name the target database:\n{run}"
    );
    assert_eq!(sha256_file(&good), good_sha, "the file changed");
    assert_eq!(stack.app_fingerprint(), before, "the database changed");
    assert!(stack.safety_backups("").is_empty(), "a backup was written");
    assert!(
        dir_names(&stack.failed).is_empty(),
        "{:?}",
        dir_names(&stack.failed)
    );
    assert!(stack.history().is_empty(), "{:?}", stack.state_json());

    // PostgreSQL: the plan names the strategy; nothing is contacted.
    let dump = elsewhere.join("pg_dump-20260101T000000Z.sql.gz");
    write_gzip(
        &dump,
        b"--\n-- PostgreSQL database dump\n--\n\n--\n-- PostgreSQL database dump complete\n--\n\n",
    );
    let run = Backupd::for_database(
        "postgresql+psycopg://app:dry-run-secret@127.0.0.1:9/appdb",
        &stack.backups,
    )
    .env("RESTORE_WATCH_DIR", &stack.incoming)
    .env("RESTORE_STATE_FILE", &stack.state)
    .run_bounded(
        &["restore", "--file", dump.to_str().unwrap(), "--dry-run"],
        GIVE_UP,
    );
    eprintln!("{run}");
    run.assert_code(0).assert_not_shown("dry-run-secret");
    assert!(
        run.stdout.to_lowercase().contains("staging") && run.stdout.contains("appdb"),
        "the plan should name the database and the strategy (staging):\n{run}"
    );

    // A bad file: exit 1, the reason on stderr, the database unchanged.
    let empty = elsewhere.join("empty.db.gz");
    fs::write(&empty, b"").unwrap();
    let run = stack
        .backupd()
        .run_bounded(&["restore", "--file", empty.to_str().unwrap()], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(1);
    let stderr = run.stderr.to_lowercase();
    assert!(
        stderr.contains("empty") || stderr.contains("0 bytes"),
        "stderr should say the file is empty:\n{run}"
    );
    assert_eq!(stack.app_fingerprint(), before, "the database changed");
    assert!(
        empty.exists(),
        "--file must leave a refused file where it is"
    );

    // The good file restores and exits 0.
    let run = stack
        .backupd()
        .run_bounded(&["restore", "--file", good.to_str().unwrap()], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(0);
    assert!(good.exists(), "--file must not delete the operator's file");
    assert_eq!(notes_count(&stack.db), 9);
    let history = stack.history();
    assert_eq!(
        history.first().and_then(|e| e["result"].as_str()),
        Some("restored"),
        "{history:#?}"
    );
}

// ---------------------------------------------------------------- recovery, signals

#[test]
fn an_interrupted_sqlite_restore_is_recovered_at_start_up() {
    let Some(()) = require_programs(&["gunzip"]) else {
        return;
    };
    let stack = Stack::sqlite(|db| sqlite_small(db, 3));
    let stamp = "20260101T000000Z";
    // backupd died after moving the live database aside.
    let aside = with_suffix(&stack.db, &format!(".pre-restore-{stamp}"));
    fs::rename(&stack.db, &aside).unwrap();
    let name = "sqlite-20260101T000000Z.db.gz";
    let file = stack.drop_file(&stack.small_backup(8), name);
    let state = json!({
        "last_processed": null,
        "in_progress": {
            "file": file.display().to_string(),
            "stamp": stamp,
            "started_at": "2026-01-01T00:00:00Z",
            "phase": "loading",
            "containers": [],
            "stopped": [],
            "database": format!("sqlite:{}", stack.db.display()),
        },
        "history": [],
    });
    fs::create_dir_all(stack.state.parent().unwrap()).unwrap();
    fs::write(&stack.state, serde_json::to_string_pretty(&state).unwrap()).unwrap();

    let mut service = stack.start(stack.backupd());
    let state = stack.wait(&mut service, "the interrupted run to be recorded", |s| {
        let state = s.state_json()?;
        state["in_progress"].is_null().then_some(state)
    });
    let ctx = stack.context(&service);
    let history = state["history"].as_array().unwrap();
    assert_eq!(
        history.first().and_then(|e| e["result"].as_str()),
        Some("interrupted"),
        "{ctx}"
    );
    assert_history_keys(&history[0]);
    assert!(
        stack.db.is_file(),
        "the live database was not put back:\n{ctx}"
    );
    assert!(
        !aside.exists(),
        "the moved-aside copy is still there:\n{ctx}"
    );
    assert_eq!(notes_count(&stack.db), 3, "not the previous database");
    // Its file is not retried: it waits in the failed folder.
    assert!(
        stack.failed.join(format!("{name}.reason.json")).is_file(),
        "the interrupted run's file should be in the failed folder:\n{ctx}"
    );
    assert!(!stack.in_watch_folder(name), "{ctx}");
    service.stop_cleanly();
    assert_eq!(stack.history().len(), 1, "{}", stack.context(&service));
}

#[test]
fn sigterm_while_idle_exits_0() {
    let stack = Stack::sqlite(|db| sqlite_small(db, 1));
    let mut service = stack.start(stack.backupd());
    let run = service.terminate(Duration::from_secs(15));
    run.assert_code(0);
    assert!(stack.history().is_empty(), "{run}");
}
