//! One restore, in order: check → before-restore hook → intent → stop →
//! safety → load → swap → after-restore hook → start → (restore-failed
//! hook) → record. Each intent is written before its act, so a crash at any
//! point leaves `in_progress` for [recovery](crate::restore::recovery); the
//! containers are started again whatever happened after the intent. The
//! procedure runs over seams (the restore target, container control, the
//! state store, the clock, the hooks), so every phase's failure is tested
//! with fakes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::archive::file_name;
use crate::clock::Clock;
use crate::container::{ContainerControl, StopOutcome};
use crate::events::{
    Failure, HookFailed, HookPoint, Observer, RestoreFailed, RestoreFinished, RestorePhase,
    RestoreRefused, RestoreStarted,
};
use crate::hooks::{HookContext, Hooks};
use crate::manifest::{Lookup, Manifest, compare_counts, lookup};
use crate::restore::containers::{self, ContainerPolicy, asked_to_stop};
use crate::restore::error::{Failed, RestoreError, StartFailure, Unfinished};
use crate::restore::failed::move_to_failed;
use crate::restore::kind::{self, FileKind};
use crate::restore::postgres::{STAMP_FORMAT, Strategy};
use crate::restore::state::{
    HistoryEntry, InProgress, LastProcessed, Phase, RestoreState, StateStore, read_or_fresh,
    save_or_log,
};
use crate::restore::target::{Counts, Order, RestoreTarget, SafetySource};
use crate::state::timestamp;

/// What the procedure needs of the restore service's settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub watch_dir: PathBuf,
    pub failed_dir: PathBuf,
    pub containers: ContainerPolicy,
    /// Take a safety backup before loading (`RESTORE_SAFETY_BACKUP`), into
    /// `safety_dir`.
    pub safety_backup: bool,
    pub safety_dir: PathBuf,
    /// `RESTORE_REQUIRE_ENCRYPTED`: only `.enc` files are restored.
    pub require_encrypted: bool,
}

/// Where the file came from: a file dropped into the watch folder is the
/// service's to delete or move; a file named with `--file` stays where it is.
pub use crate::events::Origin;

/// What a restore of a file would do (`--dry-run`); the mode prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub file: String,
    pub kind: FileKind,
    pub target: String,
    /// For PostgreSQL dumps.
    pub strategy: Option<Strategy>,
    pub stop: Vec<String>,
    pub start: Vec<String>,
    /// Where the safety backup goes; `None`: no safety backup.
    pub safety_dir: Option<PathBuf>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file:       {}", self.file)?;
        writeln!(
            f,
            "content:    {}{}{}",
            self.kind.payload.describe(),
            if self.kind.gzip { ", gzip" } else { "" },
            if self.kind.encrypted {
                ", Fernet-encrypted"
            } else {
                ""
            }
        )?;
        writeln!(f, "target:     {}", self.target)?;
        if let Some(strategy) = self.strategy {
            writeln!(f, "strategy:   {strategy:?}")?;
        }
        writeln!(f, "stop:       {}", self.stop.join(", "))?;
        writeln!(f, "start:      {}", self.start.join(", "))?;
        match &self.safety_dir {
            Some(dir) => writeln!(f, "safety:     backup first, into {}", dir.display()),
            None => writeln!(f, "safety:     none"),
        }
    }
}

/// The stamp of a restore started at `at` ([`STAMP_FORMAT`], microseconds),
/// strictly later than any stamp this process gave before: two restores
/// never share the names built from it (`<db>_restore_…`,
/// `<db>_pre_restore_…`, `.pre-restore-…`). Other processes wait for the
/// restore lock, so their restores start microseconds apart at least.
fn unique_stamp(at: DateTime<Utc>) -> String {
    static LAST: std::sync::Mutex<Option<DateTime<Utc>>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let at = match *last {
        Some(prev) if at <= prev => prev + chrono::Duration::microseconds(1),
        _ => at,
    };
    *last = Some(at);
    at.format(STAMP_FORMAT).to_string()
}

/// The restore procedure over its seams.
pub struct Procedure<'a, T: RestoreTarget> {
    pub settings: &'a Settings,
    pub target: &'a T,
    /// `None` when no container is configured.
    pub containers: Option<&'a dyn ContainerControl>,
    pub state: &'a dyn StateStore,
    pub clock: &'a dyn Clock,
    /// Told when a restore starts, changes phase, ends or is refused.
    pub observer: &'a dyn Observer,
    /// `HOOK_BEFORE_RESTORE`, `HOOK_AFTER_RESTORE`, `HOOK_RESTORE_FAILED`.
    pub hooks: &'a dyn Hooks,
}

impl Attempt {
    /// What a hook is told of this restore so far.
    fn hook_context(&self, path: &Path) -> HookContext {
        HookContext {
            file: Some(path.to_path_buf()),
            size: self.sha256.is_some().then_some(self.size),
            sha256: self.sha256.clone(),
            ..HookContext::default()
        }
    }
}

/// How one restore attempt ended, for its history entry.
#[derive(Default)]
struct Attempt {
    result: Option<Failed>,
    /// The attempt wrote `in_progress` (the intent).
    intent_written: bool,
    containers_stopped: Vec<String>,
    container_health: BTreeMap<String, String>,
    previous_database: Option<String>,
    safety_backup: Option<String>,
    sha256: Option<String>,
    /// Bytes of the file as the check read it.
    size: u64,
    start_failure: Option<StartFailure>,
    /// An after-restore or restore-failed hook that failed.
    hook_error: Option<String>,
    /// The safety backup taken after the swap failed (the restore stands).
    safety_backup_error: Option<String>,
    /// What the manifest check found (for the history).
    manifest: Option<String>,
    /// The manifest used, to remove or move with a dropped file.
    manifest_path: Option<PathBuf>,
    /// When the first stop was requested, and whether anything stopped.
    first_stop: Option<Instant>,
    stopped_any: bool,
    /// First stop to last start.
    downtime: Option<std::time::Duration>,
}

/// What staging a checked file needs besides the file.
struct Staging<'a> {
    path: &'a Path,
    stamp: &'a str,
    /// The manifest to compare the staged copy with; `None` when the
    /// counts were compared at check time already.
    manifest: Option<&'a Lookup>,
    cancel: &'a CancellationToken,
}

impl<T: RestoreTarget> Procedure<'_, T> {
    /// What restoring `file` (of `kind`) would do; changes nothing.
    pub fn plan(&self, file: &Path, kind: FileKind) -> Plan {
        let policy = &self.settings.containers;
        Plan {
            file: file.display().to_string(),
            kind,
            target: self.target.describe(),
            strategy: kind
                .payload
                .is_postgres()
                .then(|| self.target.strategy().unwrap_or_default()),
            stop: policy.stop.clone(),
            start: policy.start_list(&policy.stop),
            safety_dir: self
                .settings
                .safety_backup
                .then(|| self.settings.safety_dir.clone()),
        }
    }

    /// Moves a file that is not restored into the failed folder and records
    /// why: refused, or superseded by the newer file `superseded_by`.
    pub fn refuse(&self, path: &Path, reason: &str, superseded_by: Option<&str>) {
        let moved_to = match move_to_failed(path, &self.settings.failed_dir, reason, self.clock) {
            Ok(moved_to) => Some(moved_to),
            Err(e) => {
                tracing::error!(error = %e, file = %path.display(), "cannot move the file to the failed folder");
                None
            }
        };
        self.observer.observe(
            &RestoreRefused {
                file: path.to_path_buf(),
                reason: reason.to_string(),
                superseded_by: superseded_by.map(String::from),
                moved_to,
            }
            .into(),
        );
        let result = if superseded_by.is_some() {
            "superseded"
        } else {
            "refused"
        };
        let now = timestamp(self.clock.now());
        let mut state = read_or_fresh(self.state);
        state.push_history(HistoryEntry {
            file: file_name(path),
            sha256: None,
            result: result.into(),
            error: Some(reason.into()),
            phase: None,
            note: None,
            started_at: now.clone(),
            finished_at: now,
            duration_seconds: 0.0,
            containers_stopped: vec![],
            container_health: BTreeMap::new(),
            previous_database: None,
            safety_backup: None,
            safety_backup_error: None,
            manifest: None,
            downtime_seconds: None,
            hook_error: None,
        });
        save_or_log(self.state, &state);
    }

    /// Restores one file and records how it went. `mtime` is kept in
    /// `last_processed` (the old helper's keys); `expected_sha256` is what a
    /// download hashed, which the check must read again.
    pub async fn restore(
        &self,
        path: &Path,
        mtime: f64,
        origin: Origin,
        expected_sha256: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<(), Unfinished> {
        let span = tracing::info_span!("restore", file = %file_name(path));
        self.restore_in_span(path, mtime, origin, expected_sha256, cancel)
            .instrument(span)
            .await
    }

    async fn restore_in_span(
        &self,
        path: &Path,
        mtime: f64,
        origin: Origin,
        expected_sha256: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<(), Unfinished> {
        let started = Instant::now();
        let started_at = self.clock.now();
        let stamp = unique_stamp(started_at);
        self.observer.observe(
            &RestoreStarted {
                file: path.to_path_buf(),
                origin,
                at: started_at,
            }
            .into(),
        );

        let mut attempt = self
            .attempt(path, &stamp, expected_sha256, started, cancel)
            .await;
        // Told what failed, after the containers run again; a shutdown is
        // not a failure to act on.
        if let Some(failed) = &attempt.result
            && !Failure::from(&failed.error).is_cancelled()
        {
            let context = HookContext {
                error: Some(failed.to_string()),
                duration: Some(started.elapsed()),
                ..attempt.hook_context(path)
            };
            self.run_after_hook(HookPoint::RestoreFailed, &context, &mut attempt, cancel)
                .await;
        }
        let elapsed = started.elapsed();
        let duration = elapsed.as_secs_f64();
        self.phase_reached(path, Phase::Recording);
        let start_pending = attempt
            .start_failure
            .as_ref()
            .is_some_and(StartFailure::engine_lost);
        let mut state = read_or_fresh(self.state);
        match state.in_progress.as_mut() {
            // The engine did not answer: the next start of backupd starts
            // the containers and adds that to this history entry.
            Some(p) if start_pending => {
                p.start_pending = true;
                p.phase = Phase::Starting;
            }
            // An earlier restore's containers still to start stay recorded
            // when this one never got as far as its own intent.
            _ if !attempt.intent_written => {}
            _ => state.in_progress = None,
        }
        let failed_reason = attempt.result.as_ref().map(ToString::to_string);
        let ended = match &attempt.result {
            None => RestoreFinished {
                file: path.to_path_buf(),
                size: attempt.size,
                sha256: attempt.sha256.clone().unwrap_or_default(),
                duration: elapsed,
                strategy: self.target.strategy(),
                downtime: attempt.downtime,
            }
            .into(),
            Some(failed) => RestoreFailed {
                file: path.to_path_buf(),
                phase: failed.phase.clone(),
                duration: elapsed,
                error: Failure::from(&failed.error),
                downtime: attempt.downtime,
            }
            .into(),
        };
        let unfinished = match (attempt.result, attempt.start_failure) {
            (None, None) => None,
            (None, Some(start)) => Some(Unfinished::NotStarted { start }),
            (Some(failed), start) => Some(Unfinished::Failed { failed, start }),
        };
        let restored = unfinished.as_ref().is_none_or(Unfinished::restored);
        state.push_history(HistoryEntry {
            file: file_name(path),
            sha256: attempt.sha256,
            result: if restored { "restored" } else { "failed" }.into(),
            error: unfinished.as_ref().map(ToString::to_string),
            phase: unfinished.as_ref().map(Unfinished::phase),
            note: None,
            started_at: timestamp(started_at),
            finished_at: timestamp(self.clock.now()),
            duration_seconds: (duration * 1000.0).round() / 1000.0,
            containers_stopped: attempt.containers_stopped,
            container_health: attempt.container_health,
            previous_database: attempt.previous_database,
            safety_backup: attempt.safety_backup,
            safety_backup_error: attempt.safety_backup_error,
            manifest: attempt.manifest,
            downtime_seconds: attempt
                .downtime
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
            hook_error: attempt.hook_error,
        });
        if let Some(p) = state.in_progress.as_mut() {
            // Recovery finds this entry by file and start time.
            p.started_at = timestamp(started_at);
        }
        if restored {
            state.last_processed = Some(LastProcessed {
                path: path.display().to_string(),
                mtime,
                completed_at: timestamp(self.clock.now()),
            });
        }
        // Unrecorded, `in_progress` stays: the next start recovers and
        // tells what happened.
        save_or_log(self.state, &state);
        // The manifest beside a dropped file goes with it (one elsewhere,
        // in BACKUP_DIR, is the backup's and stays).
        let companion = attempt
            .manifest_path
            .filter(|m| origin == Origin::Dropped && m.parent() == path.parent());
        match &failed_reason {
            None => {
                if origin == Origin::Dropped {
                    for file in std::iter::once(path).chain(companion.as_deref()) {
                        if let Err(e) = std::fs::remove_file(file) {
                            tracing::warn!(error = %e, file = %file.display(), "restored, but cannot delete the file");
                        }
                    }
                }
            }
            Some(reason) => {
                if origin == Origin::Dropped {
                    for file in std::iter::once(path).chain(companion.as_deref()) {
                        if file.exists()
                            && let Err(e) =
                                move_to_failed(file, &self.settings.failed_dir, reason, self.clock)
                        {
                            tracing::error!(error = %e, file = %file.display(), "cannot move the file to the failed folder");
                        }
                    }
                }
            }
        }
        self.observer.observe(&ended);
        match unfinished {
            None => Ok(()),
            Some(unfinished) => Err(unfinished),
        }
    }

    async fn attempt(
        &self,
        path: &Path,
        stamp: &str,
        expected_sha256: Option<&str>,
        started: Instant,
        cancel: &CancellationToken,
    ) -> Attempt {
        let mut attempt = Attempt::default();
        // Checking: everything before touching the stack.
        self.phase_reached(path, Phase::Checking);
        let checked = match self.check(path, stamp, expected_sha256, &mut attempt).await {
            Ok(checked) => checked,
            Err(error) => {
                attempt.result = Some(Failed::new(Phase::Checking, error));
                return attempt;
            }
        };
        // The manifest, and the counts of a copy the check already holds
        // (SQLite), compared before anything is stopped.
        let manifest = self.find_manifest(path, &mut attempt);
        let mut counted = false;
        if let Lookup::Found { manifest, path: at } = &manifest {
            let counts = match self.target.checked_counts(&checked).await {
                Ok(counts) => counts,
                Err(error) => {
                    attempt.result = Some(Failed::new(Phase::Checking, error));
                    return attempt;
                }
            };
            if let Some(counts) = counts {
                counted = true;
                if let Err(error) = self.compare(
                    manifest,
                    at,
                    &counts,
                    &mut attempt,
                    "the prepared copy was not used; nothing was stopped and the live database was not changed".into(),
                ) {
                    attempt.result = Some(Failed::new(Phase::Checking, error));
                    return attempt;
                }
            }
        }
        let receipts = match containers::plan(self.containers, &self.settings.containers).await {
            Ok(receipts) => receipts,
            Err(error) => {
                attempt.result = Some(Failed::new(Phase::Checking, error));
                return attempt;
            }
        };
        // The operator's last word before anything changes.
        if let Err(e) = self
            .hooks
            .run(
                HookPoint::BeforeRestore,
                &attempt.hook_context(path),
                cancel,
            )
            .await
        {
            attempt.result = Some(Failed::new(Phase::Checking, RestoreError::Hook(e)));
            return attempt;
        }

        // The intent, before anything is loaded or stopped. Containers an
        // earlier restore could not start (the engine was away) are carried
        // over, so this one starts them too.
        self.phase_reached(path, Phase::Intent);
        let order = self.target.order();
        let to_stop: Vec<String> = receipts.iter().map(|r| r.name.clone()).collect();
        let mut state = read_or_fresh(self.state);
        let carried: Vec<String> = state
            .in_progress
            .as_ref()
            .filter(|p| p.start_pending)
            .map(|p| p.stopped.clone())
            .unwrap_or_default();
        state.in_progress = Some(InProgress {
            file: path.display().to_string(),
            stamp: stamp.to_string(),
            started_at: timestamp(self.clock.now()),
            phase: match order {
                Order::LoadWhileRunning => Phase::Loading,
                Order::StopFirst => Phase::Stopping,
            },
            containers: to_stop.clone(),
            stopped: carried.clone(),
            stopping: Some(vec![]),
            receipts,
            stop_requested_at: None,
            swap: None,
            start_pending: false,
            database: self.target.describe(),
            sqlite: None,
            strategy: self.target.strategy().map(|s| s.to_string()),
            safety_backup: None,
            containers_started: false,
        });
        if let Err(e) = self.state.write(&state) {
            attempt.result = Some(Failed::new(Phase::Intent, RestoreError::Intent(e)));
            return attempt;
        }
        attempt.intent_written = true;
        attempt.containers_stopped = carried;

        let staged = Staging {
            path,
            stamp,
            manifest: (!counted).then_some(&manifest),
            cancel,
        };
        let result = match order {
            // The app runs on while the copy loads; it is down only for
            // stop + swap + start.
            Order::LoadWhileRunning => {
                match self
                    .stage_and_compare(&staged, checked, &mut attempt, &mut state)
                    .await
                {
                    Ok(copy) => match self
                        .stop(path, &to_stop, order, &mut attempt, &mut state)
                        .await
                    {
                        Ok(()) => self.swap(&staged, copy, &mut attempt, &mut state).await,
                        Err(failed) => {
                            let outcome = self.target.abandon(copy).await;
                            tracing::info!("{outcome}");
                            Err(failed)
                        }
                    },
                    Err(failed) => Err(failed),
                }
            }
            Order::StopFirst => {
                async {
                    self.stop(path, &to_stop, order, &mut attempt, &mut state)
                        .await?;
                    self.safety_of_live(path, &mut attempt, &mut state, cancel)
                        .await?;
                    let copy = self
                        .stage_and_compare(&staged, checked, &mut attempt, &mut state)
                        .await?;
                    self.swap(&staged, copy, &mut attempt, &mut state).await
                }
                .await
            }
        };
        // The restored database, before the app sees it: the place for a
        // fix-up. Its failure is told and recorded; the restore stays. The
        // phase goes first, so recovery after a crash during the hook can
        // tell that the fix-up may not have happened.
        if result.is_ok() && self.hooks.is_configured(HookPoint::AfterRestore) {
            self.set_phase(path, &mut state, Phase::AfterRestoreHook)
                .await;
            let context = HookContext {
                duration: Some(started.elapsed()),
                ..attempt.hook_context(path)
            };
            self.run_after_hook(HookPoint::AfterRestore, &context, &mut attempt, cancel)
                .await;
        }
        // Start again what was stopped (or asked to stop), also after a
        // failure.
        self.set_phase(path, &mut state, Phase::Starting).await;
        let (asked, receipts) = state
            .in_progress
            .as_ref()
            .map(|p| (asked_to_stop(p), p.receipts.clone()))
            .unwrap_or_default();
        let start = containers::start(
            self.containers,
            &self.settings.containers,
            &asked,
            &receipts,
            &mut attempt.container_health,
        )
        .await;
        if let Some(first_stop) = attempt.first_stop
            && attempt.stopped_any
        {
            attempt.downtime = Some(first_stop.elapsed());
        }
        match start {
            Ok(()) => {
                if let Some(p) = state.in_progress.as_mut() {
                    p.containers_started = true;
                }
            }
            Err(failure) => {
                tracing::error!(error = %failure, "could not start every container");
                attempt.start_failure = Some(failure);
            }
        }
        if result.is_ok() {
            if order == Order::LoadWhileRunning {
                self.safety_of_previous(path, &mut attempt, &mut state, cancel)
                    .await;
            }
            let dropped = self
                .target
                .prune(attempt.safety_backup_error.is_some())
                .await;
            if attempt
                .previous_database
                .as_ref()
                .is_some_and(|p| dropped.contains(p))
            {
                attempt.previous_database = None;
            }
        }
        attempt.result = result.err();
        attempt
    }

    /// The manifest of the checked file (beside it, in BACKUP_DIR under its
    /// name, or the `.enc`'s there), believed only for the SHA-256 the check
    /// read; the history says what was found.
    fn find_manifest(&self, path: &Path, attempt: &mut Attempt) -> Lookup {
        let sha256 = attempt.sha256.clone().unwrap_or_default();
        let dir = &self.settings.safety_dir;
        let backup_dir = (!dir.as_os_str().is_empty()).then_some(dir.as_path());
        let found = lookup::find(path, &sha256, backup_dir);
        match &found {
            Lookup::Found { path: at, .. } => {
                tracing::info!(manifest = %at.display(), "found the backup's manifest");
                attempt.manifest_path = Some(at.clone());
            }
            Lookup::NotFound { note } => {
                tracing::info!("{note}; the row counts are not checked");
                attempt.manifest = Some(note.clone());
            }
        }
        found
    }

    /// Compares `counts` with the manifest; a mismatch is the error, with
    /// `outcome` (what became of the copy and the live database).
    fn compare(
        &self,
        manifest: &Manifest,
        at: &Path,
        counts: &Counts,
        attempt: &mut Attempt,
        outcome: String,
    ) -> Result<(), RestoreError> {
        match compare_counts(&manifest.tables, counts) {
            Ok(tables) => {
                let note = format!(
                    "checked {tables} table{} against {}",
                    if tables == 1 { "" } else { "s" },
                    at.display()
                );
                tracing::info!("{note}: the row counts match");
                attempt.manifest = Some(note);
                Ok(())
            }
            Err(mismatch) => {
                attempt.manifest = Some(format!("the row counts differ from {}", at.display()));
                Err(RestoreError::RowCounts {
                    mismatch,
                    manifest: at.display().to_string(),
                    outcome,
                })
            }
        }
    }

    /// Loads the checked file where the swap takes it from, then compares
    /// its row counts with the manifest (when there is one not yet used);
    /// a mismatch gives the copy up.
    async fn stage_and_compare(
        &self,
        staging: &Staging<'_>,
        checked: T::Checked,
        attempt: &mut Attempt,
        state: &mut RestoreState,
    ) -> Result<T::Staged, Failed> {
        let path = staging.path;
        self.set_phase(path, state, Phase::Loading).await;
        let copy = self
            .target
            .stage(checked, staging.stamp, staging.cancel)
            .await
            .map_err(|e| Failed::new(Phase::Loading, e))?;
        self.set_phase(path, state, Phase::Comparing).await;
        let Some(Lookup::Found { manifest, path: at }) = staging.manifest else {
            return Ok(copy);
        };
        let counts = match self.target.staged_counts(&copy).await {
            Ok(counts) => counts,
            Err(error) => {
                let outcome = self.target.abandon(copy).await;
                tracing::warn!("{outcome}");
                return Err(Failed::new(Phase::Comparing, error));
            }
        };
        if let Err(RestoreError::RowCounts { mismatch, .. }) =
            self.compare(manifest, at, &counts, attempt, String::new())
        {
            let mut outcome = self.target.abandon(copy).await;
            match self.target.order() {
                Order::LoadWhileRunning => outcome.push_str("; nothing was stopped"),
                Order::StopFirst => outcome.push_str(&match &attempt.safety_backup {
                    Some(safety) => format!("; the safety backup {safety} holds the database as it was before the restore"),
                    None => "; no safety backup was taken".to_string(),
                }),
            }
            tracing::error!(%mismatch, "{outcome}");
            return Err(Failed::new(
                Phase::Comparing,
                RestoreError::RowCounts {
                    mismatch,
                    manifest: at.display().to_string(),
                    outcome,
                },
            ));
        }
        Ok(copy)
    }

    /// Swaps the staged copy in (the target records the swap first).
    async fn swap(
        &self,
        staging: &Staging<'_>,
        copy: T::Staged,
        attempt: &mut Attempt,
        state: &mut RestoreState,
    ) -> Result<(), Failed> {
        let path = staging.path;
        let swapped = self
            .target
            .swap(copy, staging.stamp, self.state, staging.cancel)
            .await;
        // The target wrote its evidence (phase, swap record) behind our back.
        if let Ok(on_disk) = self.state.read()
            && let (Some(ours), Some(theirs)) = (state.in_progress.as_mut(), on_disk.in_progress)
        {
            if theirs.phase != ours.phase {
                self.phase_reached(path, theirs.phase.clone());
            }
            ours.phase = theirs.phase;
            ours.swap = theirs.swap;
            ours.sqlite = theirs.sqlite;
        }
        match swapped {
            Ok(loaded) => {
                attempt.previous_database = loaded.previous;
                Ok(())
            }
            Err(error) => {
                let in_progress = state.in_progress.as_ref();
                attempt.previous_database = in_progress
                    .and_then(|p| p.sqlite.as_ref())
                    .and_then(|e| e.previous.clone());
                let phase = in_progress.map_or(Phase::Swapping, |p| p.phase.clone());
                Err(Failed::new(phase, error))
            }
        }
    }

    /// Runs a hook whose failure changes nothing but the record: told as
    /// [`HookFailed`], kept for the history entry.
    async fn run_after_hook(
        &self,
        point: HookPoint,
        context: &HookContext,
        attempt: &mut Attempt,
        cancel: &CancellationToken,
    ) {
        if let Err(e) = self.hooks.run(point, context, cancel).await {
            let mut error = e.to_string();
            if e.is_cancelled() {
                // The containers start next: on a database the fix-up may
                // not have finished with, which someone must hear of.
                if point == HookPoint::AfterRestore {
                    error = format!(
                        "{} was stopped by shutdown before it finished; the fix-up may be incomplete",
                        point.variable()
                    );
                } else {
                    // The restore had failed already; that is told.
                    tracing::warn!(target: "backupd::hooks", error = %error, "hook stopped");
                    attempt.hook_error = Some(error);
                    return;
                }
            }
            self.observer.observe(
                &HookFailed {
                    hook: point,
                    file: context.file.clone(),
                    error: error.clone(),
                }
                .into(),
            );
            attempt.hook_error = Some(error);
        }
    }

    /// The checks before anything is stopped: the name, encryption when
    /// required, the whole content, the download's hash, the application.
    async fn check(
        &self,
        path: &Path,
        stamp: &str,
        expected_sha256: Option<&str>,
        attempt: &mut Attempt,
    ) -> Result<T::Checked, RestoreError> {
        let kind = kind::classify(&file_name(path)).ok_or(RestoreError::NotABackupName)?;
        if self.settings.require_encrypted && !kind.encrypted {
            return Err(RestoreError::NotEncrypted);
        }
        let checked = self.target.check(path, kind, stamp).await?;
        attempt.size = T::size(&checked);
        let sha256 = T::sha256(&checked).to_string();
        attempt.sha256 = Some(sha256.clone());
        if let Some(expected) = expected_sha256
            && expected != sha256
        {
            return Err(RestoreError::ChangedAfterDownload {
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        self.target.same_application(&checked).await?;
        Ok(checked)
    }

    /// Stops the containers, each intent written before its request, then
    /// waits what `RESTORE_STOP_WAIT_SECONDS` asks for this `order`.
    async fn stop(
        &self,
        path: &Path,
        to_stop: &[String],
        order: Order,
        attempt: &mut Attempt,
        state: &mut RestoreState,
    ) -> Result<(), Failed> {
        self.set_phase(path, state, Phase::Stopping).await;
        let Some(control) = self.containers else {
            return Ok(());
        };
        for name in to_stop {
            // The intent first: a stop in flight when backupd dies still
            // completes in the engine, and recovery must start it again.
            if let Some(p) = state.in_progress.as_mut() {
                let stopping = p.stopping.get_or_insert_with(Vec::new);
                if !stopping.contains(name) {
                    stopping.push(name.clone());
                }
                p.stop_requested_at = Some(timestamp(self.clock.now()));
            }
            // Without this record a crash during the stop would leave the
            // container stopped for good: no record, no stop.
            if let Err(e) = self.state.write(state) {
                // Not asked to stop, so not ours to start again.
                if let Some(stopping) = state.in_progress.as_mut().and_then(|p| p.stopping.as_mut())
                {
                    stopping.retain(|n| n != name);
                }
                return Err(Failed::new(Phase::Stopping, RestoreError::Evidence(e)));
            }
            attempt.first_stop.get_or_insert_with(Instant::now);
            match control
                .stop(name, self.settings.containers.stop_timeout)
                .await
            {
                Ok(StopOutcome::Stopped) => {
                    attempt.stopped_any = true;
                    if !attempt.containers_stopped.contains(name) {
                        attempt.containers_stopped.push(name.clone());
                    }
                    if let Some(p) = state.in_progress.as_mut()
                        && !p.stopped.contains(name)
                    {
                        p.stopped.push(name.clone());
                    }
                    save_or_log(self.state, state);
                }
                Ok(StopOutcome::AlreadyStopped) => {
                    tracing::info!(container = %name, "already stopped");
                    // It was not running before: not ours to start.
                    if let Some(p) = state.in_progress.as_mut()
                        && let Some(stopping) = p.stopping.as_mut()
                    {
                        stopping.retain(|n| n != name);
                    }
                    save_or_log(self.state, state);
                }
                Err(source) => {
                    attempt.stopped_any = true;
                    return Err(Failed::new(
                        Phase::Stopping,
                        RestoreError::Stop {
                            name: name.clone(),
                            source,
                        },
                    ));
                }
            }
        }
        // Before a staging swap this is outage and nothing else, unless the
        // operator set it (see `StopWait`).
        let wait = self.settings.containers.stop_wait.after_stopping(order);
        if !to_stop.is_empty() && !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// A way back for the operator, before the live database is replaced
    /// (the stop-first order).
    async fn safety_of_live(
        &self,
        path: &Path,
        attempt: &mut Attempt,
        state: &mut RestoreState,
        cancel: &CancellationToken,
    ) -> Result<(), Failed> {
        if !self.settings.safety_backup {
            return Ok(());
        }
        self.set_phase(path, state, Phase::SafetyBackup).await;
        let safety = match self.target.exists().await {
            Ok(false) => {
                tracing::info!("no current database to back up first");
                return Ok(());
            }
            Ok(true) => {
                self.target
                    .safety_backup(SafetySource::Live, cancel, self.clock)
                    .await
            }
            Err(e) => Err(e),
        };
        match safety {
            Ok(file) => {
                self.keep_safety(file, attempt, state);
                Ok(())
            }
            Err(e) => Err(Failed::new(
                Phase::SafetyBackup,
                RestoreError::SafetyBackup(e),
            )),
        }
    }

    /// The way back after the swap (the short-outage order): the database
    /// set aside is unchanged and unused once the app runs on the restored
    /// one. Its failure does not undo the restore: it is recorded, and the
    /// previous database is kept.
    async fn safety_of_previous(
        &self,
        path: &Path,
        attempt: &mut Attempt,
        state: &mut RestoreState,
        cancel: &CancellationToken,
    ) {
        if !self.settings.safety_backup {
            return;
        }
        let Some(previous) = attempt.previous_database.clone() else {
            tracing::info!("there was no live database before, so no safety backup");
            return;
        };
        self.set_phase(path, state, Phase::SafetyBackup).await;
        match self
            .target
            .safety_backup(SafetySource::Previous(&previous), cancel, self.clock)
            .await
        {
            Ok(file) => self.keep_safety(file, attempt, state),
            Err(e) => {
                let error = format!(
                    "the safety backup of the previous database \"{previous}\" failed: {e}; the restore stands, and \"{previous}\" is kept (not pruned) as the way back"
                );
                tracing::warn!("{error}");
                attempt.safety_backup_error = Some(error);
            }
        }
    }

    fn keep_safety(&self, file: PathBuf, attempt: &mut Attempt, state: &mut RestoreState) {
        let file = file.display().to_string();
        if let Some(p) = state.in_progress.as_mut() {
            p.safety_backup = Some(file.clone());
        }
        save_or_log(self.state, state);
        attempt.safety_backup = Some(file);
    }

    /// Records the phase; test builds may park here (`BACKUPD_TEST_PAUSE`).
    async fn set_phase(&self, path: &Path, state: &mut RestoreState, phase: Phase) {
        let point = phase.as_str().to_string();
        self.phase_reached(path, phase.clone());
        if let Some(p) = state.in_progress.as_mut() {
            p.phase = phase;
        }
        save_or_log(self.state, state);
        crate::restore::test_pause(&point).await;
    }

    fn phase_reached(&self, path: &Path, phase: Phase) {
        self.observer.observe(
            &RestorePhase {
                file: path.to_path_buf(),
                phase,
            }
            .into(),
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::container::fake::{Call, FakeContainers, Op};
    use crate::events::{Event, Recorder};
    use crate::hooks::{FakeHooks, HookError};
    use crate::restore::containers::StopWait;
    use crate::restore::fakes::{FailAt, FakeTarget, FixedClock, MemoryState};
    use crate::restore::kind::Payload;

    /// An app stack around the procedure: two running containers, a live
    /// database holding `old`, a watch folder.
    pub(crate) struct Stack {
        /// Holds the folders for the stack's lifetime.
        _dir: tempfile::TempDir,
        pub settings: Settings,
        pub target: FakeTarget,
        pub engine: FakeContainers,
        pub state: MemoryState,
        pub clock: FixedClock,
        pub events: std::sync::Arc<Recorder>,
        pub hooks: FakeHooks,
    }

    impl Stack {
        pub fn new(target: FakeTarget) -> Self {
            Self::with(target, app_containers(), MemoryState::default())
        }

        pub fn with(target: FakeTarget, engine: FakeContainers, state: MemoryState) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let watch_dir = dir.path().join("incoming");
            std::fs::create_dir_all(&watch_dir).unwrap();
            let settings = Settings {
                failed_dir: dir.path().join("failed"),
                watch_dir,
                containers: ContainerPolicy {
                    stop: vec!["web".into(), "worker".into()],
                    ..ContainerPolicy::default()
                },
                safety_backup: true,
                safety_dir: dir.path().join("safety"),
                require_encrypted: false,
            };
            Stack {
                _dir: dir,
                settings,
                target,
                engine,
                state,
                clock: FixedClock::default(),
                events: Recorder::new(),
                hooks: FakeHooks::new(),
            }
        }

        pub fn procedure(&self) -> Procedure<'_, FakeTarget> {
            self.procedure_with(&self.hooks)
        }

        pub fn procedure_with<'s>(&'s self, hooks: &'s dyn Hooks) -> Procedure<'s, FakeTarget> {
            Procedure {
                settings: &self.settings,
                target: &self.target,
                containers: Some(&self.engine),
                state: &self.state,
                clock: &self.clock,
                observer: &self.events,
                hooks,
            }
        }

        pub fn drop_file(&self) -> PathBuf {
            let path = self.settings.watch_dir.join("app-20261201T000000Z.sql.gz");
            std::fs::write(&path, b"a dump").unwrap();
            path
        }

        pub async fn restore(&self) -> (PathBuf, Result<(), Unfinished>) {
            let path = self.drop_file();
            let result = self
                .procedure()
                .restore(&path, 1.0, Origin::Dropped, None, &CancellationToken::new())
                .await;
            (path, result)
        }

        pub fn newest(&self) -> HistoryEntry {
            self.state.get().history[0].clone()
        }

        pub fn in_failed_folder(&self, path: &Path) -> bool {
            self.settings.failed_dir.join(file_name(path)).is_file()
        }

        pub fn both_running(&self) -> bool {
            self.engine.is_running("web") == Some(true)
                && self.engine.is_running("worker") == Some(true)
        }

        /// The stops and starts the engine was asked for, in order.
        pub fn stops_and_starts(&self) -> Vec<String> {
            self.engine
                .calls()
                .into_iter()
                .filter_map(|call| match call {
                    Call::Stop { name, .. } => Some(format!("stop {name}")),
                    Call::Start(name) => Some(format!("start {name}")),
                    _ => None,
                })
                .collect()
        }
    }

    pub(crate) fn app_containers() -> FakeContainers {
        FakeContainers::new().running("web").running("worker")
    }

    /// A failure before anything was touched: the live database keeps its
    /// content, nothing is stopped, the file goes to the failed folder.
    async fn fails_before_the_stack(stack: Stack, phase: Phase, reason: &str) {
        let (path, result) = stack.restore().await;
        let Err(Unfinished::Failed { failed, start }) = result else {
            panic!("the restore did not fail");
        };
        assert_eq!(failed.phase, phase);
        assert!(start.is_none());
        assert_eq!(stack.target.live(), "old");
        assert_eq!(stack.target.swaps(), 0);
        assert!(
            !stack
                .stops_and_starts()
                .iter()
                .any(|c| c.starts_with("stop")),
            "{:?}",
            stack.stops_and_starts()
        );
        assert!(stack.both_running());
        let entry = stack.newest();
        assert_eq!(entry.result, "failed");
        assert_eq!(entry.phase, Some(phase.clone()));
        assert_eq!(entry.error.as_deref(), Some(reason));
        assert!(stack.state.get().in_progress.is_none());
        assert!(stack.in_failed_folder(&path));
        assert_failed_event(&stack, phase, reason);
    }

    /// A failure after the containers were stopped: the live database keeps
    /// its content and every stopped container runs again.
    async fn fails_with_the_stack_stopped(stack: Stack, phase: Phase, reason: &str) {
        let (path, result) = stack.restore().await;
        let Err(Unfinished::Failed { failed, start }) = result else {
            panic!("the restore did not fail");
        };
        assert_eq!(failed.phase, phase);
        assert!(start.is_none(), "{start:?}");
        assert_eq!(stack.target.live(), "old");
        assert_eq!(stack.target.swaps(), 0);
        let calls = stack.stops_and_starts();
        assert!(calls.contains(&"stop web".to_string()), "{calls:?}");
        assert!(calls.contains(&"start web".to_string()), "{calls:?}");
        assert!(stack.both_running());
        let entry = stack.newest();
        assert_eq!(entry.result, "failed");
        assert_eq!(entry.phase, Some(phase.clone()));
        assert_eq!(entry.error.as_deref(), Some(reason));
        assert_eq!(entry.previous_database, None);
        assert!(stack.state.get().in_progress.is_none());
        assert!(stack.in_failed_folder(&path));
        assert_failed_event(&stack, phase, reason);
    }

    fn assert_failed_event(stack: &Stack, phase: Phase, reason: &str) {
        let events = stack.events.events();
        let Some(Event::RestoreFailed(failed)) = events.last() else {
            panic!("the last event is not restore-failed: {events:?}");
        };
        assert_eq!(failed.phase, phase);
        assert_eq!(failed.error.message, reason);
    }

    fn phases_told(stack: &Stack) -> Vec<Phase> {
        stack
            .events
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::RestorePhase(p) => Some(p.phase),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_clean_restore_stops_loads_swaps_starts_and_records() {
        let stack = Stack::new(FakeTarget::default());
        let (path, result) = stack.restore().await;
        result.unwrap();
        assert_eq!(stack.target.live(), "restored");
        assert_eq!(
            stack.stops_and_starts(),
            ["stop web", "stop worker", "start web", "start worker"]
        );
        assert!(stack.both_running());
        let state = stack.state.get();
        assert!(state.in_progress.is_none());
        let entry = &state.history[0];
        assert_eq!(entry.result, "restored");
        assert_eq!(entry.error, None);
        assert_eq!(entry.phase, None);
        assert_eq!(entry.containers_stopped, ["web", "worker"]);
        assert_eq!(
            entry.previous_database.as_deref(),
            Some("app_pre_restore_x")
        );
        assert_eq!(
            entry.safety_backup.as_deref(),
            Some("/backups/pre-restore-app.dump.gz")
        );
        assert_eq!(entry.started_at, "2026-12-01T12:00:00Z");
        assert_eq!(
            state.last_processed.unwrap().path,
            path.display().to_string()
        );
        assert!(!path.exists(), "a restored dropped file is deleted");
        assert_eq!(
            phases_told(&stack),
            [
                Phase::Checking,
                Phase::Intent,
                Phase::Loading,
                Phase::Comparing,
                Phase::Stopping,
                Phase::Swapping,
                Phase::AfterRestoreHook,
                Phase::Starting,
                Phase::SafetyBackup,
                Phase::Recording
            ]
        );
        let names = stack.events.names();
        assert_eq!(names.first(), Some(&"restore-started"));
        assert_eq!(names.last(), Some(&"restore-finished"));
        let Some(Event::RestoreFinished(done)) = stack.events.events().pop() else {
            unreachable!()
        };
        assert_eq!(done.sha256, "ab".repeat(32));
        assert_eq!(done.strategy, Some(Strategy::Staging));
    }

    /// Hooks that note what the stack looks like each time one runs.
    struct Looking<'a> {
        stack: &'a Stack,
        seen: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Hooks for Looking<'_> {
        async fn run(
            &self,
            point: HookPoint,
            context: &HookContext,
            _cancel: &CancellationToken,
        ) -> Result<(), HookError> {
            assert_eq!(context.sha256.as_deref(), Some("ab".repeat(32).as_str()));
            self.seen.lock().unwrap().push(format!(
                "{}: live {}, {:?}",
                point.event(),
                self.stack.target.live(),
                self.stack.stops_and_starts()
            ));
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_before_hook_runs_before_any_stop_and_the_after_hook_after_the_swap_before_any_start()
     {
        let stack = Stack::new(FakeTarget::default());
        let looking = Looking {
            stack: &stack,
            seen: Default::default(),
        };
        let path = stack.drop_file();
        stack
            .procedure_with(&looking)
            .restore(&path, 1.0, Origin::Dropped, None, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            *looking.seen.lock().unwrap(),
            [
                "before-restore: live old, []",
                r#"after-restore: live restored, ["stop web", "stop worker"]"#,
            ]
        );
        assert!(stack.both_running());
    }

    #[tokio::test]
    async fn a_refusing_before_hook_touches_nothing_and_the_failed_hook_is_told() {
        let mut stack = Stack::new(FakeTarget::default());
        stack.hooks = FakeHooks::new().failing(HookPoint::BeforeRestore);
        let reason = "HOOK_BEFORE_RESTORE exited with status 3: injected failure; nothing was stopped or restored";
        fails_before_the_stack(stack, Phase::Checking, reason).await;
    }

    #[tokio::test]
    async fn the_restore_failed_hook_is_told_why_and_a_before_hook_failure_is_a_hook_failure() {
        let mut stack = Stack::new(FakeTarget::default());
        stack.hooks = FakeHooks::new().failing(HookPoint::BeforeRestore);
        let (path, result) = stack.restore().await;
        let Err(Unfinished::Failed { failed, .. }) = result else {
            panic!("not refused");
        };
        assert_eq!(
            Failure::from(&failed.error).kind,
            crate::events::FailureKind::Hook
        );
        assert_eq!(
            stack.hooks.points(),
            [HookPoint::BeforeRestore, HookPoint::RestoreFailed]
        );
        let (_, told) = &stack.hooks.calls()[1];
        assert_eq!(told.error.as_deref(), Some(failed.to_string().as_str()));
        assert_eq!(told.file.as_deref(), Some(path.as_path()));
        assert_eq!(stack.newest().hook_error, None);
    }

    #[tokio::test]
    async fn a_failing_after_hook_is_told_and_recorded_and_the_restore_stays() {
        let mut stack = Stack::new(FakeTarget::default());
        stack.hooks = FakeHooks::new().failing(HookPoint::AfterRestore);
        let (path, result) = stack.restore().await;
        result.unwrap();
        assert_eq!(stack.target.live(), "restored");
        assert!(stack.both_running());
        assert!(!path.exists());
        let entry = stack.newest();
        assert_eq!(entry.result, "restored");
        assert_eq!(entry.error, None);
        let message = "HOOK_AFTER_RESTORE exited with status 3: injected failure";
        assert_eq!(entry.hook_error.as_deref(), Some(message));
        let events = stack.events.events();
        let told = events.iter().find_map(|e| match e {
            Event::HookFailed(h) => Some(h.clone()),
            _ => None,
        });
        let told = told.expect("no hook-failed event");
        assert_eq!(told.hook, HookPoint::AfterRestore);
        assert_eq!(told.error, message);
        assert_eq!(told.file.as_deref(), Some(path.as_path()));
        assert!(matches!(events.last(), Some(Event::RestoreFinished(_))));
        assert_eq!(
            stack.hooks.points(),
            [HookPoint::BeforeRestore, HookPoint::AfterRestore]
        );
    }

    /// Hooks whose after-restore hook is stopped by a shutdown, noting the
    /// phase the state file holds while it runs.
    struct StoppedAfterRestore<'a> {
        stack: &'a Stack,
        phase_while_running: std::sync::Mutex<Option<Phase>>,
    }

    #[async_trait::async_trait]
    impl Hooks for StoppedAfterRestore<'_> {
        async fn run(
            &self,
            point: HookPoint,
            _context: &HookContext,
            _cancel: &CancellationToken,
        ) -> Result<(), HookError> {
            if point != HookPoint::AfterRestore {
                return Ok(());
            }
            *self.phase_while_running.lock().unwrap() =
                self.stack.state.get().in_progress.map(|p| p.phase);
            Err(HookError::Cancelled { hook: point })
        }
    }

    #[tokio::test]
    async fn an_after_hook_stopped_by_shutdown_is_told_as_failed_and_its_phase_was_on_disk() {
        let stack = Stack::new(FakeTarget::default());
        let hooks = StoppedAfterRestore {
            stack: &stack,
            phase_while_running: Default::default(),
        };
        let path = stack.drop_file();
        stack
            .procedure_with(&hooks)
            .restore(&path, 1.0, Origin::Dropped, None, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            *hooks.phase_while_running.lock().unwrap(),
            Some(Phase::AfterRestoreHook)
        );
        let message = "HOOK_AFTER_RESTORE was stopped by shutdown before it finished; the fix-up may be incomplete";
        let entry = stack.newest();
        assert_eq!(entry.result, "restored");
        assert_eq!(entry.hook_error.as_deref(), Some(message));
        let told = stack.events.hook_failures();
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].hook, HookPoint::AfterRestore);
        assert_eq!(told[0].error, message);
        assert!(stack.both_running());
        assert!(stack.state.get().in_progress.is_none());
    }

    #[tokio::test]
    async fn the_fake_s_cancelled_after_hook_is_told_too() {
        let mut stack = Stack::new(FakeTarget::default());
        stack.hooks = FakeHooks::new().cancelled_at(HookPoint::AfterRestore);
        let (_, result) = stack.restore().await;
        result.unwrap();
        assert!(stack.events.names().contains(&"hook-failed"));
        assert!(
            stack
                .newest()
                .hook_error
                .unwrap()
                .contains("stopped by shutdown before it finished")
        );
    }

    #[tokio::test]
    async fn no_after_restore_hook_means_no_hook_phase() {
        let stack = Stack::new(FakeTarget::default());
        let none = crate::hooks::ShellHooks::new(
            &crate::hooks::HookConfig::none(),
            &crate::db::Database::parse("postgresql://app@db/app", "DATABASE_URL").unwrap(),
        );
        let path = stack.drop_file();
        stack
            .procedure_with(&none)
            .restore(&path, 1.0, Origin::Dropped, None, &CancellationToken::new())
            .await
            .unwrap();
        assert!(!phases_told(&stack).contains(&Phase::AfterRestoreHook));
    }

    #[tokio::test]
    async fn a_failing_restore_failed_hook_never_hides_the_restore_s_error() {
        let mut stack = Stack::new(FakeTarget::failing(FailAt::Load));
        stack.hooks = FakeHooks::new().failing(HookPoint::RestoreFailed);
        let reason = "backup of postgresql://app@db/app failed: psql failed; the live database was not changed";
        let (_, result) = stack.restore().await;
        assert!(result.is_err());
        let entry = stack.newest();
        assert_eq!(entry.error.as_deref(), Some(reason));
        assert_eq!(
            entry.hook_error.as_deref(),
            Some("HOOK_RESTORE_FAILED exited with status 3: injected failure")
        );
        assert_failed_event(&stack, Phase::Loading, reason);
        assert!(stack.both_running());
        // Told after the containers run again.
        let (_, told) = stack.hooks.calls().pop().unwrap();
        assert_eq!(told.error.as_deref(), Some(reason));
        assert_eq!(
            stack.hooks.points(),
            [HookPoint::BeforeRestore, HookPoint::RestoreFailed]
        );
    }

    #[tokio::test]
    async fn superseded_files_are_told_and_recorded() {
        let stack = Stack::new(FakeTarget::default());
        let older = stack.drop_file();
        stack
            .procedure()
            .refuse(&older, "superseded by newer.sql.gz", Some("newer.sql.gz"));
        assert!(stack.in_failed_folder(&older));
        assert_eq!(stack.newest().result, "superseded");
        let Some(Event::RestoreRefused(refused)) = stack.events.events().pop() else {
            panic!("not told");
        };
        assert_eq!(refused.superseded_by.as_deref(), Some("newer.sql.gz"));
        assert!(refused.moved_to.is_some());
    }

    #[tokio::test]
    async fn a_failed_check_touches_nothing_and_records_checking() {
        fails_before_the_stack(
            Stack::new(FakeTarget::failing(FailAt::Check)),
            Phase::Checking,
            "cannot read the file: gzip: unexpected end of file",
        )
        .await;
    }

    #[tokio::test]
    async fn a_dump_of_another_application_is_refused_while_checking() {
        fails_before_the_stack(
            Stack::new(FakeTarget::failing(FailAt::SameApplication)),
            Phase::Checking,
            "cannot compare the dump's tables with the live database's: no server",
        )
        .await;
    }

    #[tokio::test]
    async fn a_missing_container_is_found_while_checking() {
        let mut stack = Stack::new(FakeTarget::default());
        stack.settings.containers.stop.push("cron".into());
        fails_before_the_stack(
            stack,
            Phase::Checking,
            "container 'cron' (RESTORE_STOP_CONTAINERS) does not exist; nothing was stopped (set RESTORE_ALLOW_MISSING_CONTAINERS=true to go on without it)",
        )
        .await;
    }

    #[tokio::test]
    async fn a_plain_file_is_refused_when_encryption_is_required() {
        let mut stack = Stack::new(FakeTarget::default());
        stack.settings.require_encrypted = true;
        fails_before_the_stack(
            stack,
            Phase::Checking,
            crate::restore::error::REQUIRE_ENCRYPTED_REASON,
        )
        .await;
    }

    #[tokio::test]
    async fn an_intent_that_cannot_be_written_stops_nothing() {
        let state = MemoryState {
            fail_when: Some(Box::new(|_, n| n == 1)),
            ..MemoryState::default()
        };
        let stack = Stack::with(FakeTarget::default(), app_containers(), state);
        fails_before_the_stack(
            stack,
            Phase::Intent,
            "cannot record the restore in the state file, so nothing was stopped: disk full",
        )
        .await;
    }

    #[tokio::test]
    async fn a_failed_stop_starts_the_stopped_containers_again() {
        let engine = app_containers();
        engine.fail(Op::Stop, "worker");
        let stack = Stack::with(FakeTarget::default(), engine, MemoryState::default());
        fails_with_the_stack_stopped(
            stack,
            Phase::Stopping,
            "cannot stop container worker: stopping container `worker`: the fake engine refused (injected failure)",
        )
        .await;
    }

    #[tokio::test]
    async fn a_stop_that_cannot_be_recorded_first_is_not_requested() {
        let failed_once = std::sync::atomic::AtomicBool::new(false);
        let state = MemoryState {
            fail_when: Some(Box::new(move |s, _| {
                let records_worker = s.in_progress.as_ref().is_some_and(|p| {
                    p.stopping
                        .as_ref()
                        .is_some_and(|names| names.iter().any(|n| n == "worker"))
                });
                records_worker && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst)
            })),
            ..MemoryState::default()
        };
        let stack = Stack::with(FakeTarget::default(), app_containers(), state);
        let (_, result) = stack.restore().await;
        let Err(Unfinished::Failed { failed, start }) = result else {
            panic!("the restore did not fail");
        };
        assert_eq!(failed.phase, Phase::Stopping);
        assert!(start.is_none(), "{start:?}");
        assert_eq!(stack.target.swaps(), 0);
        let calls = stack.stops_and_starts();
        assert_eq!(calls, ["stop web", "start web"], "{calls:?}");
        assert!(stack.both_running());
        let entry = stack.newest();
        assert_eq!(entry.phase, Some(Phase::Stopping));
        assert_eq!(
            entry.error.as_deref(),
            Some("cannot record the restore in the state file, so nothing was restored: disk full")
        );
    }

    #[tokio::test]
    async fn a_swap_that_cannot_be_recorded_first_is_not_made() {
        let state = MemoryState {
            fail_when: Some(Box::new(|s, _| {
                s.in_progress.as_ref().is_some_and(|p| p.swap.is_some())
            })),
            ..MemoryState::default()
        };
        let stack = Stack::with(FakeTarget::default(), app_containers(), state);
        let (_, result) = stack.restore().await;
        let Err(Unfinished::Failed { failed, .. }) = result else {
            panic!("the restore did not fail");
        };
        assert_eq!(stack.target.swaps(), 0);
        assert_eq!(stack.target.live(), "old");
        assert!(stack.both_running());
        let entry = stack.newest();
        assert_eq!(entry.result, "failed");
        assert_eq!(entry.phase, Some(failed.phase.clone()));
        assert_eq!(
            entry.error.as_deref(),
            Some("cannot record the restore in the state file, so nothing was restored: disk full")
        );
    }

    #[tokio::test]
    async fn a_failed_safety_backup_before_an_in_place_load_restores_nothing() {
        let target = FakeTarget {
            fail: Some(FailAt::SafetyBackup),
            ..FakeTarget::ordered(Order::StopFirst)
        };
        fails_with_the_stack_stopped(
            Stack::new(target),
            Phase::SafetyBackup,
            "the safety backup failed, so nothing was restored: backup of postgresql://app@db/app failed: pg_dump failed",
        )
        .await;
    }

    #[tokio::test]
    async fn a_failed_safety_backup_after_the_swap_leaves_the_restore_and_keeps_the_previous_database()
     {
        let stack = Stack::new(FakeTarget::failing(FailAt::SafetyBackup));
        let (_, result) = stack.restore().await;
        result.unwrap();
        assert_eq!(stack.target.live(), "restored");
        let entry = stack.newest();
        assert_eq!(entry.result, "restored");
        assert_eq!(entry.safety_backup, None);
        let error = entry.safety_backup_error.unwrap();
        assert!(
            error.contains("app_pre_restore_x") && error.contains("kept"),
            "{error}"
        );
        assert_eq!(
            stack.target.calls(),
            [
                "stage",
                "swap",
                "safety app_pre_restore_x",
                "prune keeping the newest"
            ]
        );
    }

    #[tokio::test]
    async fn the_app_runs_during_the_load_and_the_safety_backup_follows_the_start() {
        let stack = Stack::new(FakeTarget::default());
        let (_, result) = stack.restore().await;
        result.unwrap();
        assert_eq!(
            stack.target.calls(),
            ["stage", "swap", "safety app_pre_restore_x", "prune"]
        );
        let phases = phases_told(&stack);
        let at = |p: Phase| phases.iter().position(|x| *x == p).unwrap();
        assert!(at(Phase::Loading) < at(Phase::Stopping));
        assert!(at(Phase::Comparing) < at(Phase::Stopping));
        assert!(at(Phase::Starting) < at(Phase::SafetyBackup));
        let entry = stack.newest();
        assert!(
            entry.downtime_seconds.is_some_and(|d| d >= 0.0),
            "{entry:?}"
        );
        assert!(
            entry
                .manifest
                .as_deref()
                .unwrap_or("")
                .starts_with("no manifest"),
            "{entry:?}"
        );
        let Some(Event::RestoreFinished(done)) = stack.events.events().pop() else {
            unreachable!()
        };
        assert!(done.downtime.is_some());
    }

    /// The stop wait in force for each order, the other order's an hour:
    /// a restore that waited the wrong one would not finish.
    fn waiting(order: Order, wait: std::time::Duration) -> Stack {
        let hour = std::time::Duration::from_secs(3600);
        let mut stack = Stack::new(FakeTarget::ordered(order));
        stack.settings.containers.stop_wait = match order {
            Order::StopFirst => StopWait {
                stop_first: wait,
                load_while_running: hour,
            },
            Order::LoadWhileRunning => StopWait {
                stop_first: hour,
                load_while_running: wait,
            },
        };
        stack
    }

    async fn downtime_of(stack: &Stack) -> f64 {
        let (_, result) = tokio::time::timeout(std::time::Duration::from_secs(60), stack.restore())
            .await
            .expect("the restore waited the other order's stop wait");
        result.unwrap();
        stack
            .newest()
            .downtime_seconds
            .expect("containers were stopped")
    }

    #[tokio::test]
    async fn the_staging_swap_waits_after_the_stop_only_when_the_operator_asked() {
        // RESTORE_STOP_WAIT_SECONDS unset: nothing before the staging swap.
        let unset = waiting(Order::LoadWhileRunning, std::time::Duration::ZERO);
        assert!(downtime_of(&unset).await < 60.0);
        assert_eq!(
            unset.stops_and_starts(),
            ["stop web", "stop worker", "start web", "start worker"]
        );
        // Set: waited there too, inside the outage.
        let set = waiting(
            Order::LoadWhileRunning,
            std::time::Duration::from_millis(300),
        );
        assert!(downtime_of(&set).await >= 0.3);
    }

    #[tokio::test]
    async fn the_stop_first_order_keeps_its_stop_wait_before_touching_the_live_database() {
        let stack = waiting(Order::StopFirst, std::time::Duration::from_millis(300));
        assert!(downtime_of(&stack).await >= 0.3);
    }

    /// A manifest beside the dropped file, for the fake's checked SHA-256.
    fn manifest_claiming(stack: &Stack, tables: &[(&str, u64)]) -> PathBuf {
        let file = stack.settings.watch_dir.join("app-20261201T000000Z.sql.gz");
        let manifest = crate::manifest::record::samples::postgres(
            "app-20261201T000000Z.sql.gz",
            &"ab".repeat(32),
            tables,
        );
        let at = crate::manifest::manifest_path(&file);
        std::fs::write(&at, manifest.to_json()).unwrap();
        at
    }

    #[tokio::test]
    async fn counts_that_differ_from_the_manifest_stop_nothing_and_swap_nothing() {
        let stack = Stack::new(FakeTarget::default());
        let manifest = manifest_claiming(&stack, &[("public.users", 4)]);
        let (path, result) = stack.restore().await;
        let Err(Unfinished::Failed { failed, .. }) = result else {
            panic!("the restore did not fail");
        };
        assert_eq!(failed.phase, Phase::Comparing);
        let reason = failed.to_string();
        assert!(
            reason.contains("public.users: 3 rows, the manifest says 4")
                && reason.contains("the live database was not changed")
                && reason.contains("nothing was stopped"),
            "{reason}"
        );
        assert!(
            stack.stops_and_starts().is_empty(),
            "{:?}",
            stack.stops_and_starts()
        );
        assert_eq!(stack.target.live(), "old");
        assert_eq!(stack.target.calls(), ["stage", "count", "abandon"]);
        assert!(stack.in_failed_folder(&path));
        assert!(
            stack.in_failed_folder(&manifest),
            "the manifest goes with its file"
        );
    }

    #[tokio::test]
    async fn counts_known_at_check_time_are_compared_before_the_intent() {
        let target = FakeTarget {
            counts_at_check: true,
            ..FakeTarget::ordered(Order::StopFirst)
        };
        let stack = Stack::new(target);
        let manifest = manifest_claiming(&stack, &[("public.users", 2)]);
        let reason = format!(
            "the row counts differ from the manifest in 1 of 1 table: public.users: 3 rows, the manifest says 2 ({}); the prepared copy was not used; nothing was stopped and the live database was not changed",
            manifest.display()
        );
        fails_before_the_stack(stack, Phase::Checking, &reason).await;
    }

    #[tokio::test]
    async fn matching_counts_restore_and_the_manifest_goes_with_the_file() {
        let stack = Stack::new(FakeTarget::default());
        let manifest = manifest_claiming(&stack, &[("public.users", 3)]);
        let (_, result) = stack.restore().await;
        result.unwrap();
        let entry = stack.newest();
        assert_eq!(
            entry.manifest,
            Some(format!("checked 1 table against {}", manifest.display()))
        );
        assert!(!manifest.exists());
    }

    #[tokio::test]
    async fn no_live_database_means_no_safety_backup_and_no_failure() {
        let target = FakeTarget {
            exists: false,
            fail: Some(FailAt::SafetyBackup),
            ..FakeTarget::default()
        };
        let stack = Stack::new(target);
        let (_, result) = stack.restore().await;
        result.unwrap();
        assert_eq!(stack.newest().safety_backup, None);
        assert_eq!(stack.target.live(), "restored");
    }

    #[tokio::test]
    async fn a_failed_load_leaves_the_live_database() {
        fails_before_the_stack(
            Stack::new(FakeTarget::failing(FailAt::Load)),
            Phase::Loading,
            "backup of postgresql://app@db/app failed: psql failed; the live database was not changed",
        )
        .await;
    }

    #[tokio::test]
    async fn a_swap_that_rolled_back_records_swapping() {
        fails_with_the_stack_stopped(
            Stack::new(FakeTarget::failing(FailAt::Swap)),
            Phase::Swapping,
            "backup of postgresql://app@db/app failed: the swap was rolled back; the live database was not changed",
        )
        .await;
    }

    #[tokio::test]
    async fn a_container_that_will_not_start_is_recorded_with_the_restore() {
        let engine = app_containers();
        engine.fail(Op::Start, "web");
        let stack = Stack::with(FakeTarget::default(), engine, MemoryState::default());
        let (path, result) = stack.restore().await;
        let Err(unfinished @ Unfinished::NotStarted { .. }) = result else {
            panic!("expected a restore whose containers did not all start");
        };
        assert!(unfinished.restored());
        assert_eq!(stack.target.live(), "restored");
        assert_eq!(stack.engine.is_running("worker"), Some(true));
        let entry = stack.newest();
        assert_eq!(entry.result, "restored");
        assert_eq!(entry.phase, Some(Phase::Starting));
        assert_eq!(
            entry.error.as_deref(),
            Some(
                "the database was restored, but cannot start web: starting container `web`: the fake engine refused (injected failure)"
            )
        );
        // Not an engine outage: nothing is left for the next start.
        assert!(stack.state.get().in_progress.is_none());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn the_engine_gone_while_starting_leaves_the_start_for_the_next_run() {
        let engine = app_containers();
        engine.engine_gone_at(Op::Start, "web");
        let stack = Stack::with(FakeTarget::default(), engine, MemoryState::default());
        let (_, result) = stack.restore().await;
        assert!(matches!(result, Err(Unfinished::NotStarted { .. })));
        let state = stack.state.get();
        let pending = state.in_progress.as_ref().unwrap();
        assert!(pending.start_pending);
        assert_eq!(pending.phase, Phase::Starting);
        assert_eq!(pending.stopped, ["web", "worker"]);
        assert_eq!(pending.started_at, state.history[0].started_at);
        assert!(state.history[0].error.as_deref().unwrap().ends_with(
            "; the Docker engine did not answer, so backupd starts them at its next start"
        ));
        assert_eq!(state.history[0].container_health["web"], "unknown");
    }

    #[tokio::test]
    async fn a_history_that_cannot_be_written_leaves_the_intent_for_recovery() {
        let state = MemoryState {
            fail_when: Some(Box::new(|s, _| !s.history.is_empty())),
            ..MemoryState::default()
        };
        let stack = Stack::with(FakeTarget::default(), app_containers(), state);
        let (_, result) = stack.restore().await;
        result.unwrap();
        assert!(stack.both_running());
        let state = stack.state.get();
        assert!(state.history.is_empty());
        let left = state.in_progress.expect("the intent stays");
        assert_eq!(left.phase, Phase::SafetyBackup);
        assert!(left.containers_started);
        // What undoes each stop went to disk with the intent.
        let receipts: Vec<_> = left
            .receipts
            .iter()
            .map(|r| (r.backend.as_str(), r.name.as_str(), r.was_running))
            .collect();
        assert_eq!(receipts, [("fake", "web", true), ("fake", "worker", true)]);
        assert_eq!(
            left.swap.unwrap().staging_oid,
            crate::restore::fakes::STAGING_OID
        );
    }

    #[tokio::test]
    async fn a_given_file_stays_where_it_is_whatever_happens() {
        let stack = Stack::new(FakeTarget::failing(FailAt::Load));
        let path = stack.drop_file();
        let result = stack
            .procedure()
            .restore(&path, 1.0, Origin::Given, None, &CancellationToken::new())
            .await;
        assert!(result.is_err());
        assert!(path.is_file());
        assert!(!stack.in_failed_folder(&path));
    }

    #[tokio::test]
    async fn a_download_that_reads_differently_now_is_refused() {
        let stack = Stack::new(FakeTarget::default());
        let path = stack.drop_file();
        let result = stack
            .procedure()
            .restore(
                &path,
                1.0,
                Origin::Given,
                Some("cd"),
                &CancellationToken::new(),
            )
            .await;
        let Err(Unfinished::Failed { failed, .. }) = result else {
            panic!("not refused");
        };
        assert!(matches!(
            failed.error,
            RestoreError::ChangedAfterDownload { .. }
        ));
        assert!(
            failed.to_string().starts_with(
                "the file changed after it was checked: the download's SHA-256 was cd"
            )
        );
        assert_eq!(stack.target.live(), "old");
    }

    #[test]
    fn the_dry_run_plan_prints_what_would_happen() {
        let stack = Stack::new(FakeTarget::default());
        let kind = FileKind {
            payload: Payload::PlainSql,
            gzip: true,
            encrypted: true,
        };
        let plan = stack
            .procedure()
            .plan(Path::new("/restore/incoming/app.sql.gz.enc"), kind);
        let safety = stack.settings.safety_dir.display();
        assert_eq!(
            plan.to_string(),
            format!(
                "file:       /restore/incoming/app.sql.gz.enc\n\
                 content:    {}, gzip, Fernet-encrypted\n\
                 target:     postgresql://app@db/app\n\
                 strategy:   Staging\n\
                 stop:       web, worker\n\
                 start:      web, worker\n\
                 safety:     backup first, into {safety}\n",
                Payload::PlainSql.describe()
            )
        );
    }

    #[test]
    fn stamps_never_repeat_within_the_process() {
        let at = FixedClock::default().0;
        let first = unique_stamp(at);
        let second = unique_stamp(at);
        assert!(second > first, "{first} then {second}");
        assert!(crate::restore::postgres::is_stamp(&second));
    }
}
