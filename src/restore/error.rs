//! Why a restore did not happen, or did not end cleanly. The text of each
//! variant is the reason recorded in the history and beside the file in the
//! failed folder (operators and tests read it, so it stays word for word);
//! code decides on the variant, never on the text.

use crate::error::Error;
use crate::events::{Failure, FailureKind};
use crate::hooks::HookError;
use crate::restore::check::CheckError;
use crate::restore::input::CHANGED_AFTER_CHECK;
use crate::restore::state::Phase;

/// Why a plain file is refused under `RESTORE_REQUIRE_ENCRYPTED=true`.
pub const REQUIRE_ENCRYPTED_REASON: &str = "refused: the file is not encrypted (.enc) and RESTORE_REQUIRE_ENCRYPTED=true accepts only Fernet-encrypted backups";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("not a backup file name")]
    NotABackupName,

    #[error("{REQUIRE_ENCRYPTED_REASON}")]
    NotEncrypted,

    /// The file failed its check or does not match the configured database
    /// (the check's reason). Nothing was stopped.
    #[error(transparent)]
    Check(#[from] CheckError),

    /// A downloaded file read differently in the check than in the download.
    #[error(
        "{CHANGED_AFTER_CHECK}: the download's SHA-256 was {expected} (as its .sha256 object says), the file read now is {actual}; nothing was stopped or loaded"
    )]
    ChangedAfterDownload { expected: String, actual: String },

    /// The container engine could not say what is running.
    #[error(transparent)]
    Containers(Error),

    #[error(
        "container '{0}' (RESTORE_STOP_CONTAINERS) does not exist; nothing was stopped (set RESTORE_ALLOW_MISSING_CONTAINERS=true to go on without it)"
    )]
    MissingContainer(String),

    /// `HOOK_BEFORE_RESTORE` refused (or failed to run); nothing was stopped.
    #[error("{0}; nothing was stopped or restored")]
    Hook(#[source] HookError),

    /// Without the intent on disk a crash could not be recovered from.
    #[error("cannot record the restore in the state file, so nothing was stopped: {0}")]
    Intent(#[source] Error),

    #[error("cannot stop container {name}: {source}")]
    Stop {
        name: String,
        #[source]
        source: Error,
    },

    #[error("the safety backup failed, so nothing was restored: {0}")]
    SafetyBackup(#[source] Error),

    /// Loading or swapping in failed; the live database is as it was (the
    /// loader's message says so, or says what is known).
    #[error(transparent)]
    Load(Error),

    /// What recovery would need was not written, so the live database was
    /// not touched.
    #[error("cannot record the restore in the state file, so nothing was restored: {0}")]
    Evidence(#[source] Error),

    /// The staged copy's row counts differ from the backup's manifest:
    /// nothing was swapped in (`outcome` says what is true of the live
    /// database, looked up).
    #[error("{mismatch} ({manifest}); {outcome}")]
    RowCounts {
        mismatch: crate::manifest::CountMismatch,
        /// The manifest's path.
        manifest: String,
        outcome: String,
    },

    /// The staged copy's rows could not be counted.
    #[error("cannot count the rows of the restored copy to compare them with the manifest: {0}")]
    Counting(#[source] Error),

    #[error("the restore task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    #[error("internal: no prepared SQLite file")]
    NotPrepared,
}

/// A restore that did not take effect, and the phase it stopped in.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    pub phase: Phase,
    #[source]
    pub error: RestoreError,
}

impl Failed {
    pub fn new(phase: Phase, error: RestoreError) -> Self {
        Failed { phase, error }
    }
}

/// One container that could not be started after a restore.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine answered and refused (not retried).
    #[error("cannot start {name}: {source}")]
    Refused {
        name: String,
        #[source]
        source: Error,
    },
    /// The engine did not answer within `RESTORE_START_RETRY_SECONDS`.
    #[error(
        "cannot start {name}: the Docker engine did not answer ({attempts} attempts): {source}"
    )]
    EngineLost {
        name: String,
        attempts: u32,
        #[source]
        source: Error,
    },
}

/// Why starting the containers did not fully work.
#[derive(Debug)]
pub struct StartFailure {
    pub errors: Vec<StartError>,
}

impl StartFailure {
    /// The engine stopped answering: the containers are left for the next
    /// start of backupd.
    pub fn engine_lost(&self) -> bool {
        self.errors
            .iter()
            .any(|e| matches!(e, StartError::EngineLost { .. }))
    }
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, e) in self.errors.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StartFailure {}

/// How a restore that was not a clean success ended: it failed (and maybe
/// the containers did not all start either), or it restored but some
/// container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Unfinished {
    #[error("{failed}{}", start_suffix(.start.as_ref()))]
    Failed {
        failed: Failed,
        start: Option<StartFailure>,
    },
    #[error("the database was restored, but {start}{}", pending(.start))]
    NotStarted { start: StartFailure },
}

fn pending(start: &StartFailure) -> &'static str {
    if start.engine_lost() {
        "; the Docker engine did not answer, so backupd starts them at its next start"
    } else {
        ""
    }
}

fn start_suffix(start: Option<&StartFailure>) -> String {
    match start {
        Some(start) => format!("; {start}{}", pending(start)),
        None => String::new(),
    }
}

impl Unfinished {
    /// The phase the restore failed in, or `starting` when only starting the
    /// containers went wrong.
    pub fn phase(&self) -> Phase {
        match self {
            Unfinished::Failed { failed, .. } => failed.phase.clone(),
            Unfinished::NotStarted { .. } => Phase::Starting,
        }
    }

    /// Whether the live database holds the restored backup.
    pub fn restored(&self) -> bool {
        matches!(self, Unfinished::NotStarted { .. })
    }
}

impl From<&RestoreError> for Failure {
    fn from(error: &RestoreError) -> Self {
        let kind = match error {
            RestoreError::NotABackupName
            | RestoreError::NotEncrypted
            | RestoreError::Check(_)
            | RestoreError::ChangedAfterDownload { .. }
            | RestoreError::RowCounts { .. } => FailureKind::Verify,
            RestoreError::Containers(_)
            | RestoreError::MissingContainer(_)
            | RestoreError::Stop { .. } => FailureKind::Container,
            RestoreError::Intent(e)
            | RestoreError::SafetyBackup(e)
            | RestoreError::Load(e)
            | RestoreError::Counting(e)
            | RestoreError::Evidence(e) => Failure::from(e).kind,
            RestoreError::Hook(e) if e.is_cancelled() => FailureKind::Cancelled,
            RestoreError::Hook(_) => FailureKind::Hook,
            RestoreError::Task(_) | RestoreError::NotPrepared => FailureKind::Other,
        };
        Failure::new(kind, error.to_string())
    }
}
