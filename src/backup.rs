//! One backup run, shared by `backupd once` and the daemon: lock the
//! directory, the before-backup hook, dump, commit, apply retention, the
//! after-backup (or backup-failed) hook, then the offsite pass. What
//! happened goes out as events (`crate::events`); the status file, the log
//! and the daemon's metrics are their observers.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::archive::{BackupFile, Committed};
use crate::clock::Clock;
use crate::config::BackupConfig;
use crate::db::{self, Database};
use crate::error::{Error, Result};
use crate::events::{
    BackupFailed, BackupFinished, BackupSkipped, BackupStarted, Event, HookFailed, HookPoint,
    LogObserver, Observer, OffsitePass, SkipReason, Uploaded,
};
use crate::hooks::{HookContext, HookError, Hooks, ShellHooks};
use crate::offsite::{self, SyncReport};
use crate::retention;
use crate::state::StatusFile;
use crate::store::Kind;
use crate::store::local::{self, DirLock, StoredBackup};

/// What a successful run produced.
#[derive(Debug)]
pub struct Outcome {
    pub backup: Committed,
    pub deleted: Vec<StoredBackup>,
    pub duration_seconds: f64,
    pub finished: chrono::DateTime<chrono::Utc>,
}

/// A run: the backup's result and, when a bucket is configured, the
/// offsite pass that followed (which also runs after a failed backup).
#[derive(Debug)]
pub struct Run {
    pub result: Result<Outcome>,
    pub upload: Option<SyncReport>,
    /// Why the run failed before the dump began (lock, backup file, key);
    /// recorded as `start_error`, which makes `/healthz` unhealthy at once.
    pub start_error: Option<String>,
    /// False when the status file could not be written (e.g. no descriptor
    /// left): the daemon then keeps the failure in memory for `/healthz`.
    pub recorded: bool,
}

/// What to do when another backup holds the directory lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// `backupd once`: wait for it to finish.
    Wait,
    /// The daemon: skip this run (`Error::Busy`), nothing recorded.
    Skip,
}

/// Takes one backup and tells `observer` (and the status file and the log,
/// which always listen) what happened, whether the backup succeeded or not.
/// The hooks are the configured ones (`HOOK_*`).
pub async fn run(
    cfg: &BackupConfig,
    cancel: &CancellationToken,
    clock: &dyn Clock,
    when_busy: WhenBusy,
    observer: &dyn Observer,
) -> Run {
    let hooks = ShellHooks::new(&cfg.hooks, &cfg.database);
    run_with_hooks(cfg, cancel, clock, when_busy, observer, &hooks).await
}

/// [`run`] with the hooks given.
pub async fn run_with_hooks(
    cfg: &BackupConfig,
    cancel: &CancellationToken,
    clock: &dyn Clock,
    when_busy: WhenBusy,
    observer: &dyn Observer,
    hooks: &dyn Hooks,
) -> Run {
    let span = tracing::info_span!(
        "backup",
        database = cfg.database.kind(),
        file = tracing::field::Empty
    );
    async {
        let status = StatusFile::new(&cfg.paths.status_file, &cfg.paths.backup_dir);
        // The status file and the metrics are up to date by the time the
        // log says so: tests and operators wait for the log line.
        let emit = |event: Event| {
            status.observe(&event);
            observer.observe(&event);
            LogObserver.observe(&event);
        };
        let database = cfg.database.kind();
        let attempt = clock.now();
        emit(
            BackupStarted {
                database,
                at: attempt,
            }
            .into(),
        );
        let started = Instant::now();
        let lock = match lock_dir(cfg, cancel, when_busy).await {
            Err(Error::Busy) => {
                emit(
                    BackupSkipped {
                        reason: SkipReason::Busy,
                    }
                    .into(),
                );
                return Run {
                    result: Err(Error::Busy),
                    upload: None,
                    start_error: None,
                    recorded: true,
                };
            }
            other => other,
        };
        // Under the lock, so the hooks of two runs never overlap.
        let (lock, prepared) = match lock {
            Ok(lock) => {
                let before = hooks
                    .run(HookPoint::BeforeBackup, &HookContext::default(), cancel)
                    .await;
                let prepared = match before {
                    Ok(()) => prepare_backup(cfg, clock),
                    Err(e) => Err(before_hook_failed(e)),
                };
                (Some(lock), prepared)
            }
            Err(e) => (None, Err(e)),
        };
        // A refusing hook is the operator's verdict on this run, not a
        // broken set-up: it does not make /healthz unhealthy at once.
        let start_error = match &prepared {
            Err(Error::Cancelled | Error::Hook { .. }) | Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        let result = match prepared {
            Ok(file) => take_backup(cfg, file, cancel, clock).await,
            Err(e) => Err(e),
        };
        let duration = started.elapsed();
        let result = result.map(|(backup, deleted)| Outcome {
            backup,
            deleted,
            duration_seconds: duration.as_secs_f64(),
            finished: clock.now(),
        });
        emit(match &result {
            Ok(outcome) => BackupFinished {
                database,
                started_at: attempt,
                finished_at: outcome.finished,
                file: outcome.backup.path.clone(),
                size: outcome.backup.size,
                raw_bytes: outcome.backup.raw_bytes,
                sha256: outcome.backup.sha256.clone(),
                duration,
                retention_deleted: outcome.deleted.iter().map(|d| d.path.clone()).collect(),
            }
            .into(),
            Err(e) => BackupFailed {
                database,
                started_at: attempt,
                could_not_start: start_error.is_some(),
                duration,
                error: e.into(),
            }
            .into(),
        });
        let recorded = status.recorded();
        // After the result is recorded: a failing hook is told on its own
        // and never changes the run's result.
        let after = match &result {
            Ok(outcome) => Some((
                HookPoint::AfterBackup,
                HookContext {
                    file: Some(outcome.backup.path.clone()),
                    size: Some(outcome.backup.size),
                    sha256: Some(outcome.backup.sha256.clone()),
                    error: None,
                    duration: Some(duration),
                },
            )),
            Err(Error::Cancelled) => None,
            Err(e) => Some((
                HookPoint::BackupFailed,
                HookContext {
                    error: Some(e.to_string()),
                    duration: Some(duration),
                    ..HookContext::default()
                },
            )),
        };
        if let Some((point, context)) = after
            && let Err(e) = hooks.run(point, &context, cancel).await
        {
            // Stopped by our own shutdown: nothing to alert on.
            if e.is_cancelled() {
                tracing::warn!(target: "backupd::hooks", error = %e, "hook stopped");
            } else {
                emit(
                    HookFailed {
                        hook: point,
                        file: context.file,
                        error: e.to_string(),
                    }
                    .into(),
                );
            }
        }
        // Also after a failed backup: earlier ones may still be missing
        // from the bucket.
        let mut upload = None;
        if let (Some(_locked), Some(remote)) = (&lock, &cfg.remote)
            && !cancel.is_cancelled()
        {
            let report = offsite::sync(remote, &cfg.paths.backup_dir, cancel, clock).await;
            emit(offsite_pass(&report).into());
            upload = Some(report);
        }
        drop(lock);
        Run {
            result,
            upload,
            start_error,
            recorded,
        }
    }
    .instrument(span)
    .await
}

fn before_hook_failed(error: HookError) -> Error {
    if error.is_cancelled() {
        return Error::Cancelled;
    }
    Error::Hook {
        hook: error.hook().variable(),
        message: format!("{error}; no backup was taken"),
    }
}

fn offsite_pass(report: &SyncReport) -> OffsitePass {
    OffsitePass {
        uploaded: report
            .uploaded
            .iter()
            .map(|sent| Uploaded {
                name: sent.name.clone(),
                bytes: sent.bytes,
                duration: sent.duration,
            })
            .collect(),
        failed: report.failed,
        remote_deleted: report.deleted.clone(),
        error: report.error.clone(),
        finished_at: report.finished,
    }
}

/// At the daemon's start: removes what a killed run left in the backup
/// folder, if no backup (`backupd once`) holds it right now; a run that
/// does hold it cleans up itself. Failures are logged: every run tries again.
pub fn clean_up_at_start(cfg: &BackupConfig) {
    let dir = &cfg.paths.backup_dir;
    let result = local::ensure_dir(dir).and_then(|()| match DirLock::try_acquire(dir)? {
        Some(_lock) => {
            let _writes = crate::state::hold_writes(&cfg.paths.status_file);
            local::remove_leftovers(dir).map(drop)
        }
        None => Ok(()),
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not clean up the backup folder at start-up");
    }
}

/// Creates and locks the backup folder for the whole run.
async fn lock_dir(
    cfg: &BackupConfig,
    cancel: &CancellationToken,
    when_busy: WhenBusy,
) -> Result<DirLock> {
    let dir = cfg.paths.backup_dir.clone();
    local::ensure_dir(&dir)?;
    let lock = if when_busy == WhenBusy::Skip {
        DirLock::try_acquire(&dir)?.ok_or(Error::Busy)?
    } else {
        let dir = dir.clone();
        let acquire = tokio::task::spawn_blocking(move || {
            DirLock::acquire(&dir, || {
                tracing::info!(
                    "another backup is running in this directory; waiting for it to finish"
                )
            })
        });
        tokio::select! {
            lock = acquire => lock.map_err(|e| Error::Other(format!("the lock task failed: {e}")))??,
            _ = cancel.cancelled() => return Err(Error::Cancelled),
        }
    };
    Ok(lock)
}

/// Everything before the dump, with the folder locked by the caller: a
/// failure here means the run could not start.
fn prepare_backup(cfg: &BackupConfig, clock: &dyn Clock) -> Result<BackupFile> {
    let dir = cfg.paths.backup_dir.clone();
    {
        // Not while a status-file write outside this run has its temporary file here.
        let _writes = crate::state::hold_writes(&cfg.paths.status_file);
        local::remove_leftovers(&dir)?;
    }

    let kind = match cfg.database {
        Database::Postgres(_) => Kind::PgDump,
        Database::Sqlite(_) => Kind::Sqlite,
    };
    let ring = cfg.keys.for_encryption()?;
    let name = local::free_name(&dir, kind, clock.now(), ring.is_some()).file_name();
    tracing::Span::current().record("file", name.as_str());
    let key = ring.as_ref().map(|ring| ring.encrypting_key());
    BackupFile::create(&dir, &name, cfg.compression_level, key)
}

/// The backup itself into the prepared file, then retention.
async fn take_backup(
    cfg: &BackupConfig,
    file: BackupFile,
    cancel: &CancellationToken,
    clock: &dyn Clock,
) -> Result<(Committed, Vec<StoredBackup>)> {
    let committed = dump_into(cfg, file, cancel, clock).await?;
    let deleted = apply_retention(cfg, clock);
    Ok((committed, deleted))
}

/// A backup of the current database taken just before a restore, named
/// `pre-restore-NAME` so retention never deletes it. No status update.
pub async fn safety_backup(
    cfg: &BackupConfig,
    cancel: &CancellationToken,
    clock: &dyn Clock,
) -> Result<Committed> {
    let dir = cfg.paths.backup_dir.clone();
    local::ensure_dir(&dir)?;
    let lock_dir = dir.clone();
    let _lock = tokio::task::spawn_blocking(move || {
        DirLock::acquire(&lock_dir, || {
            tracing::info!("waiting for a running backup before the safety backup")
        })
    })
    .await
    .map_err(|e| Error::Other(format!("the lock task failed: {e}")))??;
    // The restore service may be the only writer of this folder: a killed
    // safety backup's partial file goes here, not at some later backup.
    {
        let _writes = crate::state::hold_writes(&cfg.paths.status_file);
        local::remove_leftovers(&dir)?;
    }
    let kind = match cfg.database {
        Database::Postgres(_) => Kind::PgDump,
        Database::Sqlite(_) => Kind::Sqlite,
    };
    let now = clock.now();
    // Encrypted like the scheduled backups, so a restore never leaves the
    // data in the clear where the operator expects it encrypted.
    let ring = cfg.keys.for_encryption()?;
    let name = (0..)
        .map(|seq| {
            let name =
                crate::store::BackupName::new(kind, now, seq).with_encryption(ring.is_some());
            format!("{SAFETY_PREFIX}{}", name.file_name())
        })
        .find(|name| {
            std::fs::symlink_metadata(dir.join(name)).is_err()
                && std::fs::symlink_metadata(crate::archive::partial_path(&dir, name)).is_err()
        })
        .expect("an unbounded range has a free name");
    let key = ring.as_ref().map(|ring| ring.encrypting_key());
    let file = BackupFile::create(&dir, &name, cfg.compression_level, key)?;
    let committed = dump_into(cfg, file, cancel, clock).await?;
    tracing::info!(file = %committed.path.display(), bytes = committed.size, "safety backup written");
    Ok(committed)
}

pub use crate::store::SAFETY_PREFIX;

/// The dump into `file`, then its commit with the manifest (times from
/// `clock`).
async fn dump_into(
    cfg: &BackupConfig,
    file: BackupFile,
    cancel: &CancellationToken,
    clock: &dyn Clock,
) -> Result<Committed> {
    let started_at = clock.now();
    let dumped = match &cfg.database {
        Database::Postgres(target) => {
            db::postgres::backup(target, file, cancel, cfg.timeout).await?
        }
        Database::Sqlite(target) => {
            let (target, cancel, timeout) = (target.clone(), cancel.clone(), cfg.timeout);
            tokio::task::spawn_blocking(move || db::sqlite::backup(&target, file, &cancel, timeout))
                .await
                .map_err(|e| Error::Other(format!("the snapshot task failed: {e}")))??
        }
    };
    let (file, contents) = dumped.into_parts(started_at, clock.now());
    tokio::task::spawn_blocking(move || file.commit(contents))
        .await
        .map_err(|e| Error::Other(format!("the commit task failed: {e}")))?
}

/// Deletes expired backups. A failure here is logged, not fatal: the new
/// backup is safe, and the next run tries again.
fn apply_retention(cfg: &BackupConfig, clock: &dyn Clock) -> Vec<StoredBackup> {
    // A name stamped after both our clock and the system's is planted: it
    // must not count for keep-min (and is never deleted, not being ours).
    let now = crate::clock::not_before_system_time(clock);
    let backups = match local::list_at(&cfg.paths.backup_dir, now) {
        Ok(backups) => backups,
        Err(e) => {
            tracing::warn!(error = %e, "retention skipped");
            return Vec::new();
        }
    };
    let mut deleted = Vec::new();
    for backup in retention::expired(&backups, cfg.retention, clock.now()) {
        match local::delete(&backup) {
            Ok(()) => {
                tracing::info!(file = %backup.path.display(), "retention deleted an old backup");
                deleted.push(backup);
            }
            Err(e) => tracing::warn!(error = %e, "retention could not delete a backup"),
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Paths;
    use crate::crypto::keys::Keys;
    use crate::events::{Event, FailureKind, Recorder};
    use crate::hooks::FakeHooks;
    use crate::retention::Policy;
    use crate::state::Status;

    fn sqlite_config(db: &Path, backup_dir: &Path, status_file: &Path) -> BackupConfig {
        BackupConfig {
            database: Database::parse(&format!("sqlite:///{}", db.display()), "DATABASE_URL")
                .unwrap(),
            paths: Paths {
                backup_dir: backup_dir.to_path_buf(),
                status_file: status_file.to_path_buf(),
            },
            retention: Policy {
                days: 0,
                keep_min: 3,
            },
            compression_level: 1,
            timeout: Duration::from_secs(60),
            keys: Keys::default(),
            remote: None,
            hooks: crate::hooks::HookConfig::none(),
        }
    }

    async fn run_with(cfg: &BackupConfig) -> (Run, Vec<Event>) {
        let recorder = Recorder::new();
        let run = run(
            cfg,
            &CancellationToken::new(),
            &SystemClock,
            WhenBusy::Wait,
            &recorder,
        )
        .await;
        (run, recorder.events())
    }

    #[tokio::test]
    async fn a_run_tells_started_then_finished_with_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let status_file = dir.path().join("backup-status.json");
        let cfg = sqlite_config(&db, &dir.path().join("backups"), &status_file);

        let (run, events) = run_with(&cfg).await;
        let outcome = run.result.unwrap();
        assert!(run.recorded);
        let [Event::BackupStarted(started), Event::BackupFinished(done)] = &events[..] else {
            panic!("{events:#?}");
        };
        assert_eq!(started.database, "sqlite");
        assert_eq!(done.started_at, started.at);
        assert_eq!(done.file, outcome.backup.path);
        assert_eq!(done.size, std::fs::metadata(&done.file).unwrap().len());
        assert_eq!(done.sha256, outcome.backup.sha256);
        assert_eq!(done.duration.as_secs_f64(), outcome.duration_seconds);
        // The status file is one of the run's observers.
        let status = Status::read(&status_file).unwrap().unwrap();
        assert_eq!(
            status.last_file.as_deref(),
            Some(done.file.to_str().unwrap())
        );
        assert_eq!(status.last_sha256.as_deref(), Some(done.sha256.as_str()));
        assert_eq!(status.last_error, None);
    }

    #[tokio::test]
    async fn a_failed_run_tells_the_error_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let status_file = dir.path().join("backup-status.json");
        let cfg = sqlite_config(
            &dir.path().join("missing.db"),
            &dir.path().join("backups"),
            &status_file,
        );

        let (run, events) = run_with(&cfg).await;
        let error = run.result.unwrap_err().to_string();
        let [Event::BackupStarted(_), Event::BackupFailed(failed)] = &events[..] else {
            panic!("{events:#?}");
        };
        assert_eq!(failed.error.kind, FailureKind::Database);
        assert_eq!(failed.error.message, error);
        assert!(!failed.could_not_start);
        let status = Status::read(&status_file).unwrap().unwrap();
        assert_eq!(status.last_error.as_deref(), Some(error.as_str()));
        assert_eq!(status.start_error, None);
    }

    fn sqlite_app(dir: &Path) -> BackupConfig {
        let db = dir.join("app.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        sqlite_config(&db, &dir.join("backups"), &dir.join("backup-status.json"))
    }

    async fn run_hooked(cfg: &BackupConfig, hooks: &FakeHooks) -> (Run, Vec<Event>) {
        let recorder = Recorder::new();
        let run = run_with_hooks(
            cfg,
            &CancellationToken::new(),
            &SystemClock,
            WhenBusy::Wait,
            &recorder,
            hooks,
        )
        .await;
        (run, recorder.events())
    }

    #[tokio::test]
    async fn the_hooks_of_a_good_run_come_before_the_dump_and_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sqlite_app(dir.path());
        let backups = cfg.paths.backup_dir.clone();
        // What the before hook sees: the folder locked, no backup yet.
        let hooks = FakeHooks::new().on_run(move |point| {
            let files = local::list_at(&backups, chrono::Utc::now() + chrono::Duration::hours(1))
                .map(|l| l.len())
                .unwrap_or(0);
            let locked = DirLock::try_acquire(&backups).ok().flatten().is_none();
            assert!(locked, "{point:?} ran without the folder lock");
            match point {
                HookPoint::BeforeBackup => assert_eq!(files, 0),
                _ => assert_eq!(files, 1, "{point:?}"),
            }
        });
        let (run, events) = run_hooked(&cfg, &hooks).await;
        let outcome = run.result.unwrap();
        assert_eq!(
            hooks.points(),
            [HookPoint::BeforeBackup, HookPoint::AfterBackup]
        );
        let (_, after) = &hooks.calls()[1];
        assert_eq!(after.file.as_ref(), Some(&outcome.backup.path));
        assert_eq!(after.size, Some(outcome.backup.size));
        assert_eq!(after.sha256.as_ref(), Some(&outcome.backup.sha256));
        assert!(after.duration.is_some());
        assert!(matches!(events.last(), Some(Event::BackupFinished(_))));
    }

    #[tokio::test]
    async fn a_failing_before_hook_fails_the_run_naming_it_and_takes_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sqlite_app(dir.path());
        let hooks = FakeHooks::new().failing(HookPoint::BeforeBackup);
        let (run, events) = run_hooked(&cfg, &hooks).await;
        let error = run.result.unwrap_err();
        assert_eq!(
            error.to_string(),
            "HOOK_BEFORE_BACKUP exited with status 3: injected failure; no backup was taken"
        );
        assert_eq!(run.start_error, None);
        let [Event::BackupStarted(_), Event::BackupFailed(failed)] = &events[..] else {
            panic!("{events:#?}");
        };
        assert_eq!(failed.error.kind, FailureKind::Hook);
        assert_eq!(failed.error.message, error.to_string());
        assert!(!failed.could_not_start);
        assert_eq!(
            local::list_at(&cfg.paths.backup_dir, chrono::Utc::now())
                .unwrap()
                .len(),
            0
        );
        // The failed hook is told why.
        assert_eq!(
            hooks.points(),
            [HookPoint::BeforeBackup, HookPoint::BackupFailed]
        );
        let (_, told) = &hooks.calls()[1];
        assert_eq!(told.error.as_deref(), Some(error.to_string().as_str()));
        let status = Status::read(&cfg.paths.status_file).unwrap().unwrap();
        assert_eq!(status.last_error, Some(error.to_string()));
        assert_eq!(status.last_hook_error, None);
    }

    #[tokio::test]
    async fn a_failing_after_hook_is_told_and_recorded_and_the_backup_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sqlite_app(dir.path());
        let hooks = FakeHooks::new().failing(HookPoint::AfterBackup);
        let (run, events) = run_hooked(&cfg, &hooks).await;
        let outcome = run.result.unwrap();
        assert!(outcome.backup.path.is_file());
        let [
            Event::BackupStarted(_),
            Event::BackupFinished(_),
            Event::HookFailed(hook),
        ] = &events[..]
        else {
            panic!("{events:#?}");
        };
        assert_eq!(hook.hook, HookPoint::AfterBackup);
        assert_eq!(hook.file.as_ref(), Some(&outcome.backup.path));
        let message = "HOOK_AFTER_BACKUP exited with status 3: injected failure";
        assert_eq!(hook.error, message);
        let status = Status::read(&cfg.paths.status_file).unwrap().unwrap();
        assert_eq!(status.last_error, None);
        assert_eq!(status.last_hook_error.as_deref(), Some(message));

        // The next run's hooks succeed: the record is cleared.
        let (run, _) = run_hooked(&cfg, &FakeHooks::new()).await;
        run.result.unwrap();
        let status = Status::read(&cfg.paths.status_file).unwrap().unwrap();
        assert_eq!(status.last_hook_error, None);
    }

    #[tokio::test]
    async fn a_failing_failed_hook_never_hides_the_run_s_error() {
        let dir = tempfile::tempdir().unwrap();
        let status_file = dir.path().join("backup-status.json");
        let cfg = sqlite_config(
            &dir.path().join("missing.db"),
            &dir.path().join("backups"),
            &status_file,
        );
        let hooks = FakeHooks::new().failing(HookPoint::BackupFailed);
        let (run, events) = run_hooked(&cfg, &hooks).await;
        let error = run.result.unwrap_err().to_string();
        let [
            Event::BackupStarted(_),
            Event::BackupFailed(failed),
            Event::HookFailed(hook),
        ] = &events[..]
        else {
            panic!("{events:#?}");
        };
        assert_eq!(failed.error.kind, FailureKind::Database);
        assert_eq!(hook.hook, HookPoint::BackupFailed);
        let (_, told) = &hooks.calls()[1];
        assert_eq!(told.error.as_deref(), Some(error.as_str()));
        let status = Status::read(&status_file).unwrap().unwrap();
        assert_eq!(status.last_error.as_deref(), Some(error.as_str()));
        assert_eq!(
            status.last_hook_error.as_deref(),
            Some("HOOK_BACKUP_FAILED exited with status 3: injected failure")
        );
    }

    #[tokio::test]
    async fn a_run_that_cannot_start_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // The backup folder cannot be created: a file holds its name.
        let not_a_dir = dir.path().join("backups");
        std::fs::write(&not_a_dir, "").unwrap();
        let status_file = dir.path().join("backup-status.json");
        let cfg = sqlite_config(&dir.path().join("app.db"), &not_a_dir, &status_file);

        let (run, events) = run_with(&cfg).await;
        let [Event::BackupStarted(_), Event::BackupFailed(failed)] = &events[..] else {
            panic!("{events:#?}");
        };
        assert!(failed.could_not_start);
        assert_eq!(
            run.start_error.as_deref(),
            Some(failed.error.message.as_str())
        );
        let status = Status::read(&status_file).unwrap().unwrap();
        assert_eq!(status.start_error, run.start_error);
    }
}
