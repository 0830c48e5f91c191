//! `backupd restore`: the `db-restore` service. Wiring only: the settings,
//! the watch loop and its batch policy (newest wins, refusals), the restore
//! lock, S3 sources (`--from-s3`, `--file s3://…`) and printing a dry run's
//! plan. Each restore is `restore::procedure`; crash recovery is
//! `restore::recovery`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::cli::RestoreArgs;
use crate::clock::{Clock, SystemClock};
use crate::config::{NotifyConfig, RestoreConfig};
use crate::container::ContainerControl;
use crate::container::docker::DockerControl;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::events::{LogObserver, Observers};
use crate::hooks::ShellHooks;
use crate::manifest::record::{MANIFEST_SUFFIX, MAX_MANIFEST_BYTES, manifest_path};
use crate::notify::message::NoticeContext;
use crate::notify::notifier::{self, FailureRecord, Notifier};
use crate::offsite;
use crate::restore::check;
use crate::restore::containers::{ContainerPolicy, StopWait};
use crate::restore::error::{REQUIRE_ENCRYPTED_REASON, Unfinished};
use crate::restore::kind;
use crate::restore::postgres as pg_restore;
use crate::restore::procedure::{Origin, Procedure, Settings};
use crate::restore::state::{RestoreState, StateFile};
use crate::restore::target::LiveDatabase;
use crate::state::RestoreStatusFile;
use crate::store::Kind;
use crate::store::local::DirLock;
use crate::store::s3::{S3Store, parse_s3_url};
use crate::watch::{Found, WatchConfig, Watcher};

/// The container settings the procedure runs by.
fn container_policy(cfg: &RestoreConfig) -> ContainerPolicy {
    ContainerPolicy {
        stop: cfg.stop_containers.clone(),
        start: cfg.start_containers.clone(),
        allow_missing: cfg.allow_missing_containers,
        stop_timeout: cfg.stop_timeout,
        stop_wait: StopWait::from_setting(cfg.stop_wait),
        start_wait: cfg.start_wait,
        start_retry: cfg.start_retry,
        health_timeout: cfg.health_timeout,
    }
}

pub async fn run(args: &RestoreArgs) -> Result<()> {
    let cfg = RestoreConfig::from_args(args)?;
    let notify = NotifyConfig::from_args(&args.notify)?;
    // The ping is the backup's dead-man's switch; restores do not touch it.
    let notify = NotifyConfig {
        ping: None,
        ..notify
    };
    let cancel = crate::shutdown::on_signal();
    let service = Service::new(cfg, &notify).await?;
    let result = serve(args, &service, &cancel).await;
    // A one-shot restore waits (bounded) for its messages before it exits.
    if let Some(notifier) = &service.notifier
        && !notifier.flush(notify.timeout).await
    {
        tracing::warn!(
            timeout_seconds = notify.timeout.as_secs(),
            "exiting before every notification was delivered (NOTIFY_TIMEOUT_SECONDS)"
        );
    }
    service.notification_errors.write_pending();
    result
}

async fn serve(args: &RestoreArgs, service: &Service, cancel: &CancellationToken) -> Result<()> {
    let cancel = cancel.clone();
    service.warn_if_superuser().await;
    // A dry run changes nothing, not even an interrupted restore's leftovers.
    if !args.dry_run {
        let _lock = service.exclusive().await?;
        service.procedure().recover_interrupted().await?;
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
        service.notification_errors.write_pending();
        if cancel.is_cancelled() {
            break;
        }
    }
    tracing::info!("restore service stopped");
    Ok(())
}

/// The restore service's wiring: the settings, the engine, the database,
/// the state file and the clock the procedure runs over.
struct Service {
    cfg: RestoreConfig,
    docker: Option<DockerControl>,
    settings: Settings,
    target: LiveDatabase,
    state: StateFile,
    clock: SystemClock,
    observers: Observers,
    hooks: ShellHooks,
    notifier: Option<Arc<Notifier>>,
    notification_errors: Arc<NotificationErrors>,
}

/// `last_notification_error` of the restore service, in its own state
/// file (its operators read that file; the backup status file belongs to
/// the backup side). The procedure rewrites that file at every step, so it
/// is only written while the restore lock is free (no restore in this or
/// another process); otherwise it waits for the service's next safe point
/// (after each batch, and at exit).
struct NotificationErrors {
    state_file: PathBuf,
    lock_file: PathBuf,
    pending: Mutex<Option<String>>,
}

impl NotificationErrors {
    fn write_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(line) = pending.as_ref() else {
            return;
        };
        match DirLock::try_acquire_file(&self.lock_file) {
            Ok(Some(_free)) => {
                let written = RestoreState::read(&self.state_file).and_then(|mut state| {
                    state.other.insert(
                        "last_notification_error".into(),
                        serde_json::Value::String(line.clone()),
                    );
                    state.write(&self.state_file)
                });
                match written {
                    Ok(()) => *pending = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write last_notification_error into the restore state file")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot write last_notification_error into the restore state file")
            }
        }
    }
}

impl FailureRecord for NotificationErrors {
    fn record(&self, line: &str) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(line.to_string());
        self.write_pending();
    }
}

/// Beside the state file, never BACKUP_DIR's lock: the safety backup
/// takes that one while this is held.
fn restore_lock_file(state_file: &Path) -> PathBuf {
    let mut lock = state_file.to_path_buf().into_os_string();
    lock.push(".lock");
    PathBuf::from(lock)
}

impl Service {
    async fn new(cfg: RestoreConfig, notify: &NotifyConfig) -> Result<Self> {
        let notification_errors = Arc::new(NotificationErrors {
            state_file: cfg.state_file.clone(),
            lock_file: restore_lock_file(&cfg.state_file),
            pending: Mutex::new(None),
        });
        let notifier = notifier::start_from_config(
            notify,
            NoticeContext::new(&cfg.database),
            None,
            Some(notification_errors.clone() as Arc<dyn FailureRecord>),
        )?;
        let mut observers =
            Observers::new()
                .with(Arc::new(LogObserver))
                .with(Arc::new(RestoreStatusFile::new(
                    &cfg.backup.paths.status_file,
                    Box::new(SystemClock),
                )));
        if let Some(notifier) = &notifier {
            observers.push(notifier.clone());
        }
        let policy = container_policy(&cfg);
        let docker = if policy.uses_containers() {
            let docker = DockerControl::connect(cfg.docker_host.as_deref()).await?;
            tracing::info!(api_version = %docker.api_version(), "connected to the Docker engine");
            Some(docker)
        } else {
            None
        };
        let settings = Settings {
            watch_dir: cfg.watch_dir.clone(),
            failed_dir: cfg.failed_dir.clone(),
            containers: policy,
            safety_backup: cfg.safety_backup,
            safety_dir: cfg.backup.paths.backup_dir.clone(),
            require_encrypted: cfg.require_encrypted,
        };
        let target = LiveDatabase {
            database: cfg.database.clone(),
            keys: cfg.keys.clone(),
            strategy: cfg.strategy,
            keep_previous: cfg.keep_previous,
            allow_schema_change: cfg.allow_schema_change,
            safety: cfg.backup.clone(),
            state_file: cfg.state_file.clone(),
        };
        let state = StateFile(cfg.state_file.clone());
        let hooks = ShellHooks::new(&cfg.hooks, &cfg.database);
        Ok(Service {
            hooks,
            cfg,
            docker,
            settings,
            target,
            state,
            clock: SystemClock,
            observers,
            notifier,
            notification_errors,
        })
    }

    fn procedure(&self) -> Procedure<'_, LiveDatabase> {
        Procedure {
            settings: &self.settings,
            target: &self.target,
            containers: self.docker.as_ref().map(|d| d as &dyn ContainerControl),
            state: &self.state,
            clock: &self.clock,
            observer: &self.observers,
            hooks: &self.hooks,
        }
    }

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

    /// Returns the paths it moved or deleted, for the watcher to forget.
    async fn handle_batch(&self, batch: Vec<Found>, cancel: &CancellationToken) -> Vec<PathBuf> {
        let _lock = match self.exclusive().await {
            Ok(lock) => lock,
            Err(e) => {
                tracing::error!(error = %e, "cannot take the restore lock; trying again at the next sweep");
                return Vec::new();
            }
        };
        let procedure = self.procedure();
        let mut handled = Vec::new();
        let mut ready = Vec::new();
        for found in batch {
            match found {
                Found::Refused { path, reason } => {
                    procedure.refuse(&path, &reason, None);
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
            procedure.refuse(
                &older.path,
                &format!("superseded by {}", newest.name),
                Some(&newest.name),
            );
            handled.push(older.path);
        }
        let mtime = newest
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = procedure
            .restore(&newest.path, mtime, Origin::Dropped, None, cancel)
            .await;
        handled.push(newest.path);
        handled
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
        let lock = restore_lock_file(&self.cfg.state_file);
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
        let newest = offsite::list_backups(store, self.clock.now())
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
        let manifest = manifest_path(&dest);
        // Only this download's manifest may lie beside it.
        for stale in [&dest, &manifest] {
            let _ = std::fs::remove_file(stale);
        }
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
        if let Err(e) = self.download_manifest(store, key, &manifest, cancel).await {
            let _ = std::fs::remove_file(&dest);
            return Err(e);
        }
        // The downloads folder is not ours alone: the check must read the
        // very bytes the download hashed against the sidecar.
        let result = self
            .one_shot(&dest, false, Some(&downloaded.sha256), cancel)
            .await;
        for file in [&dest, &manifest] {
            if let Err(e) = std::fs::remove_file(file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove the downloaded copy");
            }
        }
        result
    }

    /// `KEY.manifest.json` into `dest` (beside the downloaded backup, where
    /// the restore's manifest lookup finds it) when the bucket has it. It
    /// has no `.sha256` of its own: the lookup believes it only when it
    /// records the SHA-256 of the backup the check read. Missing is fine
    /// (a backup from before manifests; the history says "no manifest");
    /// one that exists but cannot be downloaded, or is larger than
    /// [`MAX_MANIFEST_BYTES`], refuses the restore before anything is
    /// touched: its row count check would otherwise be skipped unseen.
    async fn download_manifest(
        &self,
        store: &S3Store,
        key: &str,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let manifest_key = format!("{key}{MANIFEST_SUFFIX}");
        match store
            .download_if_present(&manifest_key, dest, MAX_MANIFEST_BYTES, cancel)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                tracing::info!(
                    manifest = %store.url_for(&manifest_key),
                    "the bucket has no manifest of this backup; its row counts are not checked"
                );
                Ok(())
            }
            Err(Error::Cancelled) => Err(Error::Cancelled),
            Err(e) => Err(Error::Other(format!(
                "{e}; the restore is refused rather than run without the manifest's row count check (remove that object from the bucket to restore unchecked)"
            ))),
        }
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
        let procedure = self.procedure();
        if dry_run {
            print!("{}", procedure.plan(file, kind));
            return Ok(());
        }
        let mtime = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        procedure
            .restore(file, mtime, Origin::Given, expected_sha256, cancel)
            .await
            .map_err(|unfinished| match unfinished {
                // The operator reads why the restore failed; the history
                // also says what happened to the containers.
                Unfinished::Failed { failed, .. } => Error::Other(failed.to_string()),
                other => Error::Other(other.to_string()),
            })
    }
}
