//! Offsite copies: after each run, every local backup the bucket lacks is
//! uploaded (the data first, then its manifest, then its `.sha256`), then remote retention
//! deletes expired copies. A failure here never fails the local backup: it
//! is reported (status, metrics, log) and the next run catches up, because
//! what to upload is decided by comparing the folder with the bucket, not
//! by remembering what failed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::archive::sidecar_path;
use crate::clock::Clock;
use crate::config::RemoteConfig;
use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_SUFFIX, Manifest, manifest_path};
use crate::retention::{self, Policy};
use crate::store::local::{self, StoredBackup};
use crate::store::remote::{RemoteObject, RemoteStore};
use crate::store::s3::S3Store;
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
    /// What remote retention decided for each backup in the bucket, and why.
    pub retention: Vec<(String, retention::Reason)>,
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
    pub has_manifest: bool,
}

impl retention::Named for RemoteBackup {
    fn backup_name(&self) -> &BackupName {
        &self.name
    }
}

/// This tool's backups in the bucket (other objects are ignored), newest first.
/// Names stamped after `now` are left out (see [`stamped_in_future`]).
pub async fn list_backups(
    store: &dyn RemoteStore,
    now: DateTime<Utc>,
) -> Result<Vec<RemoteBackup>> {
    let objects = store.list().await?;
    let place = store.describe();
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
                has_manifest: names.contains(format!("{}{MANIFEST_SUFFIX}", object.name).as_str()),
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
    clock: &dyn Clock,
) -> SyncReport {
    match S3Store::connect(remote.settings.clone()).await {
        Ok(store) => sync_with(&store, remote.retention, backup_dir, cancel, clock).await,
        Err(e) => SyncReport {
            error: Some(e.to_string()),
            finished: Some(clock.now()),
            ..SyncReport::default()
        },
    }
}

/// [`sync`] into any store.
pub async fn sync_with(
    store: &dyn RemoteStore,
    retention: Policy,
    backup_dir: &std::path::Path,
    cancel: &CancellationToken,
    clock: &dyn Clock,
) -> SyncReport {
    let mut report = SyncReport::default();
    let now = clock.now();
    if let Err(e) = sync_into(store, retention, backup_dir, cancel, now, &mut report).await {
        report.error.get_or_insert_with(|| e.to_string());
    }
    report.finished = Some(clock.now());
    report
}

async fn sync_into(
    store: &dyn RemoteStore,
    retention: Policy,
    backup_dir: &std::path::Path,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
    report: &mut SyncReport,
) -> Result<()> {
    // Parts of an upload a crash or an unreachable server kept us from
    // aborting stay billed; one this old is nobody's any more.
    match store.clean_up_stale_uploads(STALE_UPLOAD_AGE, now).await {
        Ok(aborted) if aborted > 0 => {
            tracing::info!(count = aborted, "aborted abandoned multipart uploads")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot clean up abandoned multipart uploads"),
    }
    let present: BTreeSet<String> = store.list().await?.into_iter().map(|o| o.name).collect();
    let local = local::list_at(backup_dir, now)?;
    // A local backup remote retention would delete at once is not sent.
    let too_old: BTreeSet<String> = retention::expired(&local, retention, now)
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
        if let Err(e) = send(store, backup, &present, cancel, report).await {
            report.failed += 1;
            tracing::error!(file = %name, error = %e, "upload failed; the next run tries again");
            return Err(e);
        }
    }
    apply_remote_retention(store, retention, now, report).await
}

/// Sends `backup`, then its manifest (when it has one), then its sidecar,
/// each only when the bucket lacks it: a backup whose `.sha256` is in the
/// bucket is complete there, as it is on disk.
async fn send(
    store: &dyn RemoteStore,
    backup: &StoredBackup,
    present: &BTreeSet<String>,
    cancel: &CancellationToken,
    report: &mut SyncReport,
) -> Result<()> {
    let name = backup.name.file_name();
    let sidecar_name = format!("{name}.sha256");
    let manifest_name = format!("{name}{MANIFEST_SUFFIX}");
    let manifest = manifest_path(&backup.path);
    let manifest_missing = !present.contains(&manifest_name) && manifest.is_file();
    if present.contains(&name) && present.contains(&sidecar_name) && !manifest_missing {
        return Ok(());
    }
    // backupd writes the sidecar after the data, from the bytes it wrote: a
    // file without a matching one is not a backup it finished (or it was
    // planted, or altered). Anyone who can write BACKUP_DIR can write a
    // sidecar too, so this keeps out mistakes and crude plants; encryption
    // with RESTORE_REQUIRE_ENCRYPTED is what keeps out a careful attacker.
    let path = backup.path.clone();
    let matches =
        tokio::task::spawn_blocking(move || crate::inspect::sidecar::sidecar_matches(&path))
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
        let uploaded = store.put(&backup.path, &name, cancel).await?;
        let duration = started.elapsed();
        tracing::info!(
            file = %name,
            bytes = uploaded.bytes,
            parts = uploaded.parts,
            duration_seconds = format!("{:.2}", duration.as_secs_f64()),
            to = %store.location(&name),
            "uploaded"
        );
        report.uploaded.push(Sent {
            name: name.clone(),
            bytes: uploaded.bytes,
            duration,
        });
    }
    if manifest_missing {
        // Only a manifest that reads as one: the bucket's readers trust
        // nothing more than the local ones do, but junk is not sent.
        match Manifest::read(&manifest) {
            Ok(Some(_)) => {
                store.put(&manifest, &manifest_name, cancel).await?;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(file = %name, error = %e, "not uploading the manifest"),
        }
    }
    if !present.contains(&sidecar_name) {
        store
            .put(&sidecar_path(&backup.path), &sidecar_name, cancel)
            .await?;
    }
    Ok(())
}

async fn apply_remote_retention(
    store: &dyn RemoteStore,
    policy: Policy,
    now: DateTime<Utc>,
    report: &mut SyncReport,
) -> Result<()> {
    let backups = list_backups(store, now).await?;
    // The rule is the local one, over the names in the bucket; objects
    // that are not our names never reach it.
    for decision in retention::decide(&backups, policy, now) {
        let name = decision.backup.object.name.clone();
        report.retention.push((name.clone(), decision.reason));
        if !decision.reason.deletes() {
            continue;
        }
        store.delete(&name).await?;
        if decision.backup.has_manifest {
            store.delete(&format!("{name}{MANIFEST_SUFFIX}")).await?;
        }
        if decision.backup.has_sidecar {
            store.delete(&format!("{name}.sha256")).await?;
        }
        tracing::info!(file = %name, why = %decision.reason, "remote retention deleted an old backup");
        report.deleted.push(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Kind;
    use crate::store::memory::MemoryStore;
    use chrono::TimeZone;
    use sha2::{Digest, Sha256};
    use std::path::Path;

    struct FixedClock(DateTime<Utc>);

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    const OFF: Policy = Policy {
        days: 0,
        keep_min: 0,
    };

    fn name(kind: Kind, hours_ago: i64) -> String {
        BackupName::new(kind, now() - chrono::Duration::hours(hours_ago), 0).file_name()
    }

    enum Sidecar {
        Matching,
        Missing,
        Wrong,
    }

    /// A backup in `dir` as backupd leaves it (or not quite, per `sidecar`).
    fn local_backup(dir: &Path, name: &str, sidecar: Sidecar) {
        let data = format!("the bytes of {name}");
        std::fs::write(dir.join(name), &data).unwrap();
        let sha256 = match sidecar {
            Sidecar::Matching => hex::encode(Sha256::digest(&data)),
            Sidecar::Wrong => "0".repeat(64),
            Sidecar::Missing => return,
        };
        std::fs::write(
            dir.join(format!("{name}.sha256")),
            format!("{sha256}  {name}\n"),
        )
        .unwrap();
    }

    async fn pass(store: &MemoryStore, policy: Policy, dir: &Path) -> SyncReport {
        sync_with(
            store,
            policy,
            dir,
            &CancellationToken::new(),
            &FixedClock(now()),
        )
        .await
    }

    fn sent(report: &SyncReport) -> Vec<String> {
        report.uploaded.iter().map(|s| s.name.clone()).collect()
    }

    #[tokio::test]
    async fn catch_up_sends_what_the_bucket_lacks_data_then_sidecar_and_skips_unfinished_files() {
        let dir = tempfile::tempdir().unwrap();
        let (new, unsigned, altered, present, half) = (
            name(Kind::PgDump, 1),
            name(Kind::PgDump, 2),
            name(Kind::PgDump, 3),
            name(Kind::PgDump, 4),
            name(Kind::PgDump, 5),
        );
        local_backup(dir.path(), &new, Sidecar::Matching);
        local_backup(dir.path(), &unsigned, Sidecar::Missing);
        local_backup(dir.path(), &altered, Sidecar::Wrong);
        local_backup(dir.path(), &present, Sidecar::Matching);
        local_backup(dir.path(), &half, Sidecar::Matching);
        let store = MemoryStore::new();
        store.insert(&present, "already there");
        store.insert(&format!("{present}.sha256"), "already there");
        // An earlier pass died between the data and its checksum.
        store.insert(&half, "already there");
        store.insert("notes.txt", "not ours");

        let report = pass(&store, OFF, dir.path()).await;

        assert_eq!(report.error, None);
        assert_eq!(report.failed, 0);
        assert_eq!(sent(&report), vec![new.clone()], "backups, not sidecars");
        assert_eq!(
            store.puts(),
            vec![
                new.clone(),
                format!("{new}.sha256"),
                format!("{half}.sha256")
            ],
            "each backup's data before its checksum; what is there is not sent again"
        );
        assert_eq!(
            store.object(&new).unwrap(),
            std::fs::read(dir.path().join(&new)).unwrap()
        );
        assert_eq!(store.object(&half).unwrap(), b"already there");
        assert_eq!(store.deletes(), Vec::<String>::new());
        assert_eq!(report.finished, Some(now()));

        // Up to date: the next pass sends nothing.
        let again = pass(&store, OFF, dir.path()).await;
        assert_eq!((sent(&again).len(), again.error), (0, None));
        assert_eq!(store.puts().len(), 3);
    }

    /// `NAME.manifest.json` beside a local backup made by [`local_backup`].
    fn local_manifest(dir: &Path, name: &str) {
        let data = format!("the bytes of {name}");
        let sha256 = hex::encode(Sha256::digest(&data));
        let manifest =
            crate::manifest::record::samples::postgres(name, &sha256, &[("public.t", 1)]);
        std::fs::write(manifest_path(&dir.join(name)), manifest.to_json()).unwrap();
    }

    #[tokio::test]
    async fn the_manifest_goes_after_the_data_and_before_the_checksum_and_is_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let (new, older, junk) = (
            name(Kind::PgDump, 1),
            name(Kind::PgDump, 2),
            name(Kind::PgDump, 3),
        );
        for n in [&new, &older, &junk] {
            local_backup(dir.path(), n, Sidecar::Matching);
        }
        local_manifest(dir.path(), &new);
        local_manifest(dir.path(), &older);
        std::fs::write(manifest_path(&dir.path().join(&junk)), b"not a manifest").unwrap();
        let store = MemoryStore::new();
        // Uploaded by a version that wrote no manifests.
        store.insert(&older, "already there");
        store.insert(&format!("{older}.sha256"), "already there");
        store.insert(&junk, "already there");
        store.insert(&format!("{junk}.sha256"), "already there");

        let report = pass(&store, OFF, dir.path()).await;

        assert_eq!(report.error, None);
        assert_eq!(
            store.puts(),
            vec![
                new.clone(),
                format!("{new}.manifest.json"),
                format!("{new}.sha256"),
                format!("{older}.manifest.json"),
            ],
            "data, manifest, checksum; a missing manifest caught up; junk never sent"
        );
        let again = pass(&store, OFF, dir.path()).await;
        assert_eq!(again.error, None);
        assert_eq!(store.puts().len(), 4, "nothing sent twice");
    }

    #[tokio::test]
    async fn remote_retention_deletes_the_manifest_with_its_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let (recent, old) = (name(Kind::PgDump, 1), name(Kind::PgDump, 24 * 10));
        for n in [&recent, &old] {
            store.insert(n, "data");
            store.insert(&format!("{n}.manifest.json"), "manifest");
            store.insert(&format!("{n}.sha256"), "checksum");
        }
        let policy = Policy {
            days: 7,
            keep_min: 1,
        };
        let report = pass(&store, policy, dir.path()).await;
        assert_eq!(report.error, None);
        assert_eq!(
            store.deletes(),
            vec![
                old.clone(),
                format!("{old}.manifest.json"),
                format!("{old}.sha256")
            ]
        );
        assert!(store.names().contains(&format!("{recent}.manifest.json")));
    }

    #[tokio::test]
    async fn the_first_failure_ends_the_pass_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=3).map(|h| name(Kind::Sqlite, h)).collect();
        for n in &names {
            local_backup(dir.path(), n, Sidecar::Matching);
        }
        let store = MemoryStore::new();
        store.fail_puts_of(&names[1]);
        // Expired in the bucket: retention would delete it, had the pass got there.
        let expired = name(Kind::Sqlite, 24 * 30);
        store.insert(&expired, "old");
        let policy = Policy {
            days: 7,
            keep_min: 1,
        };

        let report = pass(&store, policy, dir.path()).await;

        assert_eq!(
            store.puts(),
            vec![names[0].clone(), format!("{}.sha256", names[0])]
        );
        assert_eq!(sent(&report), vec![names[0].clone()]);
        assert_eq!(report.failed, 1);
        let error = report.error.expect("the failure is reported");
        assert!(error.contains(&format!("memory://{}", names[1])), "{error}");
        assert!(error.starts_with("cannot upload "), "{error}");
        assert_eq!(
            store.deletes(),
            Vec::<String>::new(),
            "retention did not run"
        );
        assert!(store.names().contains(&expired));
        assert_eq!(report.finished, Some(now()));
    }

    #[tokio::test]
    async fn remote_retention_deletes_only_our_old_names_keeps_the_newest_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let recent = name(Kind::PgDump, 1);
        local_backup(dir.path(), &recent, Sidecar::Matching);
        // Expired here too: not sent only to be deleted.
        let old_local = name(Kind::PgDump, 24 * 20);
        local_backup(dir.path(), &old_local, Sidecar::Matching);
        let store = MemoryStore::new();
        let (unsigned, older, oldest) = (
            name(Kind::PgDump, 24 * 8),
            name(Kind::PgDump, 24 * 9),
            name(Kind::PgDump, 24 * 10),
        );
        let only_sqlite = name(Kind::Sqlite, 24 * 30);
        for n in [&older, &oldest, &only_sqlite] {
            store.insert(n, "data");
            store.insert(&format!("{n}.sha256"), "checksum");
        }
        store.insert(&unsigned, "data without its checksum");
        let foreign = [
            "pg_dump-old.sql.gz",
            "notes.txt",
            "pg_dump-20200101T000000Z.sql.gz.bak",
        ];
        for f in foreign {
            store.insert(f, "not ours");
        }
        let policy = Policy {
            days: 7,
            keep_min: 1,
        };

        let report = pass(&store, policy, dir.path()).await;

        assert_eq!(report.error, None);
        assert_eq!(
            store.puts(),
            vec![recent.clone(), format!("{recent}.sha256")]
        );
        assert_eq!(
            store.deletes(),
            vec![
                unsigned.clone(),
                older.clone(),
                format!("{older}.sha256"),
                oldest.clone(),
                format!("{oldest}.sha256")
            ]
        );
        assert_eq!(
            report.deleted,
            vec![unsigned.clone(), older.clone(), oldest.clone()]
        );
        for f in foreign {
            assert!(store.names().contains(&f.to_string()), "{f} was deleted");
        }
        let kept = "newest 1 of its kind (the newest 1 are kept)".to_string();
        let expired =
            |days: u32| format!("{days} day(s) old, older than 7 day(s) and not among the newest");
        let why: Vec<(String, String)> = report
            .retention
            .iter()
            .map(|(n, r)| (n.clone(), r.to_string()))
            .collect();
        assert_eq!(
            why,
            vec![
                (recent, kept.clone()),
                (unsigned, expired(8)),
                (older, expired(9)),
                (oldest, expired(10)),
                (only_sqlite, kept),
            ]
        );
    }

    #[tokio::test]
    async fn a_bucket_that_cannot_be_listed_gets_nothing_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        local_backup(dir.path(), &name(Kind::PgDump, 1), Sidecar::Matching);
        let store = MemoryStore::new();
        store.fail_lists();
        let report = pass(&store, OFF, dir.path()).await;
        assert_eq!(store.puts(), Vec::<String>::new());
        let error = report.error.expect("reported");
        assert!(error.starts_with("cannot list memory://"), "{error}");
    }

    #[tokio::test]
    async fn a_cancelled_pass_stops_before_the_next_file() {
        let dir = tempfile::tempdir().unwrap();
        local_backup(dir.path(), &name(Kind::PgDump, 1), Sidecar::Matching);
        let store = MemoryStore::new();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let report = sync_with(&store, OFF, dir.path(), &cancel, &FixedClock(now())).await;
        assert_eq!(store.puts(), Vec::<String>::new());
        assert_eq!(report.error, Some(Error::Cancelled.to_string()));
    }
}
