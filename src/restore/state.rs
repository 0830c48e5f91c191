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
}

/// Where a restore is; serialised as the words earlier versions wrote
/// (`checking`, `stopping`, `safety-backup`, `loading`, `swapping`,
/// `starting`), an unknown word kept as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Phase {
    Checking,
    Stopping,
    SafetyBackup,
    Loading,
    Swapping,
    Starting,
    Other(String),
}

impl Phase {
    pub fn as_str(&self) -> &str {
        match self {
            Phase::Checking => "checking",
            Phase::Stopping => "stopping",
            Phase::SafetyBackup => "safety-backup",
            Phase::Loading => "loading",
            Phase::Swapping => "swapping",
            Phase::Starting => "starting",
            Phase::Other(word) => word,
        }
    }
}

impl From<String> for Phase {
    fn from(word: String) -> Self {
        match word.as_str() {
            "checking" => Phase::Checking,
            "stopping" => Phase::Stopping,
            "safety-backup" => Phase::SafetyBackup,
            "loading" => Phase::Loading,
            "swapping" => Phase::Swapping,
            "starting" => Phase::Starting,
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
