//! After a crash: an `in_progress` entry means the last run died mid-way
//! (or could not start the containers). Recovery puts the database back in
//! one piece (or finds the restore had finished), starts the configured
//! containers the intent names, and records what really happened. An
//! after-restore hook that was running is told as unfinished, never run
//! again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::archive::file_name;
use crate::error::Result;
use crate::events::{HookFailed, HookPoint};
use crate::restore::Recovered;
use crate::restore::containers::{self, asked_to_stop};
use crate::restore::failed::move_to_failed;
use crate::restore::procedure::Procedure;
use crate::restore::state::{HistoryEntry, LastProcessed, Phase, read_or_fresh, save_or_log};
use crate::restore::target::RestoreTarget;
use crate::state::timestamp;

impl<T: RestoreTarget> Procedure<'_, T> {
    /// Recovers an interrupted restore, if the state file names one. The
    /// error is the database side's, when it could not be put back.
    pub async fn recover_interrupted(&self) -> Result<()> {
        let mut state = read_or_fresh(self.state);
        let Some(interrupted) = state.in_progress.take() else {
            return Ok(());
        };
        tracing::warn!(file = %interrupted.file, phase = %interrupted.phase, "the previous restore was interrupted; recovering");
        let database = if interrupted.start_pending {
            Ok(Recovered::Finished(
                "the restore had ended; only starting the containers was left".into(),
            ))
        } else {
            self.target.recover(&interrupted).await
        };
        let policy = &self.settings.containers;
        // Only containers the operator configured: a tampered state file
        // must not make backupd start arbitrary containers.
        // Started again already (killed during the safety backup that
        // follows the start): nothing is down.
        let asked = if interrupted.containers_started {
            Vec::new()
        } else {
            asked_to_stop(&interrupted)
        };
        let (to_start, skipped): (Vec<String>, Vec<String>) = asked
            .into_iter()
            .partition(|name| policy.is_configured(name));
        for name in &skipped {
            tracing::warn!(
                container = %name,
                "the state file names a container that is in neither RESTORE_STOP_CONTAINERS nor RESTORE_START_CONTAINERS; not starting it"
            );
        }
        containers::settle_in_flight_stops(
            self.containers,
            policy,
            self.clock,
            &interrupted,
            &to_start,
        )
        .await;
        let mut health = BTreeMap::new();
        let started = containers::start(
            self.containers,
            policy,
            &to_start,
            &interrupted.receipts,
            &mut health,
            &mut None,
        )
        .await;
        let finished_at = timestamp(self.clock.now());
        let file = PathBuf::from(&interrupted.file);
        let mut notes = Vec::new();
        if !skipped.is_empty() {
            notes.push(format!(
                "not started (not configured): {}",
                skipped.join(", ")
            ));
        }
        if let Err(e) = &started {
            notes.push(e.to_string());
        }

        // Not run again: a fix-up need not be safe to run twice (a
        // migration, a re-keying), and whether it got as far as it did is
        // only known to the operator, who decides. Told and recorded, so the
        // app starting without it is not missed.
        let hook_unfinished = (interrupted.phase == Phase::AfterRestoreHook).then(|| {
            format!(
                "{} did not finish: backupd stopped while it ran; it was not run again, so the fix-up may be incomplete",
                HookPoint::AfterRestore.variable()
            )
        });

        if interrupted.start_pending {
            // The restore's own entry is in the history already.
            let note = match &started {
                Ok(()) => format!("containers started by recovery at {finished_at}"),
                Err(_) => format!("recovery at {finished_at} could not start every container"),
            };
            notes.insert(0, note);
            let entry = state
                .history
                .iter_mut()
                .find(|h| h.file == file_name(&file) && h.started_at == interrupted.started_at);
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
            let dropped = file.exists() && file.parent() == Some(self.settings.watch_dir.as_path());
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
                    &self.settings.failed_dir,
                    "the restore was interrupted (backupd stopped mid-way)",
                    self.clock,
                );
            }
            // The short-outage order backs the previous database up after
            // the swap and the start: the restore had finished, its way
            // back is the previous database itself, kept.
            let safety_unfinished = (finished && interrupted.phase == Phase::SafetyBackup).then(|| {
                let previous = interrupted
                    .swap
                    .as_ref()
                    .map_or_else(|| "the previous database".to_string(), |r| format!("\"{}\"", r.previous));
                format!(
                    "the safety backup of the previous database was not completed (backupd stopped while taking it); {previous} is kept as the way back"
                )
            });
            if let Some(note) = &safety_unfinished {
                notes.push(note.clone());
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
                file: file_name(&file),
                sha256: None,
                result: result.into(),
                error,
                phase: (!finished).then(|| interrupted.phase.clone()),
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
                safety_backup_error: safety_unfinished,
                manifest: None,
                downtime_seconds: None,
                hook_error: hook_unfinished.clone(),
                note,
            });
        }
        // The engine is still away: keep the intent for the next start.
        if let Err(failure) = &started
            && failure.engine_lost()
        {
            let mut pending = interrupted.clone();
            pending.start_pending = true;
            pending.stopped = to_start.clone();
            pending.stopping = Some(to_start.clone());
            state.in_progress = Some(pending);
        }
        save_or_log(self.state, &state);
        if let Some(error) = hook_unfinished {
            self.observer.observe(
                &HookFailed {
                    hook: HookPoint::AfterRestore,
                    file: Some(file),
                    error,
                }
                .into(),
            );
        }
        database.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use crate::container::fake::FakeContainers;
    use crate::events::HookPoint;
    use crate::restore::fakes::{FakeTarget, LIVE_OID, MemoryState, STAGING_OID};
    use crate::restore::postgres::SwapRecord;
    use crate::restore::procedure::tests::Stack;
    use crate::restore::state::{HistoryEntry, InProgress, Phase, RestoreState};

    fn interrupted(stack: &Stack, phase: Phase) -> InProgress {
        InProgress {
            file: stack
                .settings
                .watch_dir
                .join("app-20261201T000000Z.sql.gz")
                .display()
                .to_string(),
            stamp: "20261201T115959.000000Z".into(),
            started_at: "2026-12-01T11:59:59Z".into(),
            phase,
            containers: vec!["web".into(), "worker".into()],
            stopped: vec!["web".into()],
            stopping: Some(vec!["web".into()]),
            receipts: vec![],
            stop_requested_at: None,
            swap: None,
            start_pending: false,
            database: "postgresql://app@db/app".into(),
            sqlite: None,
            strategy: Some("staging".into()),
            safety_backup: None,
            containers_started: false,
        }
    }

    fn swap_record() -> SwapRecord {
        SwapRecord {
            live_oid: Some(LIVE_OID),
            staging: "app_restore_20261201T115959.000000Z".into(),
            staging_oid: STAGING_OID,
            previous: "app_pre_restore_20261201T115959.000000Z".into(),
        }
    }

    /// `web` was stopped by the restore that died; `worker` never was.
    fn after_a_crash(target: FakeTarget, build: impl FnOnce(&Stack) -> InProgress) -> Stack {
        let stack = Stack::with(
            target,
            FakeContainers::new().stopped("web").running("worker"),
            MemoryState::default(),
        );
        let in_progress = build(&stack);
        *stack.state.state.lock().unwrap() = RestoreState {
            in_progress: Some(in_progress),
            ..RestoreState::default()
        };
        stack.drop_file();
        stack
    }

    #[tokio::test]
    async fn a_crash_after_stopping_starts_the_containers_and_says_interrupted() {
        let stack = after_a_crash(FakeTarget::default(), |s| interrupted(s, Phase::Stopping));
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.stops_and_starts(), ["start web"]);
        assert!(stack.both_running());
        assert_eq!(stack.target.live(), "old");
        let state = stack.state.get();
        assert!(state.in_progress.is_none());
        let entry = &state.history[0];
        assert_eq!(entry.result, "interrupted");
        assert_eq!(entry.phase, Some(Phase::Stopping));
        assert_eq!(
            entry.error.as_deref(),
            Some("interrupted in phase stopping; the live database was not changed")
        );
        assert_eq!(entry.containers_stopped, ["web"]);
        let file = stack.settings.watch_dir.join("app-20261201T000000Z.sql.gz");
        assert!(stack.in_failed_folder(&file));
    }

    #[tokio::test]
    async fn a_crash_mid_swap_that_committed_is_completed_by_recovery() {
        let target = FakeTarget::default();
        // The live name has the staging database's oid: the swap committed.
        *target.live_oid_now.lock().unwrap() = Some(STAGING_OID);
        let stack = after_a_crash(target, |s| InProgress {
            swap: Some(swap_record()),
            ..interrupted(s, Phase::Swapping)
        });
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.stops_and_starts(), ["start web"]);
        let state = stack.state.get();
        let entry = &state.history[0];
        assert_eq!(entry.result, "restored");
        assert_eq!(entry.error, None);
        assert_eq!(entry.phase, None);
        assert_eq!(
            entry.note.as_deref(),
            Some("interrupted in phase swapping; the restore had finished; completed by recovery")
        );
        assert_eq!(
            entry.previous_database.as_deref(),
            Some("app_pre_restore_20261201T115959.000000Z")
        );
        assert!(state.last_processed.is_some());
        let file = stack.settings.watch_dir.join("app-20261201T000000Z.sql.gz");
        assert!(!file.exists(), "a restored dropped file is deleted");
    }

    #[tokio::test]
    async fn a_crash_during_the_after_restore_hook_is_told_and_the_hook_not_run_again() {
        let target = FakeTarget::default();
        *target.live_oid_now.lock().unwrap() = Some(STAGING_OID);
        let stack = after_a_crash(target, |s| InProgress {
            swap: Some(swap_record()),
            ..interrupted(s, Phase::AfterRestoreHook)
        });
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.stops_and_starts(), ["start web"]);
        assert!(
            stack.hooks.points().is_empty(),
            "{:?}",
            stack.hooks.points()
        );
        let state = stack.state.get();
        let entry = &state.history[0];
        assert_eq!(entry.result, "restored");
        let message = "HOOK_AFTER_RESTORE did not finish: backupd stopped while it ran; it was not run again, so the fix-up may be incomplete";
        assert_eq!(entry.hook_error.as_deref(), Some(message));
        let told = stack.events.hook_failures();
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].hook, HookPoint::AfterRestore);
        assert_eq!(told[0].error, message);
        assert_eq!(
            told[0].file.as_deref(),
            Some(
                stack
                    .settings
                    .watch_dir
                    .join("app-20261201T000000Z.sql.gz")
                    .as_path()
            )
        );
    }

    #[tokio::test]
    async fn a_crash_in_another_phase_tells_of_no_hook() {
        let stack = after_a_crash(FakeTarget::default(), |s| interrupted(s, Phase::Loading));
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.state.get().history[0].hook_error, None);
        assert!(!stack.events.names().contains(&"hook-failed"));
    }

    #[tokio::test]
    async fn a_crash_mid_swap_that_did_not_commit_says_interrupted() {
        // The live name still has its own oid: the swap never committed.
        let stack = after_a_crash(FakeTarget::default(), |s| InProgress {
            swap: Some(swap_record()),
            ..interrupted(s, Phase::Swapping)
        });
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.stops_and_starts(), ["start web"]);
        let entry = &stack.state.get().history[0];
        assert_eq!(entry.result, "interrupted");
        assert_eq!(entry.phase, Some(Phase::Swapping));
        assert_eq!(entry.previous_database, None);
        assert!(state_has_no_intent(&stack));
    }

    fn state_has_no_intent(stack: &Stack) -> bool {
        stack.state.get().in_progress.is_none()
    }

    #[tokio::test]
    async fn recovery_starts_only_configured_containers() {
        let stack = after_a_crash(FakeTarget::default(), |s| InProgress {
            stopped: vec!["web".into(), "database".into()],
            ..interrupted(s, Phase::Loading)
        });
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.stops_and_starts(), ["start web"]);
        let entry = &stack.state.get().history[0];
        assert!(
            entry
                .error
                .as_deref()
                .unwrap()
                .ends_with("; not started (not configured): database"),
            "{entry:?}"
        );
    }

    #[tokio::test]
    async fn a_pending_start_only_starts_and_amends_the_restores_entry() {
        let stack = after_a_crash(FakeTarget::default(), |s| InProgress {
            start_pending: true,
            ..interrupted(s, Phase::Starting)
        });
        stack
            .state
            .state
            .lock()
            .unwrap()
            .history
            .push(HistoryEntry {
                file: "app-20261201T000000Z.sql.gz".into(),
                sha256: None,
                result: "restored".into(),
                error: Some("the database was restored, but …".into()),
                phase: Some(Phase::Starting),
                note: None,
                started_at: "2026-12-01T11:59:59Z".into(),
                finished_at: "2026-12-01T12:00:00Z".into(),
                duration_seconds: 1.0,
                containers_stopped: vec!["web".into()],
                container_health: Default::default(),
                previous_database: None,
                safety_backup: None,
                safety_backup_error: None,
                manifest: None,
                downtime_seconds: None,
                hook_error: None,
            });
        stack.procedure().recover_interrupted().await.unwrap();
        assert_eq!(stack.stops_and_starts(), ["start web"]);
        assert!(stack.target.recovered.lock().unwrap().is_empty());
        let state = stack.state.get();
        assert_eq!(state.history.len(), 1);
        assert_eq!(
            state.history[0].note.as_deref(),
            Some("containers started by recovery at 2026-12-01T12:00:00Z")
        );
        assert!(state.in_progress.is_none());
    }

    #[tokio::test]
    async fn the_engine_still_gone_keeps_the_intent_for_the_next_start() {
        let stack = Stack::with(
            FakeTarget::default(),
            {
                let engine = FakeContainers::new().stopped("web");
                engine.engine_gone();
                engine
            },
            MemoryState::default(),
        );
        *stack.state.state.lock().unwrap() = RestoreState {
            in_progress: Some(interrupted(&stack, Phase::Loading)),
            ..RestoreState::default()
        };
        stack.procedure().recover_interrupted().await.unwrap();
        let pending = stack.state.get().in_progress.unwrap();
        assert!(pending.start_pending);
        assert_eq!(pending.stopped, ["web"]);
    }
}
