//! The database side of a restore, as the procedure sees it: check a file
//! against the target, tell whether there is a live database to back up,
//! take that safety backup, stage (load beside the live database, or in
//! place), count the staged rows, swap in or give the staged copy up, prune
//! previous databases, and recover after a crash. [`LiveDatabase`] does it for the configured PostgreSQL or SQLite
//! database (delegating to `restore::postgres` and `restore::sqlite`); the
//! procedure's tests use a fake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::backup;
use crate::clock::Clock;
use crate::config::BackupConfig;
use crate::crypto::keys::Keys;
use crate::db::{Database, PgTarget};
use crate::error::{Error, Result};
use crate::restore::Recovered;
use crate::restore::check::{self, CheckError, Checked};
use crate::restore::error::RestoreError;
use crate::restore::input::PrivateDir;
use crate::restore::kind::FileKind;
use crate::restore::postgres::{self as pg_restore, Strategy, SwapRecord};
use crate::restore::sqlite as sqlite_restore;
use crate::restore::state::{self, InProgress, Phase, StateStore};

/// What a swap left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Where the replaced database is kept (a database name or a file).
    pub previous: Option<String>,
}

/// Row counts by table name, as a manifest records them.
pub type Counts = BTreeMap<String, u64>;

/// The order the procedure runs its phases around a target in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Load beside the live database while the app keeps running, stop the
    /// containers only for the swap, and back up the set-aside database
    /// after they have started again (PostgreSQL, staging strategy).
    LoadWhileRunning,
    /// Stop, back up the live database, then load and swap (PostgreSQL in
    /// place, where the load replaces the live database; SQLite, whose
    /// copy into the live file is the swap).
    StopFirst,
}

/// Which database a safety backup is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetySource<'a> {
    /// The live database, before it is replaced.
    Live,
    /// The database the swap set aside (`<db>_pre_restore_<stamp>`),
    /// unchanged and unused once the app runs on the restored one.
    Previous(&'a str),
}

#[async_trait]
pub trait RestoreTarget: Send + Sync {
    /// A file that passed the check, ready to load.
    type Checked: Send;
    /// A loaded copy, not yet in place (the staging database).
    type Staged: Send;

    /// The target as the state file names it (URLs masked).
    fn describe(&self) -> String;

    /// The PostgreSQL strategy, recorded so recovery can tell an in-place
    /// load (the live database emptied first) from a staging one.
    fn strategy(&self) -> Option<Strategy>;

    /// Whether the load runs while the app does (see [`Order`]).
    fn order(&self) -> Order;

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

    /// The row counts of what the check prepared, when the check already
    /// holds the database to swap in (SQLite's prepared copy); `None`: they
    /// are known only after [`stage`](Self::stage).
    async fn checked_counts(
        &self,
        checked: &Self::Checked,
    ) -> std::result::Result<Option<Counts>, RestoreError>;

    /// Whether there is a live database (a safety backup of nothing is
    /// skipped, not failed).
    async fn exists(&self) -> Result<bool>;

    /// Backs `source` up; returns the file written.
    async fn safety_backup(
        &self,
        source: SafetySource<'_>,
        cancel: &CancellationToken,
        clock: &dyn Clock,
    ) -> Result<PathBuf>;

    /// Loads the checked file where the swap can take it from: a staging
    /// database beside the live one, or (in place) the live one itself.
    async fn stage(
        &self,
        checked: Self::Checked,
        stamp: &str,
        cancel: &CancellationToken,
    ) -> std::result::Result<Self::Staged, RestoreError>;

    /// The row counts of the staged copy.
    async fn staged_counts(
        &self,
        staged: &Self::Staged,
    ) -> std::result::Result<Counts, RestoreError>;

    /// Gives a staged copy up (its counts were wrong): drops it and says
    /// what is true of the live database now, looked up.
    async fn abandon(&self, staged: Self::Staged) -> String;

    /// Swaps the staged copy in. Whatever recovery needs is written through
    /// `journal` before the live database is touched.
    async fn swap(
        &self,
        staged: Self::Staged,
        stamp: &str,
        journal: &dyn StateStore,
        cancel: &CancellationToken,
    ) -> std::result::Result<Loaded, RestoreError>;

    /// Drops previous databases beyond `RESTORE_KEEP_PREVIOUS`, after the
    /// safety backup; `keep_newest` keeps the one just set aside whatever
    /// the setting (its safety backup failed: it is the only way back).
    async fn prune(&self, keep_newest: bool) -> Vec<String>;

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

/// What [`LiveDatabase::stage`] leaves for the swap.
#[derive(Debug)]
pub enum Staged {
    /// Loaded into `<db>_restore_<stamp>`.
    Postgres(pg_restore::Staged),
    /// `RESTORE_PG_STRATEGY=inplace`: the live database holds the load.
    InPlace,
    /// SQLite: the prepared copy, copied into the live file by the swap.
    Sqlite(Checked),
}

impl LiveDatabase {
    fn options(&self, stamp: &str) -> pg_restore::Options {
        pg_restore::Options {
            strategy: self.strategy,
            keep_previous: self.keep_previous,
            stamp: stamp.to_string(),
        }
    }
}

#[async_trait]
impl RestoreTarget for LiveDatabase {
    type Checked = Checked;
    type Staged = Staged;

    fn describe(&self) -> String {
        self.database.to_string()
    }

    fn strategy(&self) -> Option<Strategy> {
        matches!(self.database, Database::Postgres(_)).then_some(self.strategy)
    }

    fn order(&self) -> Order {
        match (&self.database, self.strategy) {
            (Database::Postgres(_), Strategy::Staging) => Order::LoadWhileRunning,
            _ => Order::StopFirst,
        }
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

    async fn checked_counts(
        &self,
        checked: &Checked,
    ) -> std::result::Result<Option<Counts>, RestoreError> {
        let Some(prepared) = &checked.prepared else {
            return Ok(None);
        };
        Ok(Some(sqlite_counts(prepared.path.clone()).await?))
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
        source: SafetySource<'_>,
        cancel: &CancellationToken,
        clock: &dyn Clock,
    ) -> Result<PathBuf> {
        let cfg = match (source, &self.database) {
            (SafetySource::Live, _) => std::borrow::Cow::Borrowed(&self.safety),
            // The same server and role, another database name: the dump
            // (plain, no CREATE DATABASE) restores into the live name.
            (SafetySource::Previous(name), Database::Postgres(target)) => {
                let mut cfg = self.safety.clone();
                cfg.database = Database::Postgres(PgTarget {
                    dbname: Some(name.to_string()),
                    ..target.clone()
                });
                std::borrow::Cow::Owned(cfg)
            }
            (SafetySource::Previous(_), Database::Sqlite(_)) => {
                return Err(Error::Other(
                    "internal: a SQLite restore keeps no previous database to back up".into(),
                ));
            }
        };
        Ok(backup::safety_backup(&cfg, cancel, clock).await?.path)
    }

    async fn stage(
        &self,
        checked: Checked,
        stamp: &str,
        cancel: &CancellationToken,
    ) -> std::result::Result<Staged, RestoreError> {
        match &self.database {
            Database::Postgres(target) => {
                let opts = self.options(stamp);
                match self.strategy {
                    Strategy::Staging => Ok(Staged::Postgres(
                        pg_restore::stage(target, &checked.input, checked.kind, &opts, cancel)
                            .await
                            .map_err(RestoreError::Load)?,
                    )),
                    Strategy::Inplace => {
                        pg_restore::restore_recorded(
                            target,
                            &checked.input,
                            checked.kind,
                            &opts,
                            &|_| Ok(()),
                            cancel,
                        )
                        .await
                        .map_err(RestoreError::Load)?;
                        Ok(Staged::InPlace)
                    }
                }
            }
            Database::Sqlite(_) => Ok(Staged::Sqlite(checked)),
        }
    }

    async fn staged_counts(&self, staged: &Staged) -> std::result::Result<Counts, RestoreError> {
        match (staged, &self.database) {
            (Staged::Postgres(staged), _) => {
                staged.table_counts().await.map_err(RestoreError::Counting)
            }
            (Staged::InPlace, Database::Postgres(target)) => {
                let server = pg_restore::Server::connect(target)
                    .await
                    .map_err(RestoreError::Counting)?;
                server
                    .table_counts(server.live_database())
                    .await
                    .map_err(RestoreError::Counting)
            }
            (Staged::Sqlite(checked), _) => match &checked.prepared {
                Some(prepared) => sqlite_counts(prepared.path.clone()).await,
                None => Err(RestoreError::NotPrepared),
            },
            (Staged::InPlace, Database::Sqlite(_)) => Err(RestoreError::NotPrepared),
        }
    }

    async fn abandon(&self, staged: Staged) -> String {
        match staged {
            Staged::Postgres(staged) => staged.abandon().await,
            Staged::InPlace => "RESTORE_PG_STRATEGY=inplace loaded the dump into the live database itself, so the live database was ALREADY REPLACED and holds these counts".into(),
            Staged::Sqlite(checked) => {
                drop(checked);
                "the prepared copy was removed and the live database was not changed".into()
            }
        }
    }

    async fn swap(
        &self,
        staged: Staged,
        stamp: &str,
        journal: &dyn StateStore,
        cancel: &CancellationToken,
    ) -> std::result::Result<Loaded, RestoreError> {
        match (staged, &self.database) {
            (Staged::Postgres(staged), _) => {
                let record_swap = |record: &SwapRecord| state::record_swap(journal, record);
                let report = pg_restore::swap_in(staged, &record_swap, cancel)
                    .await
                    .map_err(RestoreError::Load)?;
                Ok(Loaded {
                    previous: report.previous,
                })
            }
            (Staged::InPlace, _) => Ok(Loaded { previous: None }),
            (Staged::Sqlite(mut checked), Database::Sqlite(target)) => {
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
            (Staged::Sqlite(_), Database::Postgres(_)) => Err(RestoreError::NotPrepared),
        }
    }

    async fn prune(&self, keep_newest: bool) -> Vec<String> {
        match &self.database {
            Database::Postgres(target) if self.strategy == Strategy::Staging => {
                let keep = if keep_newest {
                    self.keep_previous.max(1)
                } else {
                    self.keep_previous
                };
                pg_restore::prune_previous_of(target, keep).await
            }
            _ => Vec::new(),
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

/// Counts the rows of a SQLite file off the async threads.
async fn sqlite_counts(path: PathBuf) -> std::result::Result<Counts, RestoreError> {
    tokio::task::spawn_blocking(move || crate::manifest::sqlite_table_counts(&path))
        .await?
        .map_err(|e| RestoreError::Counting(Error::Other(e.to_string())))
}

/// An in-place load empties the live database before it loads, so a load
/// that was interrupted leaves it empty or partial, whatever the database
/// itself looks like now ("in place" would be a lie).
fn inplace_truth(interrupted: &InProgress, found: Recovered) -> Recovered {
    let inplace = interrupted.strategy.as_deref() == Some("inplace");
    let loading = interrupted.phase == Phase::Loading;
    let comparing = interrupted.phase == Phase::Comparing;
    if !inplace || !(loading || comparing) || found.finished() {
        return found;
    }
    let way_back = match &interrupted.safety_backup {
        Some(path) => format!("restore the safety backup {path}, or drop the file again"),
        None => "drop the file again (no safety backup was taken)".to_string(),
    };
    if comparing {
        return Recovered::Unknown(format!(
            "RESTORE_PG_STRATEGY=inplace: the load into the live database had finished, but backupd stopped before its row counts were compared with the manifest, so the live database holds the loaded dump unchecked; {way_back}"
        ));
    }
    Recovered::NotRestored(format!(
        "RESTORE_PG_STRATEGY=inplace: the load was interrupted after the live database may have been emptied, so it may be empty or hold part of the dump; {way_back}"
    ))
}
