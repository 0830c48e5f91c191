//! `backup-status.json`: the old helper's keys (`last_backup`, `last_file`,
//! `backups`) exactly as before, plus what an operator needs to see why the
//! last run failed. Written atomically; never holds credentials.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::write_atomically;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::{
    BackupFailed, BackupFinished, Event, HookFailed, Observer, OffsitePass, RestoreFailed,
    RestoreFinished,
};
use crate::store::local;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// UTC `YYYY-MM-DDTHH:MM:SSZ` of the last successful backup.
    pub last_backup: Option<String>,
    /// Full path of the last successful backup.
    pub last_file: Option<String>,
    /// Backup file names in the directory, newest first.
    #[serde(default)]
    pub backups: Vec<String>,
    pub last_attempt: Option<String>,
    /// `null` after a success; what went wrong otherwise (passwords masked).
    pub last_error: Option<String>,
    /// Why the last run could not even start (lock, backup file, key);
    /// `null` once a run starts. Set, it makes `/healthz` unhealthy at once.
    #[serde(default)]
    pub start_error: Option<String>,
    pub last_duration_seconds: Option<f64>,
    pub last_size_bytes: Option<u64>,
    pub last_sha256: Option<String>,
    /// `postgresql` or `sqlite`.
    pub database: Option<String>,
    /// UTC time of the last offsite pass that uploaded a backup.
    #[serde(default)]
    pub last_upload: Option<String>,
    /// Name of the newest backup that pass uploaded.
    #[serde(default)]
    pub last_upload_file: Option<String>,
    /// Why the last offsite pass did not finish; `null` when the bucket is
    /// up to date (and while no bucket is configured).
    #[serde(default)]
    pub last_upload_error: Option<String>,
    /// The last notification that could not be delivered after its
    /// retries: "2026-12-02T01:00:00Z ntfy https://ntfy.sh/***: HTTP 500"
    /// (masked); `null` until one fails. Written by the notifier
    /// ([`update`]), so it survives the runs that follow.
    #[serde(default)]
    pub last_notification_error: Option<String>,
    /// When the daemon said `stale` (no success within
    /// `HEALTH_MAX_AGE_SECONDS`), until the next success: a restarted daemon
    /// does not say it again. Absent when not stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<String>,
    /// Why a hook of the last run failed where that does not fail the run
    /// (`HOOK_AFTER_BACKUP`, `HOOK_BACKUP_FAILED`); `null` otherwise.
    #[serde(default)]
    pub last_hook_error: Option<String>,
    /// UTC time the last restore drill ended (`backupd drill`,
    /// `BACKUP_DRILL_SCHEDULE`); written by [`crate::drill`] through [`update`].
    #[serde(default)]
    pub last_drill: Option<String>,
    /// Full path of the backup the last drill loaded.
    #[serde(default)]
    pub last_drill_file: Option<String>,
    /// `passed` or `failed`.
    #[serde(default)]
    pub last_drill_result: Option<String>,
    /// Why the last drill failed; `null` when it passed.
    #[serde(default)]
    pub last_drill_error: Option<String>,
    #[serde(default)]
    pub last_drill_duration_seconds: Option<f64>,
    /// UTC time the last drill that passed ended; kept through failures,
    /// for `HEALTH_MAX_DRILL_AGE_SECONDS` and the metrics after a restart.
    #[serde(default)]
    pub last_drill_success: Option<String>,
    /// What the last drill compared its row counts with (`checked N tables
    /// against PATH`), or why it compared none (`row counts not compared:
    /// no manifest (looked for …)`).
    #[serde(default)]
    pub last_drill_manifest: Option<String>,
    /// UTC time the last restore attempt (`backupd restore`: the service,
    /// `--file`, `--from-s3`) ended; written by [`RestoreStatusFile`].
    #[serde(default)]
    pub last_restore_at: Option<String>,
    /// `success` or `failed`.
    #[serde(default)]
    pub last_restore_result: Option<String>,
    /// Name of the file that restore read.
    #[serde(default)]
    pub last_restore_file: Option<String>,
    /// First container stop to last start of that restore; `null` when it
    /// stopped nothing (and until a restore has run).
    #[serde(default)]
    pub last_restore_downtime_seconds: Option<f64>,
    #[serde(default)]
    pub version: String,
    /// Keys written by other versions survive a rewrite.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The largest status file read (or served). Thousands of backup names fit.
pub const MAX_STATUS_BYTES: u64 = 1 << 20;

/// The timestamp format of the status file, as the old helper wrote it.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Status {
    /// Reads the status file; a missing file is `None`.
    ///
    /// The file sits in `BACKUP_DIR`, which the app can write, and its content
    /// is served over HTTP: it is opened without following a link and without
    /// blocking (a planted FIFO), checked to be a regular file on that same
    /// descriptor, and read up to [`MAX_STATUS_BYTES`]. A symlink to
    /// `/proc/self/environ` is refused here, never read.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;

        let refused =
            |why: &str| Error::Other(format!("refused the status file {}: {why}", path.display()));
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused("it is a symbolic link, which is never followed"));
            }
            Err(e) => return Err(Error::io("open the status file", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect the status file", path, e))?;
        if !meta.is_file() {
            return Err(refused("it is not a regular file"));
        }
        // backupd replaces the file by a rename, so it has one link; a second
        // one is somebody's hard link to another file.
        if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            return Err(refused("it has another hard link"));
        }
        if meta.len() > MAX_STATUS_BYTES {
            return Err(refused(&format!(
                "it is larger than {MAX_STATUS_BYTES} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_STATUS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read the status file", path, e))?;
        if bytes.len() as u64 > MAX_STATUS_BYTES {
            return Err(refused(&format!(
                "it is larger than {MAX_STATUS_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Other(format!(
                "cannot parse the status file {}: {e}",
                path.display()
            ))
        })
    }

    /// Reads the previous status to update; a damaged file is replaced, not fatal.
    pub fn read_or_default(path: &Path) -> Self {
        match Self::read(path) {
            Ok(status) => status.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "starting a fresh status file");
                Status::default()
            }
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        json.push(b'\n');
        write_atomically(path, &json)
    }
}

/// Every read-modify-write of a status file in this process holds this:
/// the backup run's [`StatusFile`] and the notifier (from its own task)
/// both rewrite the file, and without it one would write back a copy read
/// before the other's write, losing that write. Between processes
/// (`backupd once` beside the daemon) the same holds through an `flock` on
/// [`lock_path`]; see [`hold_writes`].
static STATUS_WRITE: Mutex<()> = Mutex::new(());

/// The lock file beside a status file: `.backup-status.json.lock`.
pub fn lock_path(status_file: &Path) -> PathBuf {
    let name = status_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup-status.json".to_string());
    status_file.with_file_name(format!(".{name}.lock"))
}

/// Both status-file locks, released when dropped.
pub struct WritesHeld {
    _between_processes: Option<local::DirLock>,
    _in_process: std::sync::MutexGuard<'static, ()>,
}

/// Holds the status file's locks: this process's mutex, then a short
/// `flock` on [`lock_path`] that another process (`once` beside the
/// daemon, whose notifier writes outside any backup run) takes as well.
/// Every write of the status file holds them, and so does the clean-up of
/// leftovers in `BACKUP_DIR`: it removes `.backupd-tmp-*` files, and the
/// status file's next version is one of those until its rename.
///
/// The `flock` is not `BACKUP_DIR`'s backup lock, which a run holds for its
/// whole length. When the lock file cannot be opened (the folder is not
/// writable: then neither is the status file), only the mutex is held.
pub fn hold_writes(status_file: &Path) -> WritesHeld {
    let in_process = STATUS_WRITE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let lock = lock_path(status_file);
    let between_processes = match local::DirLock::acquire_file(&lock, || {}) {
        Ok(held) => Some(held),
        Err(e) => {
            tracing::debug!(error = %e, "writing the status file without the lock between processes");
            None
        }
    };
    WritesHeld {
        _between_processes: between_processes,
        _in_process: in_process,
    }
}

/// Reads the status file, lets `change` edit it, and writes it back, under
/// the status file's locks ([`hold_writes`]).
pub fn update(path: &Path, change: impl FnOnce(&mut Status)) -> Result<()> {
    let _held = hold_writes(path);
    let mut status = Status::read_or_default(path);
    change(&mut status);
    status.write(path)
}

/// The status file as an observer of the backup run: each run's result
/// (`last_*`, `start_error`, `backups`) and each offsite pass
/// (`last_upload*`), merged into what the file already holds.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    backup_dir: PathBuf,
    recorded: AtomicBool,
}

/// Where the status file's log lines always came from.
const LOG_TARGET: &str = "backupd::backup";

impl StatusFile {
    pub fn new(path: &Path, backup_dir: &Path) -> Self {
        StatusFile {
            path: path.to_path_buf(),
            backup_dir: backup_dir.to_path_buf(),
            recorded: AtomicBool::new(true),
        }
    }

    /// False when the last run could not be written (e.g. no descriptor
    /// left): the daemon then keeps a start failure in memory for `/healthz`.
    pub fn recorded(&self) -> bool {
        self.recorded.load(Ordering::Relaxed)
    }

    fn record_run(
        &self,
        database: &str,
        attempt: DateTime<Utc>,
        result: std::result::Result<&BackupFinished, &BackupFailed>,
    ) -> Result<()> {
        let path = &self.path;
        // The folder first: the lock file goes beside the status file.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::create_dir_all(parent)
                .map_err(|e| Error::io("create the directory of", path, e))?;
        }
        let _held = hold_writes(path);
        let mut status = Status::read_or_default(path);
        status.last_attempt = Some(timestamp(attempt));
        status.database = Some(database.to_string());
        status.version = crate::VERSION.to_string();
        status.start_error = None;
        // This run's hooks have not run yet.
        status.last_hook_error = None;
        match result {
            Ok(done) => {
                status.last_backup = Some(timestamp(done.finished_at));
                status.last_file = Some(done.file.display().to_string());
                status.last_error = None;
                status.last_duration_seconds =
                    Some((done.duration.as_secs_f64() * 1000.0).round() / 1000.0);
                status.last_size_bytes = Some(done.size);
                status.last_sha256 = Some(done.sha256.clone());
            }
            Err(failed) => {
                status.last_error = Some(failed.error.message.clone());
                if failed.could_not_start {
                    status.start_error = Some(failed.error.message.clone());
                }
            }
        }
        // Every backup file, the app's manual ones and the safety backups too:
        // the app's admin page lists (and offers to download) exactly these.
        if let Ok(files) = local::list_all(&self.backup_dir, SystemClock.now()) {
            status.backups = files.into_iter().map(|f| f.file_name).collect();
        }
        status.write(path)
    }

    /// `last_upload` when something was sent, `last_upload_error` (`null`
    /// when the bucket is up to date).
    fn record_offsite(&self, pass: &OffsitePass) -> Result<()> {
        update(&self.path, |status| {
            if !pass.uploaded.is_empty()
                && let Some(finished) = pass.finished_at
            {
                status.last_upload = Some(timestamp(finished));
                status.last_upload_file = pass.uploaded.first().map(|sent| sent.name.clone());
            }
            status.last_upload_error = pass.error.clone();
        })
    }

    fn record_hook(&self, failed: &HookFailed) -> Result<()> {
        update(&self.path, |status| {
            status.last_hook_error = Some(failed.error.clone());
        })
    }
}

impl Observer for StatusFile {
    fn observe(&self, event: &Event) {
        let run = match event {
            Event::BackupFinished(done) => Some((done.database, done.started_at, Ok(done))),
            Event::BackupFailed(failed) => Some((failed.database, failed.started_at, Err(failed))),
            Event::OffsitePass(pass) => {
                if let Err(e) = self.record_offsite(pass) {
                    tracing::warn!(target: LOG_TARGET, error = %e, "could not update the status file");
                }
                None
            }
            Event::HookFailed(failed) => {
                if let Err(e) = self.record_hook(failed) {
                    tracing::warn!(target: LOG_TARGET, error = %e, "could not update the status file");
                }
                None
            }
            _ => None,
        };
        if let Some((database, attempt, result)) = run {
            let written = self.record_run(database, attempt, result);
            if let Err(e) = &written {
                tracing::error!(target: LOG_TARGET, error = %e, "could not record this run in the status file");
            }
            self.recorded.store(written.is_ok(), Ordering::Relaxed);
        }
    }
}

/// The status file as an observer of restores: each attempt's end
/// (`last_restore_*`), merged into what the file holds through [`update`],
/// so the backup side's writes and these never lose each other.
pub struct RestoreStatusFile {
    path: PathBuf,
    clock: Box<dyn Clock>,
}

impl RestoreStatusFile {
    pub fn new(path: &Path, clock: Box<dyn Clock>) -> Self {
        RestoreStatusFile {
            path: path.to_path_buf(),
            clock,
        }
    }

    fn record(
        &self,
        file: &Path,
        result: &str,
        downtime: Option<std::time::Duration>,
    ) -> Result<()> {
        let path = &self.path;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::create_dir_all(parent)
                .map_err(|e| Error::io("create the directory of", path, e))?;
        }
        let at = timestamp(self.clock.now());
        update(path, |status| {
            status.last_restore_at = Some(at);
            status.last_restore_result = Some(result.to_string());
            status.last_restore_file = Some(crate::archive::file_name(file));
            status.last_restore_downtime_seconds =
                downtime.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        })
    }
}

impl Observer for RestoreStatusFile {
    fn observe(&self, event: &Event) {
        let written = match event {
            Event::RestoreFinished(RestoreFinished { file, downtime, .. }) => {
                self.record(file, "success", *downtime)
            }
            Event::RestoreFailed(RestoreFailed { file, downtime, .. }) => {
                self.record(file, "failed", *downtime)
            }
            _ => return,
        };
        if let Err(e) = written {
            tracing::warn!(target: "backupd::modes::restore", error = %e, file = %self.path.display(), "could not record the restore in the status file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_old_keys_are_kept_and_unknown_keys_survive() {
        let old = r#"{"last_backup": "2026-01-01T00:00:00Z", "last_file": "/backups/x", "backups": ["x"], "future": 1}"#;
        let status: Status = serde_json::from_str(old).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        for key in [
            "last_backup",
            "last_file",
            "backups",
            "last_attempt",
            "last_error",
            "database",
            "version",
            "future",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn links_fifos_and_huge_files_are_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup-status.json");
        assert_eq!(Status::read(&path).unwrap(), None);

        std::os::unix::fs::symlink("/proc/self/environ", &path).unwrap();
        let e = Status::read(&path).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(&path).unwrap();

        let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = Status::read(&path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(&path).unwrap();

        let other = dir.path().join("other.json");
        std::fs::write(&other, "{}").unwrap();
        std::fs::hard_link(&other, &path).unwrap();
        let e = Status::read(&path).unwrap_err().to_string();
        assert!(e.contains("hard link"), "{e}");
        std::fs::remove_file(&path).unwrap();

        let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_STATUS_BYTES as usize));
        std::fs::write(&path, huge).unwrap();
        let e = Status::read(&path).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn updates_from_several_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup-status.json");
        std::thread::scope(|scope| {
            for n in 0..8 {
                let path = &path;
                scope.spawn(move || {
                    for round in 0..5 {
                        update(path, |status| {
                            status
                                .other
                                .insert(format!("writer{n}"), serde_json::json!(round));
                        })
                        .unwrap();
                    }
                });
            }
        });
        let status = Status::read(&path).unwrap().unwrap();
        for n in 0..8 {
            assert_eq!(status.other[&format!("writer{n}")], 4, "{status:?}");
        }
    }

    /// The status file and the writer's name of a [`an_updating_child`] run.
    const CHILD_FILE: &str = "BACKUPD_TEST_STATUS_FILE";
    const CHILD_NAME: &str = "BACKUPD_TEST_WRITER";
    const CHILD_ROUNDS: u64 = 150;

    #[test]
    fn updates_from_two_processes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup-status.json");
        let children: Vec<_> = ["first", "second"]
            .into_iter()
            .map(|name| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "state::tests::an_updating_child",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_FILE, &path)
                    .env(CHILD_NAME, name)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "the child did not run: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let status = Status::read(&path).unwrap().unwrap();
        for name in ["first", "second"] {
            assert_eq!(status.other[name], CHILD_ROUNDS, "{status:?}");
        }
        assert!(lock_path(&path).is_file());
    }

    /// A child of [`updates_from_two_processes_lose_nothing`]: counts its
    /// own key up, one `update` at a time.
    #[test]
    #[ignore = "run by updates_from_two_processes_lose_nothing"]
    fn an_updating_child() {
        let path = PathBuf::from(std::env::var_os(CHILD_FILE).expect("run as a child"));
        let name = std::env::var(CHILD_NAME).unwrap();
        for _ in 0..CHILD_ROUNDS {
            update(&path, |status| {
                let seen = status
                    .other
                    .get(&name)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                status
                    .other
                    .insert(name.clone(), serde_json::json!(seen + 1));
            })
            .unwrap();
        }
    }

    struct At(DateTime<Utc>);

    impl Clock for At {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    #[test]
    fn each_restore_attempt_is_recorded_beside_the_backup_keys() {
        use crate::events::{Failure, FailureKind};
        use crate::restore::state::Phase;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status").join("backup-status.json");
        std::fs::create_dir(dir.path().join("status")).unwrap();
        std::fs::write(
            &path,
            r#"{"last_backup": "2026-12-01T00:00:00Z", "backups": ["a.sql.gz"], "future": 1}"#,
        )
        .unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 3, 4, 5).unwrap();
        let recorder = RestoreStatusFile::new(&path, Box::new(At(at)));
        recorder.observe(
            &RestoreFinished {
                file: "/restore/incoming/app-20261201T000000Z.sql.gz".into(),
                size: 10,
                sha256: "0".repeat(64),
                duration: Duration::from_secs(9),
                strategy: None,
                downtime: Some(Duration::from_micros(1_234_567)),
            }
            .into(),
        );
        let status = Status::read(&path).unwrap().unwrap();
        assert_eq!(
            status.last_restore_at.as_deref(),
            Some("2026-12-02T03:04:05Z")
        );
        assert_eq!(status.last_restore_result.as_deref(), Some("success"));
        assert_eq!(
            status.last_restore_file.as_deref(),
            Some("app-20261201T000000Z.sql.gz")
        );
        assert_eq!(status.last_restore_downtime_seconds, Some(1.235));
        assert_eq!(status.last_backup.as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(status.backups, ["a.sql.gz"]);
        assert_eq!(status.other["future"], 1);

        // A failure before anything was stopped: no downtime, written as null.
        recorder.observe(
            &RestoreFailed {
                file: "/restore/downloads/app-20261202T000000Z.sql.gz".into(),
                phase: Phase::Checking,
                duration: Duration::from_secs(1),
                error: Failure::new(FailureKind::Verify, "not a gzip stream"),
                downtime: None,
            }
            .into(),
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["last_restore_result"], "failed");
        assert_eq!(json["last_restore_file"], "app-20261202T000000Z.sql.gz");
        assert!(json["last_restore_downtime_seconds"].is_null(), "{json}");
        assert_eq!(json["last_backup"], "2026-12-01T00:00:00Z");
    }

    #[test]
    fn timestamps_use_the_old_format() {
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 2, 3, 4).unwrap();
        assert_eq!(timestamp(t), "2026-11-29T02:03:04Z");
    }
}
