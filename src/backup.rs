//! One backup run, shared by `backupd once` and the daemon: lock the
//! directory, dump, commit, apply retention, record the status.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::archive::{BackupFile, Committed};
use crate::clock::Clock;
use crate::config::BackupConfig;
use crate::db::{self, Database};
use crate::error::{Error, Result};
use crate::offsite::{self, SyncReport};
use crate::retention;
use crate::state::{self, Status};
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

/// Takes one backup and records the result in the status file, whether the
/// backup succeeded or not.
pub async fn run(
    cfg: &BackupConfig,
    cancel: &CancellationToken,
    clock: &dyn Clock,
    when_busy: WhenBusy,
) -> Run {
    let span = tracing::info_span!(
        "backup",
        database = cfg.database.kind(),
        file = tracing::field::Empty
    );
    async {
        let attempt = clock.now();
        let started = Instant::now();
        let lock = match lock_dir(cfg, cancel, when_busy).await {
            Err(Error::Busy) => {
                tracing::warn!(
                    "skipped: another backup (backupd once?) is running in this directory"
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
        let (lock, prepared) = match lock {
            Ok(lock) => (Some(lock), prepare_backup(cfg, clock)),
            Err(e) => (None, Err(e)),
        };
        let start_error = match &prepared {
            Err(Error::Cancelled) | Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        let result = match prepared {
            Ok(file) => take_backup(cfg, file, cancel, clock).await,
            Err(e) => Err(e),
        };
        let duration_seconds = started.elapsed().as_secs_f64();
        let result = result.map(|(backup, deleted)| Outcome {
            backup,
            deleted,
            duration_seconds,
            finished: clock.now(),
        });
        let recorded = match record_status(cfg, attempt, &result, start_error.as_deref()) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not record this run in the status file");
                false
            }
        };
        // Also after a failed backup: earlier ones may still be missing
        // from the bucket.
        let mut upload = None;
        if let (Some(_locked), Some(remote)) = (&lock, &cfg.remote)
            && !cancel.is_cancelled()
        {
            let report = offsite::sync(remote, &cfg.paths.backup_dir, cancel, clock.now()).await;
            if let Err(e) = record_upload(cfg, &report) {
                tracing::warn!(error = %e, "could not update the status file");
            }
            upload = Some(report);
        }
        drop(lock);
        match &result {
            Ok(outcome) => tracing::info!(
                result = "success",
                file = %outcome.backup.path.display(),
                bytes = outcome.backup.size,
                raw_bytes = outcome.backup.raw_bytes,
                duration_seconds = format!("{duration_seconds:.2}"),
                deleted = outcome.deleted.len(),
                "backup finished"
            ),
            Err(e) if start_error.is_some() => tracing::error!(
                result = "failure",
                error = %e,
                "the backup could not start"
            ),
            Err(e) => tracing::error!(
                result = "failure",
                duration_seconds = format!("{duration_seconds:.2}"),
                error = %e,
                "backup failed"
            ),
        }
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

/// At the daemon's start: removes what a killed run left in the backup
/// folder, if no backup (`backupd once`) holds it right now; a run that
/// does hold it cleans up itself. Failures are logged: every run tries again.
pub fn clean_up_at_start(cfg: &BackupConfig) {
    let dir = &cfg.paths.backup_dir;
    let result = local::ensure_dir(dir).and_then(|()| match DirLock::try_acquire(dir)? {
        Some(_lock) => local::remove_leftovers(dir).map(drop),
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
    local::remove_leftovers(&dir)?;

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
    let committed = dump_into(cfg, file, cancel).await?;
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
    local::remove_leftovers(&dir)?;
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
    let committed = dump_into(cfg, file, cancel).await?;
    tracing::info!(file = %committed.path.display(), bytes = committed.size, "safety backup written");
    Ok(committed)
}

pub use crate::store::SAFETY_PREFIX;

async fn dump_into(
    cfg: &BackupConfig,
    file: BackupFile,
    cancel: &CancellationToken,
) -> Result<Committed> {
    match &cfg.database {
        Database::Postgres(target) => db::postgres::backup(target, file, cancel, cfg.timeout).await,
        Database::Sqlite(target) => {
            let (target, cancel, timeout) = (target.clone(), cancel.clone(), cfg.timeout);
            tokio::task::spawn_blocking(move || db::sqlite::backup(&target, file, &cancel, timeout))
                .await
                .map_err(|e| Error::Other(format!("the snapshot task failed: {e}")))?
        }
    }
}

/// Deletes expired backups. A failure here is logged, not fatal: the new
/// backup is safe, and the next run tries again.
fn apply_retention(cfg: &BackupConfig, clock: &dyn Clock) -> Vec<StoredBackup> {
    // A name stamped after both our clock and the system's is planted: it
    // must not count for keep-min (and is never deleted, not being ours).
    let now = clock.now().max(chrono::Utc::now());
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

fn log_upload(report: &SyncReport) {
    match &report.error {
        None => tracing::info!(
            uploaded = report.uploaded.len(),
            remote_deleted = report.deleted.len(),
            "offsite copies up to date"
        ),
        Some(e) => tracing::error!(
            uploaded = report.uploaded.len(),
            error = %e,
            "offsite copy incomplete; the next run tries again"
        ),
    }
}

/// Logs and records the offsite pass: `last_upload` when something was
/// sent, `last_upload_error` (`null` when the bucket is up to date).
fn record_upload(cfg: &BackupConfig, report: &SyncReport) -> Result<()> {
    log_upload(report);
    let path = &cfg.paths.status_file;
    let mut status = Status::read_or_default(path);
    if !report.uploaded.is_empty()
        && let Some(finished) = report.finished
    {
        status.last_upload = Some(state::timestamp(finished));
        status.last_upload_file = report.uploaded.first().map(|sent| sent.name.clone());
    }
    status.last_upload_error = report.error.clone();
    status.write(path)
}

fn record_status(
    cfg: &BackupConfig,
    attempt: chrono::DateTime<chrono::Utc>,
    result: &Result<Outcome>,
    start_error: Option<&str>,
) -> Result<()> {
    let path = &cfg.paths.status_file;
    let mut status = Status::read_or_default(path);
    status.last_attempt = Some(state::timestamp(attempt));
    status.database = Some(cfg.database.kind().to_string());
    status.version = crate::VERSION.to_string();
    match result {
        Ok(outcome) => {
            status.last_backup = Some(state::timestamp(outcome.finished));
            status.last_file = Some(outcome.backup.path.display().to_string());
            status.last_error = None;
            status.last_duration_seconds =
                Some((outcome.duration_seconds * 1000.0).round() / 1000.0);
            status.last_size_bytes = Some(outcome.backup.size);
            status.last_sha256 = Some(outcome.backup.sha256.clone());
        }
        Err(e) => status.last_error = Some(e.to_string()),
    }
    status.start_error = start_error.map(String::from);
    // Every backup file, the app's manual ones and the safety backups too:
    // the app's admin page lists (and offers to download) exactly these.
    if let Ok(files) = local::list_all(&cfg.paths.backup_dir) {
        status.backups = files.into_iter().map(|f| f.file_name).collect();
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::files::create_dir_all(parent)
            .map_err(|e| Error::io("create the directory of", path, e))?;
    }
    status.write(path)
}
