//! `RESTORE_STATE_FILE`: what the restore service did and is doing. The old
//! `last_processed` keys are kept; `in_progress` is written before anything
//! is stopped so a crash can be recovered; `history` keeps recent restores.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::archive::write_atomically;
use crate::error::{Error, Result};

const HISTORY_LEN: usize = 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestoreState {
    pub last_processed: Option<LastProcessed>,
    #[serde(default)]
    pub in_progress: Option<InProgress>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastProcessed {
    pub path: String,
    /// Seconds since the epoch, as the old helper wrote it.
    pub mtime: f64,
    pub completed_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InProgress {
    pub file: String,
    pub stamp: String,
    pub started_at: String,
    pub phase: Phase,
    /// Containers to stop, and those actually stopped (to start again).
    pub containers: Vec<String>,
    #[serde(default)]
    pub stopped: Vec<String>,
    /// Containers a stop was (about to be) asked for, written before each
    /// stop request: a stop in flight when backupd dies still completes in
    /// the engine, so recovery starts these too. `None` in state files of
    /// versions that did not write it (recovery then uses `containers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<Vec<String>>,
    /// What undoes each planned stop (the container control's receipts),
    /// written with the intent. Absent in older state files: recovery then
    /// starts by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<crate::container::StopReceipt>,
    /// When the last stop request was sent (RFC 3339): recovery waits up to
    /// the stop grace period from then for an in-flight stop to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_requested_at: Option<String>,
    /// PostgreSQL staging swap: written before the swap, so recovery can
    /// tell by oid whether it committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<crate::restore::postgres::SwapRecord>,
    /// The restore itself had ended and is in the history; only starting
    /// the containers was left (the engine did not answer). Recovery then
    /// only starts them and adds what it did to that history entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_pending: bool,
    pub database: String,
    /// SQLite: what the copy into the live file will leave there, recorded
    /// before its first page is written (see `restore::sqlite::Evidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<crate::restore::sqlite::Evidence>,
    /// PostgreSQL: `staging` or `inplace`. In place, the live database is
    /// emptied before the load, so recovery from an interrupted load must
    /// say that it may be empty or partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The safety backup taken before the load, once it exists: the way
    /// back that recovery names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<String>,
    /// The stopped containers have been started again (the short-outage
    /// order backs the previous database up after that): recovery has
    /// nothing to start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub containers_started: bool,
}

/// Where a restore is; serialised as the words earlier versions wrote
/// (`checking`, `stopping`, `safety-backup`, `loading`, `swapping`,
/// `after-restore-hook`, `starting`) plus `comparing`, an unknown word
/// kept as it is (so an older version reads a newer file). `in_progress`
/// holds `stopping` to `starting` (nothing needs recovering before the
/// intent is written); the history names the phase a restore failed in,
/// `checking` to `recording`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Phase {
    Checking,
    /// Writing `in_progress` before anything is stopped.
    Intent,
    Stopping,
    SafetyBackup,
    Loading,
    /// Counting the staged copy's rows against the manifest.
    Comparing,
    Swapping,
    /// `HOOK_AFTER_RESTORE` is running on the restored database: written
    /// before it starts, so recovery after a crash can tell that the
    /// fix-up may not have happened.
    AfterRestoreHook,
    Starting,
    /// Writing the history entry.
    Recording,
    Other(String),
}

impl Phase {
    pub fn as_str(&self) -> &str {
        match self {
            Phase::Checking => "checking",
            Phase::Intent => "intent",
            Phase::Stopping => "stopping",
            Phase::SafetyBackup => "safety-backup",
            Phase::Loading => "loading",
            Phase::Comparing => "comparing",
            Phase::Swapping => "swapping",
            Phase::AfterRestoreHook => "after-restore-hook",
            Phase::Starting => "starting",
            Phase::Recording => "recording",
            Phase::Other(word) => word,
        }
    }
}

impl From<String> for Phase {
    fn from(word: String) -> Self {
        match word.as_str() {
            "checking" => Phase::Checking,
            "intent" => Phase::Intent,
            "stopping" => Phase::Stopping,
            "safety-backup" => Phase::SafetyBackup,
            "loading" => Phase::Loading,
            "comparing" => Phase::Comparing,
            "swapping" => Phase::Swapping,
            "after-restore-hook" => Phase::AfterRestoreHook,
            "starting" => Phase::Starting,
            "recording" => Phase::Recording,
            _ => Phase::Other(word),
        }
    }
}

impl From<Phase> for String {
    fn from(phase: Phase) -> Self {
        phase.as_str().to_string()
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub file: String,
    pub sha256: Option<String>,
    /// `restored`, `failed`, `refused`, `superseded`, `interrupted`.
    pub result: String,
    pub error: Option<String>,
    /// The phase it failed in (or `starting` when only starting the
    /// containers went wrong); absent for clean restores and older entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// How it ended when that was found out later (a restore that had
    /// finished when backupd was killed, told by crash recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    #[serde(default)]
    pub containers_stopped: Vec<String>,
    /// Health of each started container after the restore.
    #[serde(default)]
    pub container_health: std::collections::BTreeMap<String, String>,
    pub previous_database: Option<String>,
    pub safety_backup: Option<String>,
    /// Why the safety backup failed when it was taken after the swap (of
    /// the previous database): the restore stands, the previous database
    /// is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup_error: Option<String>,
    /// The manifest check: "checked N tables against PATH", or why there
    /// was none ("no manifest (looked for …)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Seconds from the first container stop to the last start (rounded to
    /// milliseconds); absent when nothing was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    /// Why `HOOK_AFTER_RESTORE` or `HOOK_RESTORE_FAILED` failed, or that
    /// the after-restore hook did not finish (stopped by a shutdown, or
    /// backupd died while it ran); neither changes the restore's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_error: Option<String>,
}

impl RestoreState {
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Other(format!(
                    "cannot parse the restore state file {}: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io("read the restore state file", path, e)),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::create_dir_all(parent)
                .map_err(|e| Error::io("create the directory of", path, e))?;
        }
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        json.push(b'\n');
        write_atomically(path, &json)
    }

    pub fn push_history(&mut self, entry: HistoryEntry) {
        self.history.insert(0, entry);
        self.history.truncate(HISTORY_LEN);
    }
}

/// Where the restore state lives: the state file, or memory in tests. The
/// procedure writes each intent through it before the act.
pub trait StateStore: Send + Sync {
    fn read(&self) -> Result<RestoreState>;
    fn write(&self, state: &RestoreState) -> Result<()>;
}

/// `RESTORE_STATE_FILE`.
#[derive(Debug, Clone)]
pub struct StateFile(pub std::path::PathBuf);

impl StateStore for StateFile {
    fn read(&self) -> Result<RestoreState> {
        RestoreState::read(&self.0)
    }

    fn write(&self, state: &RestoreState) -> Result<()> {
        state.write(&self.0)
    }
}

/// Reads the state; one that cannot be read or parsed starts afresh.
pub fn read_or_fresh(store: &dyn StateStore) -> RestoreState {
    store.read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "starting a fresh restore state file");
        RestoreState::default()
    })
}

/// Writes the state; a failure is logged (the caller goes on).
pub fn save_or_log(store: &dyn StateStore, state: &RestoreState) {
    if let Err(e) = store.write(state) {
        tracing::error!(error = %e, "cannot write the restore state file");
    }
}

/// Writes the swap record into `in_progress` (phase `swapping`): what
/// recovery needs to tell by oid whether the swap committed. An error means
/// the record is not on disk, so the swap must not be made.
pub fn record_swap(
    store: &dyn StateStore,
    record: &crate::restore::postgres::SwapRecord,
) -> Result<()> {
    let mut state = store.read()?;
    let Some(p) = state.in_progress.as_mut() else {
        return Err(Error::Other(
            "the state file no longer holds this restore's intent".into(),
        ));
    };
    p.phase = Phase::Swapping;
    p.swap = Some(record.clone());
    store.write(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_word_reads_back_as_its_phase() {
        for phase in [
            Phase::Checking,
            Phase::Intent,
            Phase::Stopping,
            Phase::SafetyBackup,
            Phase::Loading,
            Phase::Comparing,
            Phase::Swapping,
            Phase::AfterRestoreHook,
            Phase::Starting,
            Phase::Recording,
        ] {
            assert_eq!(Phase::from(phase.as_str().to_string()), phase);
        }
        assert_eq!(
            Phase::from("later-word".to_string()),
            Phase::Other("later-word".into())
        );
    }

    #[test]
    fn a_state_file_of_an_older_version_still_parses() {
        let old = serde_json::json!({
            "last_processed": {"path": "/restore/incoming/a.sql.gz", "mtime": 1.5, "completed_at": "2026-12-01T00:00:00Z"},
            "in_progress": {
                "file": "/restore/incoming/b.sql.gz",
                "stamp": "20261201T000000Z",
                "started_at": "2026-12-01T00:00:00Z",
                "phase": "loading",
                "containers": ["web"],
                "database": "postgresql://app@db/app"
            },
            "history": [{
                "file": "a.sql.gz", "sha256": null, "result": "restored", "error": null,
                "started_at": "2026-12-01T00:00:00Z", "finished_at": "2026-12-01T00:00:01Z",
                "duration_seconds": 1.0, "previous_database": null, "safety_backup": null
            }]
        });
        let state: RestoreState = serde_json::from_value(old).unwrap();
        let p = state.in_progress.unwrap();
        assert_eq!(p.phase, Phase::Loading);
        assert_eq!(p.stopping, None);
        assert_eq!(state.history[0].phase, None);
    }
}
