//! What the backup run and the restore procedure tell the rest of backupd:
//! typed events through one seam, the [`Observer`]. The status file, the
//! metrics and the logs are observers; notifications and lifecycle hooks
//! subscribe the same way.
//!
//! Events are plain owned values (`Clone`), so an observer that does I/O
//! (a webhook) can queue them and send from its own task: `observe` is
//! called inline, on the emitting task, and must not block. Events carry
//! no secrets: paths, names, sizes, digests, and error texts that are
//! already masked where they are built (see [`crate::error`]).
//!
//! This module is a leaf: it names the restore [`Phase`] and PostgreSQL
//! [`Strategy`] types and nothing that emits or consumes events.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::restore::postgres::Strategy;
use crate::restore::state::Phase;

/// Something that wants to know what backupd does.
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Event);
}

impl<T: Observer + ?Sized> Observer for Arc<T> {
    fn observe(&self, event: &Event) {
        (**self).observe(event)
    }
}

impl<T: Observer + ?Sized> Observer for &T {
    fn observe(&self, event: &Event) {
        (**self).observe(event)
    }
}

/// Fans one event out to several observers, in the order they were added.
#[derive(Clone, Default)]
pub struct Observers {
    observers: Vec<Arc<dyn Observer>>,
}

impl Observers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, observer: Arc<dyn Observer>) -> Self {
        self.push(observer);
        self
    }

    pub fn push(&mut self, observer: Arc<dyn Observer>) {
        self.observers.push(observer);
    }

    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }
}

impl Observer for Observers {
    fn observe(&self, event: &Event) {
        for observer in &self.observers {
            observer.observe(event);
        }
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.observers.len())
    }
}

/// Everything an observer can be told. New kinds of events (the daemon's
/// `stale` and `recovered` for notifications) are new variants: observers
/// match what they use and ignore the rest.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    BackupStarted(BackupStarted),
    BackupSkipped(BackupSkipped),
    BackupFinished(BackupFinished),
    BackupFailed(BackupFailed),
    OffsitePass(OffsitePass),
    RestoreStarted(RestoreStarted),
    RestorePhase(RestorePhase),
    RestoreFinished(RestoreFinished),
    RestoreFailed(RestoreFailed),
    RestoreRefused(RestoreRefused),
    /// The daemon noticed that no backup succeeded within `HEALTH_MAX_AGE_SECONDS`.
    Stale(Stale),
    /// The first success after [`Event::Stale`].
    Recovered(Recovered),
    /// The encryption key file exists but cannot be read (every backup fails until fixed).
    KeyUnreadable(KeyUnreadable),
    /// A lifecycle hook failed where its failure does not fail the run
    /// (`HOOK_AFTER_*`, `HOOK_*_FAILED`); a failing `before` hook fails the
    /// run instead, and the run's failure names it.
    HookFailed(HookFailed),
    /// A restore drill passed (`backupd drill`, `BACKUP_DRILL_SCHEDULE`).
    DrillFinished(DrillFinished),
    /// A restore drill failed (or could not run).
    DrillFailed(DrillFailed),
}

impl Event {
    /// A stable kebab-case name, for hooks, notification rules and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Event::BackupStarted(_) => "backup-started",
            Event::BackupSkipped(_) => "backup-skipped",
            Event::BackupFinished(_) => "backup-finished",
            Event::BackupFailed(_) => "backup-failed",
            Event::OffsitePass(_) => "offsite-pass",
            Event::RestoreStarted(_) => "restore-started",
            Event::RestorePhase(_) => "restore-phase",
            Event::RestoreFinished(_) => "restore-finished",
            Event::RestoreFailed(_) => "restore-failed",
            Event::RestoreRefused(_) => "restore-refused",
            Event::Stale(_) => "stale",
            Event::Recovered(_) => "recovered",
            Event::KeyUnreadable(_) => "key-unreadable",
            Event::HookFailed(_) => "hook-failed",
            Event::DrillFinished(_) => "drill-finished",
            Event::DrillFailed(_) => "drill-failed",
        }
    }
}

macro_rules! into_event {
    ($($variant:ident),*) => {$(
        impl From<$variant> for Event {
            fn from(event: $variant) -> Self {
                Event::$variant(event)
            }
        }
    )*};
}

into_event!(
    BackupStarted,
    BackupSkipped,
    BackupFinished,
    BackupFailed,
    OffsitePass,
    RestoreStarted,
    RestorePhase,
    RestoreFinished,
    RestoreFailed,
    RestoreRefused,
    Stale,
    Recovered,
    KeyUnreadable,
    HookFailed,
    DrillFinished,
    DrillFailed
);

/// An error as events carry it: what kind of thing failed, for rules that
/// decide ("page on database errors, not on shutdown"), and the operator's
/// message, exactly as the log and the status file show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Config,
    Io,
    Database,
    Verify,
    Storage,
    /// Stopping, starting or inspecting containers.
    Container,
    Cancelled,
    Busy,
    /// A `before` lifecycle hook failed or timed out.
    Hook,
    Other,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// A shutdown, not something to alert on.
    pub fn is_cancelled(&self) -> bool {
        self.kind == FailureKind::Cancelled
    }
}

impl From<&Error> for Failure {
    fn from(error: &Error) -> Self {
        let kind = match error {
            Error::Config(_) => FailureKind::Config,
            Error::Io { .. } => FailureKind::Io,
            Error::Database { .. } | Error::PgRestore { .. } => FailureKind::Database,
            Error::Verify { .. } => FailureKind::Verify,
            Error::Storage { .. } => FailureKind::Storage,
            Error::Hook { .. } => FailureKind::Hook,
            Error::Cancelled => FailureKind::Cancelled,
            Error::Busy => FailureKind::Busy,
            Error::BadStamp(_) | Error::Other(_) => FailureKind::Other,
        };
        Failure::new(kind, error.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A backup run began (before the folder lock is taken).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupStarted {
    /// `postgresql` or `sqlite`.
    pub database: &'static str,
    pub at: DateTime<Utc>,
}

/// The run did nothing; nothing is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSkipped {
    pub reason: SkipReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Another backup (`backupd once`) holds the folder lock.
    Busy,
}

/// A backup was committed (and local retention applied).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupFinished {
    pub database: &'static str,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub file: PathBuf,
    /// Bytes of the file on disk.
    pub size: u64,
    /// Bytes the database gave (before compression).
    pub raw_bytes: u64,
    pub sha256: String,
    pub duration: Duration,
    /// Paths local retention deleted after this backup.
    pub retention_deleted: Vec<PathBuf>,
}

/// A backup run failed: before the dump began (`could_not_start`: lock,
/// backup file, key) or during it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupFailed {
    pub database: &'static str,
    pub started_at: DateTime<Utc>,
    pub could_not_start: bool,
    pub duration: Duration,
    pub error: Failure,
}

/// One offsite pass (after every run with a bucket configured, also after a
/// failed backup).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OffsitePass {
    pub uploaded: Vec<Uploaded>,
    /// Backups that failed to upload (the first failure ends the pass).
    pub failed: usize,
    /// Names remote retention deleted from the bucket.
    pub remote_deleted: Vec<String>,
    /// The first thing that went wrong; `None` when the bucket is up to date.
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub name: String,
    pub bytes: u64,
    pub duration: Duration,
}

/// Where a restored file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Dropped into the watch folder: the service deletes or moves it.
    Dropped,
    /// Named with `--file` (or fetched from the bucket): it stays where it is.
    Given,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreStarted {
    pub file: PathBuf,
    pub origin: Origin,
    pub at: DateTime<Utc>,
}

/// The restore entered `phase` (as persisted in the restore state file).
#[derive(Debug, Clone, PartialEq)]
pub struct RestorePhase {
    pub file: PathBuf,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreFinished {
    pub file: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub duration: Duration,
    /// PostgreSQL only.
    pub strategy: Option<Strategy>,
    /// First container stop to last start; `None` when nothing was stopped.
    pub downtime: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreFailed {
    pub file: PathBuf,
    /// The phase it failed in.
    pub phase: Phase,
    pub duration: Duration,
    pub error: Failure,
    /// First container stop to last start; `None` when nothing was stopped.
    pub downtime: Option<Duration>,
}

/// A file was not restored at all (not a backup, not encrypted though
/// required, superseded by a newer one).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreRefused {
    pub file: PathBuf,
    pub reason: String,
    /// The newer file that won, when that is why.
    pub superseded_by: Option<String>,
    /// Where the file went (the failed folder); `None` when it stayed.
    pub moved_to: Option<PathBuf>,
}

/// No backup has succeeded for longer than the health limit (said once,
/// until [`Recovered`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    pub database: &'static str,
    /// The last success on record; `None` when there never was one.
    pub last_success: Option<DateTime<Utc>>,
    /// `HEALTH_MAX_AGE_SECONDS`.
    pub max_age: Duration,
    pub at: DateTime<Utc>,
    /// The last failure on record, when there is one (what the operator fixes).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub database: &'static str,
    /// When the daemon said it was stale.
    pub stale_since: DateTime<Utc>,
    pub at: DateTime<Utc>,
    /// The backup that ended it.
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyUnreadable {
    pub path: PathBuf,
    /// Why, as the log says it.
    pub error: String,
}

/// Which hook: the variable that names its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    BeforeBackup,
    AfterBackup,
    BackupFailed,
    BeforeRestore,
    AfterRestore,
    RestoreFailed,
}

impl HookPoint {
    pub const ALL: [HookPoint; 6] = [
        HookPoint::BeforeBackup,
        HookPoint::AfterBackup,
        HookPoint::BackupFailed,
        HookPoint::BeforeRestore,
        HookPoint::AfterRestore,
        HookPoint::RestoreFailed,
    ];

    /// The environment variable that configures it.
    pub fn variable(self) -> &'static str {
        match self {
            HookPoint::BeforeBackup => "HOOK_BEFORE_BACKUP",
            HookPoint::AfterBackup => "HOOK_AFTER_BACKUP",
            HookPoint::BackupFailed => "HOOK_BACKUP_FAILED",
            HookPoint::BeforeRestore => "HOOK_BEFORE_RESTORE",
            HookPoint::AfterRestore => "HOOK_AFTER_RESTORE",
            HookPoint::RestoreFailed => "HOOK_RESTORE_FAILED",
        }
    }

    /// The `BACKUPD_EVENT` a hook is told: `before-backup`, `after-restore`, …
    pub fn event(self) -> &'static str {
        match self {
            HookPoint::BeforeBackup => "before-backup",
            HookPoint::AfterBackup => "after-backup",
            HookPoint::BackupFailed => "backup-failed",
            HookPoint::BeforeRestore => "before-restore",
            HookPoint::AfterRestore => "after-restore",
            HookPoint::RestoreFailed => "restore-failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookFailed {
    pub hook: HookPoint,
    /// The backup or restored file, when there is one.
    pub file: Option<PathBuf>,
    /// "exited with status 3: <last line of its output>", "killed after
    /// HOOK_TIMEOUT_SECONDS=300", masked.
    pub error: String,
}

/// A restore drill passed: the backup loaded, and its row counts were
/// compared with its manifest (or, without one, not: `manifest` says which).
#[derive(Debug, Clone, PartialEq)]
pub struct DrillFinished {
    /// The backup drilled.
    pub file: PathBuf,
    /// Its size on disk.
    pub size: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// `checked N tables against PATH`, or `row counts not compared: …`.
    pub manifest: String,
}

/// A restore drill failed: the file did not pass the check, did not load,
/// held other row counts than its manifest, or there was none to drill.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillFailed {
    /// The backup drilled; `None` when none was found.
    pub file: Option<PathBuf>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    pub error: Failure,
}

/// Keeps every event, for tests (and anything that wants a transcript).
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.events().iter().map(Event::name).collect()
    }

    /// The hook failures told so far, in order.
    pub fn hook_failures(&self) -> Vec<HookFailed> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::HookFailed(h) => Some(h),
                _ => None,
            })
            .collect()
    }
}

impl Observer for Recorder {
    fn observe(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// The log lines of the backup run and the restore procedure. Their
/// targets are the modules that wrote them before events existed, so
/// `LOG_LEVEL`/`RUST_LOG` filters and the lines themselves are unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogObserver;

const BACKUP_TARGET: &str = "backupd::backup";
const RESTORE_TARGET: &str = "backupd::modes::restore";

impl Observer for LogObserver {
    fn observe(&self, event: &Event) {
        match event {
            Event::BackupSkipped(BackupSkipped {
                reason: SkipReason::Busy,
            }) => tracing::warn!(
                target: BACKUP_TARGET,
                "skipped: another backup (backupd once?) is running in this directory"
            ),
            Event::BackupFinished(done) => tracing::info!(
                target: BACKUP_TARGET,
                result = "success",
                file = %done.file.display(),
                bytes = done.size,
                raw_bytes = done.raw_bytes,
                duration_seconds = format!("{:.2}", done.duration.as_secs_f64()),
                deleted = done.retention_deleted.len(),
                "backup finished"
            ),
            Event::BackupFailed(failed) if failed.could_not_start => tracing::error!(
                target: BACKUP_TARGET,
                result = "failure",
                error = %failed.error,
                "the backup could not start"
            ),
            Event::BackupFailed(failed) => tracing::error!(
                target: BACKUP_TARGET,
                result = "failure",
                duration_seconds = format!("{:.2}", failed.duration.as_secs_f64()),
                error = %failed.error,
                "backup failed"
            ),
            Event::OffsitePass(pass) => match &pass.error {
                None => tracing::info!(
                    target: BACKUP_TARGET,
                    uploaded = pass.uploaded.len(),
                    remote_deleted = pass.remote_deleted.len(),
                    "offsite copies up to date"
                ),
                Some(e) => tracing::error!(
                    target: BACKUP_TARGET,
                    uploaded = pass.uploaded.len(),
                    error = %e,
                    "offsite copy incomplete; the next run tries again"
                ),
            },
            Event::RestoreStarted(_) => tracing::info!(target: RESTORE_TARGET, "restore requested"),
            Event::RestoreFinished(done) => tracing::info!(
                target: RESTORE_TARGET,
                result = "restored",
                duration_seconds = format!("{:.2}", done.duration.as_secs_f64()),
                downtime_seconds = done.downtime.map(|d| format!("{:.3}", d.as_secs_f64())),
                "restore finished"
            ),
            Event::RestoreFailed(failed) => tracing::error!(
                target: RESTORE_TARGET,
                result = "failed",
                error = %failed.error,
                "restore failed"
            ),
            Event::Stale(stale) => tracing::error!(
                target: BACKUP_TARGET,
                last_success = %stale.last_success.map_or_else(|| "never".to_string(), |t| t.to_rfc3339()),
                max_age_seconds = stale.max_age.as_secs(),
                "no backup has succeeded within HEALTH_MAX_AGE_SECONDS"
            ),
            Event::Recovered(recovered) => tracing::info!(
                target: BACKUP_TARGET,
                file = %recovered.file.display(),
                "backups succeed again"
            ),
            Event::KeyUnreadable(key) => tracing::error!(
                target: BACKUP_TARGET,
                path = %key.path.display(),
                error = %key.error,
                "the encryption key cannot be read; backups fail until it is fixed"
            ),
            Event::HookFailed(hook) => tracing::error!(
                target: "backupd::hooks",
                hook = hook.hook.variable(),
                error = %hook.error,
                "hook failed"
            ),
            // The drill logs its own line, inside its span (file, bytes, duration).
            Event::BackupStarted(_)
            | Event::RestorePhase(_)
            | Event::RestoreRefused(_)
            | Event::DrillFinished(_)
            | Event::DrillFailed(_) => {}
        }
    }
}

/// Backup events for unit tests elsewhere: a test changes the fields it is
/// about with struct update syntax (`BackupFailed { error, ..samples::backup_failed() }`).
#[cfg(test)]
pub mod samples {
    use super::*;

    pub fn backup_started() -> Event {
        BackupStarted {
            database: "sqlite",
            at: DateTime::UNIX_EPOCH,
        }
        .into()
    }

    pub fn backup_failed() -> BackupFailed {
        BackupFailed {
            database: "sqlite",
            started_at: DateTime::UNIX_EPOCH,
            could_not_start: false,
            duration: Duration::ZERO,
            error: Failure::new(FailureKind::Database, "database is locked"),
        }
    }

    pub fn backup_finished() -> BackupFinished {
        BackupFinished {
            database: "sqlite",
            started_at: DateTime::UNIX_EPOCH,
            finished_at: DateTime::UNIX_EPOCH,
            file: "/backups/x.sqlite3.gz".into(),
            size: 1,
            raw_bytes: 1,
            sha256: "0".repeat(64),
            duration: Duration::ZERO,
            retention_deleted: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Event {
        samples::backup_started()
    }

    #[test]
    fn observers_see_every_event_in_order() {
        let (first, second) = (Recorder::new(), Recorder::new());
        let observers = Observers::new()
            .with(first.clone())
            .with(second.clone() as Arc<dyn Observer>);
        observers.observe(&started());
        observers.observe(
            &BackupSkipped {
                reason: SkipReason::Busy,
            }
            .into(),
        );
        assert_eq!(first.names(), ["backup-started", "backup-skipped"]);
        assert_eq!(first.events(), second.events());
    }

    #[test]
    fn a_clone_of_the_fan_out_reaches_the_same_observers() {
        let recorder = Recorder::new();
        let observers = Observers::new().with(recorder.clone());
        let copy = observers.clone();
        copy.observe(&started());
        assert_eq!(recorder.names(), ["backup-started"]);
        assert!(Observers::new().is_empty());
    }

    #[test]
    fn a_failure_keeps_the_kind_and_the_message_of_the_error() {
        let error = Error::database("postgresql://app:***@db/app", "connection refused");
        let failure = Failure::from(&error);
        assert_eq!(failure.kind, FailureKind::Database);
        assert_eq!(failure.to_string(), error.to_string());
        assert!(!failure.is_cancelled());
        assert!(Failure::from(&Error::Cancelled).is_cancelled());
        assert_eq!(Failure::from(&Error::Busy).kind, FailureKind::Busy);
    }

    /// What `observe` logs, as the text format writes it (no ANSI, no time).
    fn logged(event: &Event) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || LogObserver.observe(event));
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_log_lines_are_the_ones_the_backup_run_always_wrote() {
        let line = logged(
            &BackupFinished {
                database: "sqlite",
                started_at: DateTime::UNIX_EPOCH,
                finished_at: DateTime::UNIX_EPOCH,
                file: "/backups/app-20261202T010000Z.sqlite3.gz".into(),
                size: 4096,
                raw_bytes: 8192,
                sha256: "0".repeat(64),
                duration: Duration::from_millis(1234),
                retention_deleted: vec!["/backups/old.sqlite3.gz".into()],
            }
            .into(),
        );
        assert_eq!(
            line.trim(),
            "INFO backupd::backup: backup finished result=\"success\" \
             file=/backups/app-20261202T010000Z.sqlite3.gz bytes=4096 raw_bytes=8192 \
             duration_seconds=\"1.23\" deleted=1"
        );
        let failed = |could_not_start| {
            logged(
                &BackupFailed {
                    database: "sqlite",
                    started_at: DateTime::UNIX_EPOCH,
                    could_not_start,
                    duration: Duration::from_millis(500),
                    error: Failure::new(FailureKind::Io, "cannot open /backups"),
                }
                .into(),
            )
        };
        assert_eq!(
            failed(false).trim(),
            "ERROR backupd::backup: backup failed result=\"failure\" duration_seconds=\"0.50\" \
             error=cannot open /backups"
        );
        assert_eq!(
            failed(true).trim(),
            "ERROR backupd::backup: the backup could not start result=\"failure\" \
             error=cannot open /backups"
        );
    }

    #[test]
    fn the_log_observer_takes_every_event() {
        // No subscriber: this checks that no event is left unmatched or panics.
        let file = PathBuf::from("/backups/x.sql.gz");
        for event in [
            started(),
            BackupFailed {
                database: "sqlite",
                started_at: DateTime::UNIX_EPOCH,
                could_not_start: true,
                duration: Duration::ZERO,
                error: Failure::new(FailureKind::Io, "cannot open"),
            }
            .into(),
            OffsitePass::default().into(),
            RestorePhase {
                file: file.clone(),
                phase: Phase::Loading,
            }
            .into(),
            RestoreRefused {
                file,
                reason: "not a backup file name".into(),
                superseded_by: None,
                moved_to: None,
            }
            .into(),
        ] {
            LogObserver.observe(&event);
        }
    }
}
