//! `backupd restore`: the `db-restore` service. Watches the incoming folder,
//! checks a dropped backup completely, stops the app's containers, takes a
//! safety backup, restores without risking the live database, starts the
//! containers again (also after a failure) and records everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backup;
use crate::cli::RestoreArgs;
use crate::clock::{Clock, SystemClock};
use crate::config::RestoreConfig;
use crate::container::docker::{DockerControl, HealthOutcome, StopOutcome};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::offsite;
use crate::restore::Recovered;
use crate::restore::check::{self, Checked};
use crate::restore::failed::move_to_failed;
use crate::restore::input::{CHANGED_AFTER_CHECK, PrivateDir};
use crate::restore::kind;
use crate::restore::postgres::{self as pg_restore, SwapRecord};
use crate::restore::sqlite as sqlite_restore;
use crate::restore::state::{HistoryEntry, InProgress, LastProcessed, Phase, RestoreState};
use crate::state::timestamp;
use crate::store::Kind;
use crate::store::local::DirLock;
use crate::store::s3::{S3Store, parse_s3_url};
use crate::watch::{Found, WatchConfig, Watcher};

/// Why a plain file is refused under `RESTORE_REQUIRE_ENCRYPTED=true`.
pub const REQUIRE_ENCRYPTED_REASON: &str = "refused: the file is not encrypted (.enc) and RESTORE_REQUIRE_ENCRYPTED=true accepts only Fernet-encrypted backups";

pub async fn run(args: &RestoreArgs) -> Result<()> {
    let cfg = RestoreConfig::from_args(args)?;
    let cancel = crate::shutdown::on_signal();
    let docker = if cfg.uses_containers() {
        let docker = DockerControl::connect(cfg.docker_host.as_deref()).await?;
        tracing::info!(api_version = %docker.api_version(), "connected to the Docker engine");
        Some(docker)
    } else {
        None
    };
    let service = Service { cfg, docker };
    service.warn_if_superuser().await;
    // A dry run changes nothing, not even an interrupted restore's leftovers.
    if !args.dry_run {
        let _lock = service.exclusive().await?;
        service.recover_interrupted().await?;
        service.drop_leftover_staging().await;
    }

    // One-shot restores wait for a restore the service is running, and
    // hold the service off until they are done.
    let _lock = if (args.file.is_some() || args.from_s3.is_some()) && !args.dry_run {
        Some(service.exclusive().await?)
    } else {
        None
    };
    if let Some(file) = &args.file {
        return match parse_s3_url(file) {
            Ok((_bucket, key)) => {
                let store = service.store().await?;
                service
                    .one_remote(&store, &key, args.dry_run, &cancel)
                    .await
            }
            Err(_) if file.to_ascii_lowercase().starts_with("s3://") => {
                Err(parse_s3_url(file).unwrap_err())
            }
            Err(_) => {
                service
                    .one_shot(Path::new(file), args.dry_run, None, &cancel)
                    .await
            }
        };
    }
    if let Some(which) = &args.from_s3 {
        let store = service.store().await?;
        let key = service.pick_remote(&store, which).await?;
        return service
            .one_remote(&store, &key, args.dry_run, &cancel)
            .await;
    }
    if args.dry_run {
        return Err(Error::Config("--dry-run needs --file or --from-s3".into()));
    }

    check::remove_legacy_decrypted(&service.cfg.watch_dir);
    let mut watcher = Watcher::start(WatchConfig {
        dir: service.cfg.watch_dir.clone(),
        poll_interval: service.cfg.poll_interval,
        settle: service.cfg.settle,
        use_notify: service.cfg.use_notify,
    })?;
    tracing::info!(
        watch_dir = %service.cfg.watch_dir.display(),
        database = %service.cfg.database,
        containers = ?service.cfg.stop_containers,
        safety_dir = %service.cfg.backup.paths.backup_dir.display(),
        "restore service watching for backups"
    );
    while let Some(batch) = watcher.next_batch(&cancel).await {
        for handled in service.handle_batch(batch, &cancel).await {
            watcher.forget(&handled);
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    tracing::info!("restore service stopped");
    Ok(())
}

struct Service {
    cfg: RestoreConfig,
    docker: Option<DockerControl>,
}

/// The stamp of a restore started at `at` ([`pg_restore::STAMP_FORMAT`],
/// microseconds), strictly later than any stamp this process gave before:
/// two restores never share the names built from it (`<db>_restore_…`,
/// `<db>_pre_restore_…`, `.pre-restore-…`). Other processes wait for the
/// restore lock, so their restores start microseconds apart at least.
fn unique_stamp(at: chrono::DateTime<Utc>) -> String {
    static LAST: std::sync::Mutex<Option<chrono::DateTime<Utc>>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let at = match *last {
        Some(prev) if at <= prev => prev + chrono::Duration::microseconds(1),
        _ => at,
    };
    *last = Some(at);
    at.format(pg_restore::STAMP_FORMAT).to_string()
}

/// Where the file came from: a file dropped into the watch folder is the
/// service's to delete or move; a file named with `--file` stays where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Dropped,
    Given,
}

/// How one restore attempt ended.
struct Attempt {
    result: Result<(), String>,
    containers_stopped: Vec<String>,
    container_health: BTreeMap<String, String>,
    previous_database: Option<String>,
    safety_backup: Option<String>,
    sha256: Option<String>,
    /// Why some containers were not started (the restore's own result is
    /// `result`).
    start_error: Option<String>,
    /// The engine did not answer while starting: `in_progress` stays, so
    /// the next start of backupd starts them.
    start_pending: bool,
}

/// Why starting containers did not fully work.
struct StartFailure {
    message: String,
    /// The engine stopped answering (retried for RESTORE_START_RETRY_SECONDS).
    engine_lost: bool,
}

/// Backoff between attempts to start a container while the engine does not
/// answer: 1 s, doubling, at most 30 s, within RESTORE_START_RETRY_SECONDS.
const START_RETRY_FIRST: Duration = Duration::from_secs(1);
const START_RETRY_MAX: Duration = Duration::from_secs(30);
/// Added to the stop grace period when waiting for a stop that may still be
/// in flight in the engine (as the stop request's own deadline).
const STOP_IN_FLIGHT_SLACK: Duration = Duration::from_secs(15);

impl Service {
    /// A superuser restore role can make the server run programs and read
    /// its files (COPY … PROGRAM, pg_read_file): say so at start-up.
    async fn warn_if_superuser(&self) {
        let Database::Postgres(target) = &self.cfg.database else {
            return;
        };
        match pg_restore::superuser_role(target).await {
            Ok(Some(role)) => tracing::warn!(
                role = %role,
                "the restore role is a superuser: SQL in a restore file could run programs on the database server and read its files; the safe set-up is a role without SUPERUSER that has CREATEDB and owns the database (see docker/README.md)"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether the restore role is a superuser")
            }
        }
    }

    /// Drops staging databases interrupted restores left (under the lock).
    async fn drop_leftover_staging(&self) {
        let Database::Postgres(target) = &self.cfg.database else {
            return;
        };
        if let Err(e) = pg_restore::drop_leftover_staging(target).await {
            tracing::warn!(error = %e, "cannot clean up leftover staging databases; trying again before the next restore");
        }
    }

    fn state(&self) -> RestoreState {
        RestoreState::read(&self.cfg.state_file).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "starting a fresh restore state file");
            RestoreState::default()
        })
    }

    fn save(&self, state: &RestoreState) {
        if let Err(e) = state.write(&self.cfg.state_file) {
            tracing::error!(error = %e, "cannot write the restore state file");
        }
    }

    /// Returns the paths it moved or deleted, for the watcher to forget.
    async fn handle_batch(&self, batch: Vec<Found>, cancel: &CancellationToken) -> Vec<PathBuf> {
        let _lock = match self.exclusive().await {
            Ok(lock) => lock,
            Err(e) => {
                tracing::error!(error = %e, "cannot take the restore lock; trying again at the next sweep");
                return Vec::new();
            }
        };
        let mut handled = Vec::new();
        let mut ready = Vec::new();
        for found in batch {
            match found {
                Found::Refused { path, reason } => {
                    self.refuse(&path, &reason, None);
                    handled.push(path);
                }
                Found::Ready(file) => ready.push(file),
            }
        }
        // The newest wins; older ones are superseded and never restored later.
        ready.sort_by(|a, b| b.mtime.cmp(&a.mtime).then_with(|| b.name.cmp(&a.name)));
        let mut ready = ready.into_iter();
        let Some(newest) = ready.next() else {
            return handled;
        };
        for older in ready {
            self.refuse(
                &older.path,
                &format!("superseded by {}", newest.name),
                Some("superseded"),
            );
            handled.push(older.path);
        }
        let mtime = newest
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = self
            .restore_file(&newest.path, mtime, Origin::Dropped, None, cancel)
            .await;
        handled.push(newest.path);
        handled
    }

    fn refuse(&self, path: &Path, reason: &str, result: Option<&str>) {
        if let Err(e) = move_to_failed(path, &self.cfg.failed_dir, reason) {
            tracing::error!(error = %e, file = %path.display(), "cannot move the file to the failed folder");
        }
        let now = timestamp(Utc::now());
        let mut state = self.state();
        state.push_history(HistoryEntry {
            file: crate::archive::file_name(path),
            sha256: None,
            result: result.unwrap_or("refused").into(),
            error: Some(reason.into()),
            note: None,
            started_at: now.clone(),
            finished_at: now,
            duration_seconds: 0.0,
            containers_stopped: vec![],
            container_health: BTreeMap::new(),
            previous_database: None,
            safety_backup: None,
        });
        self.save(&state);
    }

    /// One restore at a time per state file: the service holds this lock
    /// while it restores or recovers, a one-shot restore for its whole run,
    /// so neither ever "recovers" a restore the other is doing.
    async fn exclusive(&self) -> Result<DirLock> {
        let dir = self
            .cfg
            .state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::files::create_dir_all(dir).map_err(|e| Error::io("create the folder", dir, e))?;
        // Beside the state file, never BACKUP_DIR's lock: the safety backup
        // takes that one while this is held.
        let mut lock = self.cfg.state_file.clone().into_os_string();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        tokio::task::spawn_blocking(move || {
            DirLock::acquire_file(&lock, || {
                tracing::info!(
                    "another restore is running (the db-restore service?); waiting for it to finish"
                )
            })
        })
        .await
        .map_err(|e| Error::Other(format!("the lock task failed: {e}")))?
    }

    /// The bucket of `--from-s3` (`AWS_S3_BUCKET`) or of an `s3://` URL.
    async fn store(&self) -> Result<S3Store> {
        let settings = self.cfg.s3.clone().ok_or_else(|| {
            Error::Config("--from-s3 needs AWS_S3_BUCKET (and credentials) to be set".into())
        })?;
        S3Store::connect(settings).await
    }

    /// The key of `--from-s3 latest` (the newest backup of the configured
    /// database's kind) or of `--from-s3 NAME`.
    async fn pick_remote(&self, store: &S3Store, which: &str) -> Result<String> {
        if which != "latest" {
            return Ok(store.key_for(which));
        }
        let kind = match self.cfg.database {
            Database::Postgres(_) => Kind::PgDump,
            Database::Sqlite(_) => Kind::Sqlite,
        };
        // Future-stamped names are already left out by the listing; an
        // object without its `.sha256` is not one backupd uploaded.
        let newest = offsite::list_backups(store, SystemClock.now())
            .await?
            .into_iter()
            .filter(|b| b.name.kind == kind)
            .filter(|b| !self.cfg.require_encrypted || b.name.encrypted)
            .find(|b| {
                if !b.has_sidecar {
                    tracing::warn!(file = %b.object.name, "skipping an object without its .sha256 (not uploaded by backupd)");
                }
                b.has_sidecar
            })
            .ok_or_else(|| {
                Error::Other(format!(
                    "no {}{} backup with its .sha256 in {}",
                    if self.cfg.require_encrypted { "encrypted " } else { "" },
                    self.cfg.database.kind(),
                    store.describe()
                ))
            })?;
        tracing::info!(file = %newest.object.name, "the newest backup in the bucket");
        Ok(newest.object.key)
    }

    /// Downloads `key` (streaming, checked against its `.sha256` object)
    /// into `<parent of the watch folder>/downloads/`, restores it through
    /// the same path as `--file`, and removes the download: the object in
    /// the bucket is the copy kept.
    async fn one_remote(
        &self,
        store: &S3Store,
        key: &str,
        dry_run: bool,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let name = key.rsplit('/').next().unwrap_or(key).to_string();
        let url = store.url_for(key);
        if kind::classify(&name).is_none() {
            return Err(Error::Other(format!(
                "{url}: not a backup file name (.sql, .sql.gz, .dump, .dump.gz, .db, .db.gz, each optionally .enc)"
            )));
        }
        if self.cfg.require_encrypted && !name.ends_with(".enc") {
            return Err(Error::Other(format!("{url}: {REQUIRE_ENCRYPTED_REASON}")));
        }
        // backupd uploads the data and then its `.sha256`: an object
        // without one is not a backup it made (or its upload never finished).
        store.require_sidecar(key).await?;
        if dry_run {
            return self.one_shot(Path::new(&url), true, None, cancel).await;
        }
        let dir = self
            .cfg
            .watch_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .join("downloads");
        crate::files::create_dir_all(&dir).map_err(|e| Error::io("create the folder", &dir, e))?;
        let dest = dir.join(&name);
        let _ = std::fs::remove_file(&dest);
        let downloaded = store.download(key, &dest, cancel).await?;
        if !downloaded.checksum_verified {
            let _ = std::fs::remove_file(&dest);
            return Err(Error::Other(format!(
                "{url}: its .sha256 object is gone; refusing an unchecked download"
            )));
        }
        tracing::info!(
            from = %url,
            file = %dest.display(),
            bytes = downloaded.bytes,
            checksum_verified = downloaded.checksum_verified,
            "downloaded"
        );
        // The downloads folder is not ours alone: the check must read the
        // very bytes the download hashed against the sidecar.
        let result = self
            .one_shot(&dest, false, Some(&downloaded.sha256), cancel)
            .await;
        if let Err(e) = std::fs::remove_file(&dest) {
            tracing::warn!(file = %dest.display(), error = %e, "cannot remove the downloaded copy");
        }
        result
    }

    async fn one_shot(
        &self,
        file: &Path,
        dry_run: bool,
        expected_sha256: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let name = crate::archive::file_name(file);
        let kind = kind::classify(&name).ok_or_else(|| {
            Error::Other(format!(
                "{}: not a backup file name (.sql, .sql.gz, .dump, .dump.gz, .db, .db.gz, each optionally .enc)",
                file.display()
            ))
        })?;
        if dry_run {
            println!("file:       {}", file.display());
            println!(
                "content:    {}{}{}",
                kind.payload.describe(),
                if kind.gzip { ", gzip" } else { "" },
                if kind.encrypted {
                    ", Fernet-encrypted"
                } else {
                    ""
                }
            );
            println!("target:     {}", self.cfg.database);
            if kind.payload.is_postgres() {
                println!("strategy:   {:?}", self.cfg.strategy);
            }
            println!("stop:       {}", self.cfg.stop_containers.join(", "));
            println!(
                "start:      {}",
                self.start_list(&self.cfg.stop_containers).join(", ")
            );
            println!(
                "safety:     {}",
                if self.cfg.safety_backup {
                    format!(
                        "backup first, into {}",
                        self.cfg.backup.paths.backup_dir.display()
                    )
                } else {
                    "none".to_string()
                }
            );
            return Ok(());
        }
        let mtime = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.restore_file(file, mtime, Origin::Given, expected_sha256, cancel)
            .await
            .map_err(Error::Other)
    }

    fn start_list(&self, stopped: &[String]) -> Vec<String> {
        let mut list: Vec<String> = stopped.to_vec();
        for name in &self.cfg.start_containers {
            if !list.contains(name) {
                list.push(name.clone());
            }
        }
        list
    }

    /// Restores one file; the error is the reason recorded.
    async fn restore_file(
        &self,
        path: &Path,
        mtime: f64,
        origin: Origin,
        expected_sha256: Option<&str>,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), String> {
        let span = tracing::info_span!("restore", file = %crate::archive::file_name(path));
        self.restore_file_in_span(path, mtime, origin, expected_sha256, cancel)
            .instrument(span)
            .await
    }

    async fn restore_file_in_span(
        &self,
        path: &Path,
        mtime: f64,
        origin: Origin,
        expected_sha256: Option<&str>,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), String> {
        let started = Instant::now();
        let started_at = Utc::now();
        let stamp = unique_stamp(started_at);
        let name = crate::archive::file_name(path);
        tracing::info!("restore requested");

        let attempt = self.attempt(path, &stamp, expected_sha256, cancel).await;
        let duration = started.elapsed().as_secs_f64();
        let mut state = self.state();
        match state.in_progress.as_mut() {
            // The engine did not answer: the next start of backupd starts
            // the containers and adds that to this history entry.
            Some(p) if attempt.start_pending => {
                p.start_pending = true;
                p.phase = Phase::Starting;
            }
            _ => state.in_progress = None,
        }
        let pending = if attempt.start_pending {
            "; the Docker engine did not answer, so backupd starts them at its next start"
        } else {
            ""
        };
        let (result_word, error) = match (&attempt.result, &attempt.start_error) {
            (Ok(()), None) => ("restored", None),
            (Ok(()), Some(e)) => (
                "restored",
                Some(format!("the database was restored, but {e}{pending}")),
            ),
            (Err(reason), None) => ("failed", Some(reason.clone())),
            (Err(reason), Some(e)) => ("failed", Some(format!("{reason}; {e}{pending}"))),
        };
        state.push_history(HistoryEntry {
            file: name.clone(),
            sha256: attempt.sha256.clone(),
            result: result_word.into(),
            error: error.clone(),
            note: None,
            started_at: timestamp(started_at),
            finished_at: timestamp(Utc::now()),
            duration_seconds: (duration * 1000.0).round() / 1000.0,
            containers_stopped: attempt.containers_stopped.clone(),
            container_health: attempt.container_health.clone(),
            previous_database: attempt.previous_database.clone(),
            safety_backup: attempt.safety_backup.clone(),
        });
        if let Some(p) = state.in_progress.as_mut() {
            // Recovery finds this entry by file and start time.
            p.started_at = timestamp(started_at);
        }
        match &attempt.result {
            Ok(()) => {
                state.last_processed = Some(LastProcessed {
                    path: path.display().to_string(),
                    mtime,
                    completed_at: timestamp(Utc::now()),
                });
                self.save(&state);
                if origin == Origin::Dropped
                    && let Err(e) = std::fs::remove_file(path)
                {
                    tracing::warn!(error = %e, "restored, but cannot delete the file");
                }
                tracing::info!(
                    result = "restored",
                    duration_seconds = format!("{duration:.2}"),
                    "restore finished"
                );
            }
            Err(reason) => {
                self.save(&state);
                if origin == Origin::Dropped
                    && path.exists()
                    && let Err(e) = move_to_failed(path, &self.cfg.failed_dir, reason)
                {
                    tracing::error!(error = %e, "cannot move the file to the failed folder");
                }
                tracing::error!(result = "failed", error = %reason, "restore failed");
            }
        }
        match (attempt.result, error) {
            (Ok(()), Some(e)) => Err(e),
            (result, _) => result,
        }
    }

    async fn attempt(
        &self,
        path: &Path,
        stamp: &str,
        expected_sha256: Option<&str>,
        cancel: &CancellationToken,
    ) -> Attempt {
        let mut attempt = Attempt {
            result: Ok(()),
            containers_stopped: vec![],
            container_health: BTreeMap::new(),
            previous_database: None,
            safety_backup: None,
            sha256: None,
            start_error: None,
            start_pending: false,
        };
        let name = crate::archive::file_name(path);
        let Some(kind) = kind::classify(&name) else {
            attempt.result = Err("not a backup file name".into());
            return attempt;
        };
        if self.cfg.require_encrypted && !kind.encrypted {
            attempt.result = Err(REQUIRE_ENCRYPTED_REASON.into());
            return attempt;
        }
        // 1. Check everything before touching the stack. Plaintext backupd
        // makes goes into a folder only it can enter.
        let private = match PrivateDir::beside_state_file(&self.cfg.state_file) {
            Ok(private) => private,
            Err(reason) => {
                attempt.result = Err(reason.to_string());
                return attempt;
            }
        };
        let checked = check::check(
            path,
            kind,
            &self.cfg.database,
            &self.cfg.keys,
            stamp,
            &private,
        )
        .await;
        let mut checked = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                attempt.result = Err(reason.to_string());
                return attempt;
            }
        };
        attempt.sha256 = Some(checked.sha256.clone());
        if let Some(expected) = expected_sha256
            && expected != checked.sha256
        {
            attempt.result = Err(format!(
                "{CHANGED_AFTER_CHECK}: the download's SHA-256 was {expected} (as its .sha256 object says), the file read now is {}; nothing was stopped or loaded",
                checked.sha256
            ));
            return attempt;
        }
        if let Err(reason) =
            check::same_application(&checked, &self.cfg.database, self.cfg.allow_schema_change)
                .await
        {
            attempt.result = Err(reason.to_string());
            return attempt;
        }
        let to_stop = match self.plan_containers().await {
            Ok(list) => list,
            Err(reason) => {
                attempt.result = Err(reason);
                return attempt;
            }
        };

        // 2. Record the intent before anything is stopped. Containers an
        // earlier restore could not start (the engine was away) are carried
        // over, so this one starts them too.
        let mut state = self.state();
        let carried: Vec<String> = state
            .in_progress
            .as_ref()
            .filter(|p| p.start_pending)
            .map(|p| p.stopped.clone())
            .unwrap_or_default();
        attempt.containers_stopped = carried.clone();
        state.in_progress = Some(InProgress {
            file: path.display().to_string(),
            stamp: stamp.to_string(),
            started_at: timestamp(Utc::now()),
            phase: Phase::Stopping,
            containers: to_stop.clone(),
            stopped: carried,
            stopping: Some(vec![]),
            stop_requested_at: None,
            swap: None,
            start_pending: false,
            database: self.cfg.database.to_string(),
            sqlite: None,
            strategy: matches!(self.cfg.database, Database::Postgres(_))
                .then(|| self.cfg.strategy.to_string()),
            safety_backup: None,
        });
        self.save(&state);

        let result = self
            .stop_restore(
                &mut checked,
                &to_stop,
                stamp,
                &mut attempt,
                &mut state,
                cancel,
            )
            .await;
        // 6. Start again what was stopped (or asked to stop), also after a
        // failure.
        self.set_phase(&mut state, Phase::Starting).await;
        let asked = state
            .in_progress
            .as_ref()
            .map(asked_to_stop)
            .unwrap_or_default();
        if let Err(failure) = self
            .start_containers(&asked, &mut attempt.container_health)
            .await
        {
            tracing::error!(error = %failure.message, "could not start every container");
            attempt.start_error = Some(failure.message);
            attempt.start_pending = failure.engine_lost;
        }
        attempt.result = result;
        attempt
    }

    async fn stop_restore(
        &self,
        checked: &mut Checked,
        to_stop: &[String],
        stamp: &str,
        attempt: &mut Attempt,
        state: &mut RestoreState,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), String> {
        if let Some(docker) = &self.docker {
            for name in to_stop {
                // The intent first: a stop in flight when backupd dies still
                // completes in the engine, and recovery must start it again.
                if let Some(p) = state.in_progress.as_mut() {
                    let stopping = p.stopping.get_or_insert_with(Vec::new);
                    if !stopping.contains(name) {
                        stopping.push(name.clone());
                    }
                    p.stop_requested_at = Some(timestamp(Utc::now()));
                }
                self.save(state);
                match docker.stop(name, self.cfg.stop_timeout).await {
                    Ok(StopOutcome::Stopped) => {
                        if !attempt.containers_stopped.contains(name) {
                            attempt.containers_stopped.push(name.clone());
                        }
                        if let Some(p) = state.in_progress.as_mut()
                            && !p.stopped.contains(name)
                        {
                            p.stopped.push(name.clone());
                        }
                        self.save(state);
                    }
                    Ok(StopOutcome::AlreadyStopped) => {
                        tracing::info!(container = %name, "already stopped");
                        // It was not running before: not ours to start.
                        if let Some(p) = state.in_progress.as_mut()
                            && let Some(stopping) = p.stopping.as_mut()
                        {
                            stopping.retain(|n| n != name);
                        }
                        self.save(state);
                    }
                    Err(e) => return Err(format!("cannot stop container {name}: {e}")),
                }
            }
            if !to_stop.is_empty() {
                tokio::time::sleep(self.cfg.stop_wait).await;
            }
        }

        // 3. A way back for the operator.
        if self.cfg.safety_backup {
            self.set_phase(state, Phase::SafetyBackup).await;
            match backup::safety_backup(&self.cfg.backup, cancel, &SystemClock).await {
                Ok(done) => {
                    let path = done.path.display().to_string();
                    if let Some(p) = state.in_progress.as_mut() {
                        p.safety_backup = Some(path.clone());
                    }
                    self.save(state);
                    attempt.safety_backup = Some(path);
                }
                Err(Error::Database { reason, .. }) if reason.contains("does not exist") => {
                    tracing::info!("no current database to back up first");
                }
                Err(e) => {
                    return Err(format!(
                        "the safety backup failed, so nothing was restored: {e}"
                    ));
                }
            }
        }

        // 4./5. The restore itself.
        self.set_phase(state, Phase::Loading).await;
        match &self.cfg.database {
            Database::Postgres(target) => {
                let opts = pg_restore::Options {
                    strategy: self.cfg.strategy,
                    keep_previous: self.cfg.keep_previous,
                    stamp: stamp.to_string(),
                };
                // What recovery needs to tell whether the swap committed,
                // on disk before the swap.
                let state_file = self.cfg.state_file.clone();
                let record_swap = move |record: &SwapRecord| {
                    record_swap_in(&state_file, record);
                };
                let report = pg_restore::restore_recorded(
                    target,
                    &checked.input,
                    checked.kind,
                    &opts,
                    &record_swap,
                    cancel,
                )
                .await;
                // The hook wrote the state file behind our back.
                *state = self.state();
                let report = report.map_err(|e| e.to_string())?;
                attempt.previous_database = report.previous;
            }
            Database::Sqlite(target) => {
                let prepared = checked
                    .prepared
                    .take()
                    .ok_or("internal: no prepared SQLite file")?;
                let (source, live, stamp_owned) = (
                    prepared.path.clone(),
                    target.path.clone(),
                    stamp.to_string(),
                );
                let evidence = tokio::task::spawn_blocking(move || {
                    sqlite_restore::prepare(&source, &live, &stamp_owned)
                })
                .await
                .map_err(|e| format!("the restore task failed: {e}"))?
                .map_err(|e| e.to_string())?;
                attempt.previous_database = evidence.previous.clone();
                // Recovery judges a crash by this record, so no copy
                // starts without it on disk.
                if let Some(p) = state.in_progress.as_mut() {
                    p.sqlite = Some(evidence.clone());
                }
                state.write(&self.cfg.state_file).map_err(|e| {
                    format!(
                        "cannot record the restore in the state file, so nothing was restored: {e}"
                    )
                })?;
                let (source, live) = (prepared.path.clone(), target.path.clone());
                tokio::task::spawn_blocking(move || {
                    sqlite_restore::apply(&source, &live, &evidence)
                })
                .await
                .map_err(|e| format!("the restore task failed: {e}"))?
                .map_err(|e| e.to_string())?;
                drop(prepared);
            }
        }
        Ok(())
    }

    /// Records the phase; test builds may park here (`BACKUPD_TEST_PAUSE`).
    async fn set_phase(&self, state: &mut RestoreState, phase: Phase) {
        let point = phase.as_str().to_string();
        if let Some(p) = state.in_progress.as_mut() {
            p.phase = phase;
        }
        self.save(state);
        crate::restore::test_pause(&point).await;
    }

    /// The containers to stop: every named one must exist (unless allowed
    /// missing), and backupd never stops the container it runs in.
    async fn plan_containers(&self) -> std::result::Result<Vec<String>, String> {
        let Some(docker) = &self.docker else {
            return Ok(vec![]);
        };
        let own = docker.own_container_id().await;
        let mut plan = Vec::new();
        for name in &self.cfg.stop_containers {
            match docker.inspect(name).await.map_err(|e| e.to_string())? {
                Some(state)
                    if own.as_deref().is_some_and(|own| {
                        state.id.starts_with(own) || own.starts_with(&state.id)
                    }) =>
                {
                    tracing::warn!(container = %name, "not stopping the container backupd runs in");
                }
                Some(_) => plan.push(name.clone()),
                None if self.cfg.allow_missing_containers => {
                    tracing::warn!(container = %name, "container does not exist; going on (RESTORE_ALLOW_MISSING_CONTAINERS)");
                }
                None => {
                    return Err(format!(
                        "container '{name}' (RESTORE_STOP_CONTAINERS) does not exist; nothing was stopped (set RESTORE_ALLOW_MISSING_CONTAINERS=true to go on without it)"
                    ));
                }
            }
        }
        Ok(plan)
    }

    /// Starts the containers (and RESTORE_START_CONTAINERS) and waits for
    /// those with a healthcheck; their health is written into `health` for
    /// the history. While the engine does not answer, starting is retried
    /// (1 s, doubling, at most 30 s apart) for RESTORE_START_RETRY_SECONDS in
    /// all; a container the engine refuses is not retried.
    async fn start_containers(
        &self,
        stopped: &[String],
        health: &mut BTreeMap<String, String>,
    ) -> std::result::Result<(), StartFailure> {
        let Some(docker) = &self.docker else {
            return Ok(());
        };
        let mut errors = Vec::new();
        let mut engine_lost = false;
        let list = self.start_list(stopped);
        let give_up = Instant::now() + self.cfg.start_retry;
        for name in &list {
            if let Err((e, lost)) = start_with_retry(docker, name, give_up).await {
                errors.push(e);
                engine_lost |= lost;
            }
        }
        if engine_lost {
            for name in &list {
                health.insert(name.clone(), "unknown".into());
            }
            return Err(StartFailure {
                message: errors.join("; "),
                engine_lost,
            });
        }
        if !list.is_empty() {
            tokio::time::sleep(self.cfg.start_wait).await;
        }
        for name in &list {
            let outcome = docker.wait_healthy(name, self.cfg.health_timeout).await;
            let word = match &outcome {
                Ok(HealthOutcome::Healthy) => "healthy",
                Ok(HealthOutcome::NoHealthcheck) => "no healthcheck",
                Ok(HealthOutcome::Unhealthy) => "unhealthy",
                Ok(HealthOutcome::TimedOut) => "not healthy within RESTORE_HEALTH_TIMEOUT",
                Ok(HealthOutcome::NotRunning) => "not running",
                Err(_) => "unknown",
            };
            health.insert(name.clone(), word.to_string());
            match outcome {
                Ok(HealthOutcome::Healthy) => tracing::info!(container = %name, "healthy"),
                Ok(HealthOutcome::NoHealthcheck) => {}
                Ok(other) => {
                    tracing::warn!(container = %name, outcome = ?other, "container not healthy after the restore")
                }
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "cannot read the container's health")
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(StartFailure {
                message: errors.join("; "),
                engine_lost,
            })
        }
    }

    /// A stop request sent just before backupd died still completes in the
    /// engine (SIGTERM, the grace period, SIGKILL): starting such a
    /// container at once would find it running and leave it to die. Waits,
    /// at most until grace + 15 s after the request was recorded, for each
    /// container named in `stopping` but not seen stopped to stop.
    async fn settle_in_flight_stops(&self, interrupted: &InProgress, names: &[String]) {
        let Some(docker) = &self.docker else {
            return;
        };
        let Some(requested) = interrupted
            .stop_requested_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            return;
        };
        let window = self.cfg.stop_timeout + STOP_IN_FLIGHT_SLACK;
        let since = (Utc::now() - requested.with_timezone(&Utc))
            .to_std()
            .unwrap_or_default();
        let Some(left) = window.checked_sub(since) else {
            return;
        };
        let until = Instant::now() + left;
        let in_flight = interrupted
            .stopping
            .iter()
            .flatten()
            .filter(|n| !interrupted.stopped.contains(n) && names.contains(n));
        for name in in_flight {
            let mut logged = false;
            loop {
                match docker.inspect(name).await {
                    Ok(Some(c)) if c.running && Instant::now() < until => {
                        if !logged {
                            tracing::info!(
                                container = %name,
                                wait_seconds = until.saturating_duration_since(Instant::now()).as_secs(),
                                "a stop request may still be in flight; waiting for it before starting the container again"
                            );
                            logged = true;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    _ => break,
                }
            }
        }
    }

    /// An `in_progress` entry means the last run died mid-way (or could not
    /// start the containers): put the database back in one piece (or find
    /// the restore had finished), start the configured containers the
    /// intent names, and record what really happened.
    async fn recover_interrupted(&self) -> Result<()> {
        let mut state = self.state();
        let Some(interrupted) = state.in_progress.take() else {
            return Ok(());
        };
        tracing::warn!(file = %interrupted.file, phase = %interrupted.phase, "the previous restore was interrupted; recovering");
        let database: std::result::Result<Recovered, String> = if interrupted.start_pending {
            Ok(Recovered::Finished(
                "the restore had ended; only starting the containers was left".into(),
            ))
        } else {
            match &self.cfg.database {
                Database::Postgres(target) => {
                    pg_restore::recover(target, &interrupted.stamp, interrupted.swap.as_ref())
                        .await
                        .map(|found| inplace_truth(&interrupted, found))
                        .map_err(|e| e.to_string())
                }
                Database::Sqlite(target) => {
                    let (live, stamp, evidence) = (
                        target.path.clone(),
                        interrupted.stamp.clone(),
                        interrupted.sqlite.clone(),
                    );
                    match tokio::task::spawn_blocking(move || {
                        sqlite_restore::recover(&live, &stamp, evidence.as_ref())
                    })
                    .await
                    {
                        Ok(Ok(found)) => Ok(found),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(format!("the recovery task failed: {e}")),
                    }
                }
            }
        };
        // Only containers the operator configured: a tampered state file
        // must not make backupd start arbitrary containers.
        let (containers, skipped): (Vec<String>, Vec<String>) = asked_to_stop(&interrupted)
            .into_iter()
            .partition(|name| self.cfg.is_configured(name));
        for name in &skipped {
            tracing::warn!(
                container = %name,
                "the state file names a container that is in neither RESTORE_STOP_CONTAINERS nor RESTORE_START_CONTAINERS; not starting it"
            );
        }
        self.settle_in_flight_stops(&interrupted, &containers).await;
        let mut health = BTreeMap::new();
        let started = self.start_containers(&containers, &mut health).await;
        let finished_at = timestamp(SystemClock.now());
        let file = PathBuf::from(&interrupted.file);
        let mut notes = Vec::new();
        if !skipped.is_empty() {
            notes.push(format!(
                "not started (not configured): {}",
                skipped.join(", ")
            ));
        }
        if let Err(e) = &started {
            notes.push(e.message.clone());
        }

        if interrupted.start_pending {
            // The restore's own entry is in the history already.
            let note = match &started {
                Ok(()) => format!("containers started by recovery at {finished_at}"),
                Err(_) => format!("recovery at {finished_at} could not start every container"),
            };
            notes.insert(0, note);
            let entry = state.history.iter_mut().find(|h| {
                h.file == crate::archive::file_name(&file) && h.started_at == interrupted.started_at
            });
            match entry {
                Some(entry) => {
                    entry.container_health = health;
                    entry.note = Some(notes.join("; "));
                }
                None => tracing::warn!("the history entry of the restore is gone; not amending it"),
            }
        } else {
            let finished = database.as_ref().is_ok_and(Recovered::finished);
            // Only a dropped file is ours to move or delete; one named with
            // --file stays.
            let dropped = file.exists() && file.parent() == Some(self.cfg.watch_dir.as_path());
            if finished {
                notes.insert(0, "completed by recovery".into());
                // As after any finished restore (the old helper's keys).
                let mtime = std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64());
                state.last_processed = Some(LastProcessed {
                    path: interrupted.file.clone(),
                    mtime,
                    completed_at: finished_at.clone(),
                });
                if dropped && let Err(e) = std::fs::remove_file(&file) {
                    tracing::warn!(error = %e, file = %file.display(), "restored, but cannot delete the file");
                }
            } else if dropped {
                let _ = move_to_failed(
                    &file,
                    &self.cfg.failed_dir,
                    "the restore was interrupted (backupd stopped mid-way)",
                );
            }
            let mut error = vec![format!("interrupted in phase {}", interrupted.phase)];
            match &database {
                Ok(what) => error.push(what.message().to_string()),
                Err(e) => error.push(format!("database recovery failed: {e}")),
            }
            let (result, error, note) = if finished {
                let all = [error, notes].concat().join("; ");
                tracing::info!(note = %all, "the interrupted restore had finished");
                // Still an error when some container could not be started.
                let error = started.is_err().then(|| all.clone());
                ("restored", error, Some(all))
            } else {
                (
                    "interrupted",
                    Some([error, notes].concat().join("; ")),
                    None,
                )
            };
            tracing::warn!(result, "recovered the interrupted restore");
            state.push_history(HistoryEntry {
                file: crate::archive::file_name(&file),
                sha256: None,
                result: result.into(),
                error,
                started_at: interrupted.started_at.clone(),
                finished_at,
                duration_seconds: 0.0,
                containers_stopped: interrupted.stopped.clone(),
                container_health: health,
                previous_database: match &interrupted.swap {
                    Some(r) => (finished && r.live_oid.is_some()).then(|| r.previous.clone()),
                    None => interrupted.sqlite.as_ref().and_then(|e| e.previous.clone()),
                },
                safety_backup: None,
                note,
            });
        }
        // The engine is still away: keep the intent for the next start.
        if let Err(StartFailure {
            engine_lost: true, ..
        }) = &started
        {
            let mut pending = interrupted.clone();
            pending.start_pending = true;
            pending.stopped = containers.clone();
            pending.stopping = Some(containers.clone());
            state.in_progress = Some(pending);
        }
        self.save(&state);
        database.map(|_| ()).map_err(Error::Other)
    }
}

/// The containers a restore stopped or asked to stop: the `stopping` intent
/// (older state files: the planned list) and those seen stopped.
fn asked_to_stop(p: &InProgress) -> Vec<String> {
    let mut list = p.stopping.clone().unwrap_or_else(|| p.containers.clone());
    for name in &p.stopped {
        if !list.contains(name) {
            list.push(name.clone());
        }
    }
    list
}

/// Writes the swap record into `in_progress` (phase `swapping`).
fn record_swap_in(state_file: &Path, record: &SwapRecord) {
    let mut state = match RestoreState::read(state_file) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "cannot record the swap in the restore state file");
            return;
        }
    };
    if let Some(p) = state.in_progress.as_mut() {
        p.phase = Phase::Swapping;
        p.swap = Some(record.clone());
    }
    if let Err(e) = state.write(state_file) {
        tracing::error!(error = %e, "cannot record the swap in the restore state file");
    }
}

/// Starts `name`, retrying while the engine does not answer (a failed ping)
/// until `give_up`. The error says whether the engine was lost.
async fn start_with_retry(
    docker: &DockerControl,
    name: &str,
    give_up: Instant,
) -> std::result::Result<(), (String, bool)> {
    let mut delay = START_RETRY_FIRST;
    let mut attempt = 1u32;
    loop {
        let error = match docker.start(name).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(container = %name, attempt, "the Docker engine answers again; container started");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        if docker.ping().await.is_ok() {
            return Err((format!("cannot start {name}: {error}"), false));
        }
        let now = Instant::now();
        if now >= give_up {
            tracing::error!(container = %name, attempts = attempt, error = %error, "the Docker engine still does not answer; giving up starting the container for now");
            return Err((
                format!(
                    "cannot start {name}: the Docker engine did not answer ({attempt} attempts): {error}"
                ),
                true,
            ));
        }
        let wait = delay.min(give_up - now);
        tracing::warn!(
            container = %name,
            attempt,
            retry_in_seconds = wait.as_secs_f64(),
            error = %error,
            "the Docker engine does not answer; retrying to start the container"
        );
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(START_RETRY_MAX);
        attempt += 1;
    }
}

/// An in-place load empties the live database before it loads, so a load
/// that was interrupted leaves it empty or partial, whatever the database
/// itself looks like now ("in place" would be a lie).
fn inplace_truth(interrupted: &InProgress, found: Recovered) -> Recovered {
    let inplace = interrupted.strategy.as_deref() == Some("inplace");
    if !inplace || interrupted.phase != Phase::Loading || found.finished() {
        return found;
    }
    let way_back = match &interrupted.safety_backup {
        Some(path) => format!("restore the safety backup {path}, or drop the file again"),
        None => "drop the file again (no safety backup was taken)".to_string(),
    };
    Recovered::NotRestored(format!(
        "RESTORE_PG_STRATEGY=inplace: the load was interrupted after the live database may have been emptied, so it may be empty or hold part of the dump; {way_back}"
    ))
}
