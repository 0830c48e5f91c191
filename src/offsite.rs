//! Offsite copies: after each run, every local backup the bucket lacks is
//! uploaded (the data first, then its `.sha256`), then remote retention
//! deletes expired copies. A failure here never fails the local backup: it
//! is reported (status, metrics, log) and the next run catches up, because
//! what to upload is decided by comparing the folder with the bucket, not
//! by remembering what failed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::archive::sidecar_path;
use crate::config::RemoteConfig;
use crate::error::{Error, Result};
use crate::retention;
use crate::store::local::{self, StoredBackup};
use crate::store::s3::{RemoteObject, S3Store};
use crate::store::{BackupName, stamped_in_future};

/// A multipart upload under the prefix started longer ago than this is
/// abandoned (no backup plus upload takes two days) and is aborted.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(2 * 86_400);

/// One file sent to the bucket.
#[derive(Debug, Clone)]
pub struct Sent {
    pub name: String,
    pub bytes: u64,
    pub duration: Duration,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Backups (not sidecars) uploaded.
    pub uploaded: Vec<Sent>,
    /// Backups that failed to upload.
    pub failed: usize,
    /// Remote backups deleted by retention.
    pub deleted: Vec<String>,
    /// The first thing that went wrong, for the status file; `None` when
    /// everything that had to be sent was sent.
    pub error: Option<String>,
    pub finished: Option<DateTime<Utc>>,
}

/// A backup stored in the bucket, with what is known of it.
#[derive(Debug, Clone)]
pub struct RemoteBackup {
    pub name: BackupName,
    pub object: RemoteObject,
    pub has_sidecar: bool,
}

/// This tool's backups in the bucket (other objects are ignored), newest first.
/// Names stamped in the future are left out (see [`stamped_in_future`]).
pub async fn list_backups(store: &S3Store) -> Result<Vec<RemoteBackup>> {
    let objects = store.list().await?;
    let (now, place) = (Utc::now(), store.describe());
    let names: BTreeSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let mut backups: Vec<RemoteBackup> = objects
        .iter()
        .filter_map(|object| {
            let name = BackupName::parse(&object.name)?;
            if stamped_in_future(&name, now, &place) {
                return None;
            }
            Some(RemoteBackup {
                has_sidecar: names.contains(format!("{}.sha256", object.name).as_str()),
                name,
                object: object.clone(),
            })
        })
        .collect();
    backups.sort_by(|a, b| BackupName::newest_first(&a.name, &b.name));
    Ok(backups)
}

/// Uploads what the bucket lacks, then applies remote retention. Call it
/// with the backup folder locked, so local retention cannot delete a file
/// while it is being sent.
pub async fn sync(
    remote: &RemoteConfig,
    backup_dir: &std::path::Path,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> SyncReport {
    let mut report = SyncReport::default();
    if let Err(e) = sync_into(remote, backup_dir, cancel, now, &mut report).await {
        report.error.get_or_insert_with(|| e.to_string());
    }
    report.finished = Some(Utc::now());
    report
}

async fn sync_into(
    remote: &RemoteConfig,
    backup_dir: &std::path::Path,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
    report: &mut SyncReport,
) -> Result<()> {
    let store = S3Store::connect(remote.settings.clone()).await?;
    // Parts of an upload a crash or an unreachable server kept us from
    // aborting stay billed; one this old is nobody's any more.
    match store.abort_stale_uploads(STALE_UPLOAD_AGE).await {
        Ok(aborted) if !aborted.is_empty() => {
            tracing::info!(count = aborted.len(), "aborted abandoned multipart uploads")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot clean up abandoned multipart uploads"),
    }
    let present: BTreeSet<String> = store.list().await?.into_iter().map(|o| o.name).collect();
    let local = local::list_at(backup_dir, now.max(Utc::now()))?;
    // A local backup remote retention would delete at once is not sent.
    let too_old: BTreeSet<String> = retention::expired(&local, remote.retention, now)
        .into_iter()
        .map(|b| b.name.file_name())
        .collect();
    for backup in &local {
        let name = backup.name.file_name();
        if too_old.contains(&name) {
            continue;
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // The first failure ends the pass: the SDK has already retried it,
        // and the next file would most likely wait out the same outage.
        if let Err(e) = send(&store, backup, &present, cancel, report).await {
            report.failed += 1;
            tracing::error!(file = %name, error = %e, "upload failed; the next run tries again");
            return Err(e);
        }
    }
    apply_remote_retention(&store, remote, now, report).await
}

/// Sends `backup` and then its sidecar, each only when the bucket lacks it.
async fn send(
    store: &S3Store,
    backup: &StoredBackup,
    present: &BTreeSet<String>,
    cancel: &CancellationToken,
    report: &mut SyncReport,
) -> Result<()> {
    let name = backup.name.file_name();
    let sidecar_name = format!("{name}.sha256");
    if present.contains(&name) && present.contains(&sidecar_name) {
        return Ok(());
    }
    // backupd writes the sidecar after the data, from the bytes it wrote: a
    // file without a matching one is not a backup it finished (or it was
    // planted, or altered). Anyone who can write BACKUP_DIR can write a
    // sidecar too, so this keeps out mistakes and crude plants; encryption
    // with RESTORE_REQUIRE_ENCRYPTED is what keeps out a careful attacker.
    let path = backup.path.clone();
    let matches = tokio::task::spawn_blocking(move || crate::verify::sidecar_matches(&path))
        .await
        .map_err(|e| Error::Other(format!("the checksum task failed: {e}")))??;
    if !matches {
        tracing::warn!(
            file = %name,
            "not uploading: it has no .sha256 beside it that matches (not a backup backupd finished)"
        );
        return Ok(());
    }
    if !present.contains(&name) {
        let started = Instant::now();
        let uploaded = store.upload(&backup.path, &name, cancel).await?;
        let duration = started.elapsed();
        tracing::info!(
            file = %name,
            bytes = uploaded.bytes,
            parts = uploaded.parts,
            duration_seconds = format!("{:.2}", duration.as_secs_f64()),
            to = %store.url_for(&uploaded.key),
            "uploaded"
        );
        report.uploaded.push(Sent {
            name: name.clone(),
            bytes: uploaded.bytes,
            duration,
        });
    }
    if !present.contains(&sidecar_name) {
        store
            .upload(&sidecar_path(&backup.path), &sidecar_name, cancel)
            .await?;
    }
    Ok(())
}

async fn apply_remote_retention(
    store: &S3Store,
    remote: &RemoteConfig,
    now: DateTime<Utc>,
    report: &mut SyncReport,
) -> Result<()> {
    let backups = list_backups(store).await?;
    // The retention rule is the local one, applied to names in the bucket.
    let as_stored: Vec<StoredBackup> = backups
        .iter()
        .map(|b| StoredBackup {
            name: b.name.clone(),
            path: b.object.key.clone().into(),
            size: b.object.size,
            has_sidecar: b.has_sidecar,
        })
        .collect();
    for doomed in retention::expired(&as_stored, remote.retention, now) {
        let name = doomed.name.file_name();
        store.delete(&name).await?;
        if doomed.has_sidecar {
            store.delete(&format!("{name}.sha256")).await?;
        }
        tracing::info!(file = %name, "remote retention deleted an old backup");
        report.deleted.push(name);
    }
    Ok(())
}
