//! The database side of a restore, as the procedure sees it: check a file
//! against the target, tell whether there is a live database to back up
//! first, take that safety backup, load and swap in, and recover after a
//! crash. [`LiveDatabase`] does it for the configured PostgreSQL or SQLite
//! database (delegating to `restore::postgres` and `restore::sqlite`); the
//! procedure's tests use a fake.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::backup;
use crate::clock::Clock;
use crate::config::BackupConfig;
use crate::crypto::keys::Keys;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::restore::Recovered;
use crate::restore::check::{self, CheckError, Checked};
use crate::restore::error::RestoreError;
use crate::restore::input::PrivateDir;
use crate::restore::kind::FileKind;
use crate::restore::postgres::{self as pg_restore, Strategy, SwapRecord};
use crate::restore::sqlite as sqlite_restore;
use crate::restore::state::{self, InProgress, Phase, StateStore};

/// What a load left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Where the replaced database is kept (a database name or a file).
    pub previous: Option<String>,
}

#[async_trait]
pub trait RestoreTarget: Send + Sync {
    /// A file that passed the check, ready to load.
    type Checked: Send;

    /// The target as the state file names it (URLs masked).
    fn describe(&self) -> String;

    /// The PostgreSQL strategy, recorded so recovery can tell an in-place
    /// load (the live database emptied first) from a staging one.
    fn strategy(&self) -> Option<Strategy>;

    /// Checks the whole file before anything is stopped.
    async fn check(
        &self,
        file: &Path,
        kind: FileKind,
        stamp: &str,
    ) -> std::result::Result<Self::Checked, RestoreError>;

    /// SHA-256 of the file as the check read it.
    fn sha256(checked: &Self::Checked) -> &str;

    /// Bytes of the file as the check read it.
    fn size(checked: &Self::Checked) -> u64;

    /// Refuses a dump of another application (before anything is stopped).
    async fn same_application(
        &self,
        checked: &Self::Checked,
    ) -> std::result::Result<(), RestoreError>;

    /// Whether there is a live database (a safety backup of nothing is
    /// skipped, not failed).
    async fn exists(&self) -> Result<bool>;

    /// Backs the live database up; returns the file written.
    async fn safety_backup(&self, cancel: &CancellationToken, clock: &dyn Clock)
    -> Result<PathBuf>;

    /// Loads the checked file and swaps it in. Whatever recovery needs is
    /// written through `journal` before the live database is touched.
    async fn load(
        &self,
        checked: Self::Checked,
        stamp: &str,
        journal: &dyn StateStore,
        cancel: &CancellationToken,
    ) -> std::result::Result<Loaded, RestoreError>;

    /// After a crash: puts the live database back in one piece, or finds
    /// the restore had finished.
    async fn recover(&self, interrupted: &InProgress) -> Result<Recovered>;
}

/// The configured database, restored for real.
#[derive(Debug, Clone)]
pub struct LiveDatabase {
    pub database: Database,
    /// Decrypt `.enc` files.
    pub keys: Keys,
    pub strategy: Strategy,
    pub keep_previous: usize,
    /// `RESTORE_ALLOW_SCHEMA_CHANGE`.
    pub allow_schema_change: bool,
    /// The safety backup's settings (its folder, encryption).
    pub safety: BackupConfig,
    /// Plaintext made from a restore input goes into the private folder
    /// beside it.
    pub state_file: PathBuf,
}

#[async_trait]
impl RestoreTarget for LiveDatabase {
    type Checked = Checked;

    fn describe(&self) -> String {
        self.database.to_string()
    }

    fn strategy(&self) -> Option<Strategy> {
        matches!(self.database, Database::Postgres(_)).then_some(self.strategy)
    }

    async fn check(
        &self,
        file: &Path,
        kind: FileKind,
        stamp: &str,
    ) -> std::result::Result<Checked, RestoreError> {
        // Plaintext backupd makes goes into a folder only it can enter.
        let private = PrivateDir::beside_state_file(&self.state_file).map_err(CheckError::from)?;
        Ok(check::check(file, kind, &self.database, &self.keys, stamp, &private).await?)
    }

    fn sha256(checked: &Checked) -> &str {
        &checked.sha256
    }

    fn size(checked: &Checked) -> u64 {
        checked.size
    }

    async fn same_application(&self, checked: &Checked) -> std::result::Result<(), RestoreError> {
        Ok(check::same_application(checked, &self.database, self.allow_schema_change).await?)
    }

    async fn exists(&self) -> Result<bool> {
        match &self.database {
            Database::Postgres(target) => {
                let server = pg_restore::Server::connect(target).await?;
                server.database_exists(server.live_database()).await
            }
            // As the backup itself sees it: through a link.
            Database::Sqlite(target) => match std::fs::metadata(&target.path) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io("inspect the database file", &target.path, e)),
            },
        }
    }

    async fn safety_backup(
        &self,
        cancel: &CancellationToken,
        clock: &dyn Clock,
    ) -> Result<PathBuf> {
        Ok(backup::safety_backup(&self.safety, cancel, clock)
            .await?
            .path)
    }

    async fn load(
        &self,
        mut checked: Checked,
        stamp: &str,
        journal: &dyn StateStore,
        cancel: &CancellationToken,
    ) -> std::result::Result<Loaded, RestoreError> {
        match &self.database {
            Database::Postgres(target) => {
                let opts = pg_restore::Options {
                    strategy: self.strategy,
                    keep_previous: self.keep_previous,
                    stamp: stamp.to_string(),
                };
                let record_swap = |record: &SwapRecord| state::record_swap(journal, record);
                let report = pg_restore::restore_recorded(
                    target,
                    &checked.input,
                    checked.kind,
                    &opts,
                    &record_swap,
                    cancel,
                )
                .await
                .map_err(RestoreError::Load)?;
                Ok(Loaded {
                    previous: report.previous,
                })
            }
            Database::Sqlite(target) => {
                let prepared = checked.prepared.take().ok_or(RestoreError::NotPrepared)?;
                let (source, live, copy_stamp) = (
                    prepared.path.clone(),
                    target.path.clone(),
                    stamp.to_string(),
                );
                let evidence = tokio::task::spawn_blocking(move || {
                    sqlite_restore::prepare(&source, &live, &copy_stamp)
                })
                .await?
                .map_err(RestoreError::Load)?;
                // Recovery judges a crash by this record, so no copy starts
                // without it on disk.
                let mut state = journal.read().map_err(RestoreError::Evidence)?;
                // A state file that lost this restore's intent (removed, or
                // rewritten by hand) would take the evidence nowhere.
                match state.in_progress.as_mut() {
                    Some(p) if p.stamp == stamp => p.sqlite = Some(evidence.clone()),
                    _ => {
                        return Err(RestoreError::Evidence(Error::Other(
                            "the state file no longer holds this restore's intent".into(),
                        )));
                    }
                }
                journal.write(&state).map_err(RestoreError::Evidence)?;
                let previous = evidence.previous.clone();
                let (source, live) = (prepared.path.clone(), target.path.clone());
                tokio::task::spawn_blocking(move || {
                    sqlite_restore::apply(&source, &live, &evidence)
                })
                .await?
                .map_err(RestoreError::Load)?;
                drop(prepared);
                Ok(Loaded { previous })
            }
        }
    }

    async fn recover(&self, interrupted: &InProgress) -> Result<Recovered> {
        match &self.database {
            Database::Postgres(target) => {
                let found =
                    pg_restore::recover(target, &interrupted.stamp, interrupted.swap.as_ref())
                        .await?;
                Ok(inplace_truth(interrupted, found))
            }
            Database::Sqlite(target) => {
                let (live, stamp, evidence) = (
                    target.path.clone(),
                    interrupted.stamp.clone(),
                    interrupted.sqlite.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    sqlite_restore::recover(&live, &stamp, evidence.as_ref())
                })
                .await
                .map_err(|e| Error::Other(format!("the recovery task failed: {e}")))?
            }
        }
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
