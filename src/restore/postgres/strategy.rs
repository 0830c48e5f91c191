//! The two ways a dump reaches the live database. **Staging** (the
//! default) loads into a new `<db>_restore_<stamp>` and swaps it in by two
//! renames in one transaction only when the load succeeded, keeping the old
//! one as `<db>_pre_restore_<stamp>`; a failed or cancelled load drops the
//! staging database and says what is true of the live one, looked up then.
//! **Inplace** drops (or, without `CREATEDB`, empties) the live database and
//! loads into it: a failed load leaves it empty, the safety backup is the
//! way back.

use std::fmt;
use std::str::FromStr;

use tokio_util::sync::CancellationToken;

use super::catalog::{Server, SwapRecord, run_sql, swap_record};
use super::error::{failed, with_note};
use super::load::{check_loadable, load, psql_knows_restrict};
use super::naming::{check_stamp, previous_name, staging_name};
use crate::db::PgTarget;
use crate::error::{Error, Result};
use crate::restore::input::Input;
use crate::restore::kind::{FileKind, Payload};

/// How the dump reaches the live database (`RESTORE_PG_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Load into a new database, then swap it in by renaming.
    #[default]
    Staging,
    /// Drop (or empty) the live database, then load into it.
    Inplace,
}

/// A `RESTORE_PG_STRATEGY` that is neither `staging` nor `inplace`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown PostgreSQL restore strategy '{0}': use 'staging' (load into a new database, then swap it in; the default) or 'inplace' (drop, create, load: a failed load leaves an empty or partial database)"
)]
pub struct UnknownStrategy(String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    /// `staging` or `inplace` (case-insensitive); empty means the default.
    fn from_str(s: &str) -> std::result::Result<Self, UnknownStrategy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "staging" => Ok(Strategy::Staging),
            "inplace" => Ok(Strategy::Inplace),
            _ => Err(UnknownStrategy(s.trim().to_string())),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Staging => "staging",
            Strategy::Inplace => "inplace",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub strategy: Strategy,
    /// How many `<db>_pre_restore_*` databases to keep (`RESTORE_KEEP_PREVIOUS`).
    pub keep_previous: usize,
    /// `YYYYMMDDTHHMMSS.ffffffZ` of this run
    /// ([`STAMP_FORMAT`](super::STAMP_FORMAT)), used in the database names.
    pub stamp: String,
}

impl Options {
    /// The defaults: staging, one previous database kept.
    pub fn new(stamp: impl Into<String>) -> Self {
        Options {
            strategy: Strategy::Staging,
            keep_previous: 1,
            stamp: stamp.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The live database that now holds the dump's contents.
    pub database: String,
    /// The replaced database, kept under this name.
    pub previous: Option<String>,
    /// Older previous databases dropped by `keep_previous`.
    pub dropped: Vec<String>,
    /// Bytes of the dump fed to psql/pg_restore (decompressed, after the
    /// blanking of `SET transaction_timeout` and of the file's own
    /// `\restrict` lines; backupd's own `\restrict` line not counted).
    pub bytes_loaded: u64,
}

/// Restores `file` (plain SQL or custom format, optionally gzipped; never
/// encrypted here) into the live database of `target`.
pub async fn restore(
    target: &PgTarget,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    cancel: &CancellationToken,
) -> Result<Report> {
    restore_recorded(target, file, kind, opts, &|_| Ok(()), cancel).await
}

/// [`restore`], calling `before_swap` with what recovery needs just before
/// the staging swap (the restore service writes it into its state file).
/// When that record cannot be made, the swap is not made either.
pub async fn restore_recorded(
    target: &PgTarget,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    before_swap: &(dyn Fn(&SwapRecord) -> Result<()> + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Report> {
    match opts.strategy {
        Strategy::Staging => {
            let staged = stage(target, file, kind, opts, cancel).await?;
            let mut report = swap_in(staged, before_swap, cancel).await?;
            let server = Server::connect(target).await?;
            report.dropped = prune_previous(&server, opts.keep_previous).await;
            if let Some(previous) = &report.previous
                && report.dropped.contains(previous)
            {
                report.previous = None;
            }
            Ok(report)
        }
        Strategy::Inplace => {
            prepare(target, file, kind, opts, cancel).await?;
            let server = Server::connect(target).await?;
            inplace(&server, file, kind, cancel).await
        }
    }
}

/// The checks every load makes before it touches the server.
async fn prepare(
    target: &PgTarget,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    cancel: &CancellationToken,
) -> Result<()> {
    check_loadable(target, file, kind)?;
    check_stamp(&opts.stamp)?;
    if kind.payload == Payload::PlainSql {
        psql_knows_restrict().await.map_err(|f| failed(target, f))?;
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

/// A dump loaded into `<db>_restore_<stamp>` beside the live database,
/// which nothing has touched yet: the app may keep running while it loads.
/// [`swap_in`] puts it in place; [`Staged::abandon`] drops it.
#[derive(Debug)]
pub struct Staged {
    server: Server,
    staging: String,
    previous: String,
    /// There was a live database to set aside.
    live_exists: bool,
    /// The live database's oid before the load, so what is said of it
    /// later is looked up then.
    live_oid: Option<u32>,
    bytes: u64,
}

impl Staged {
    /// The staging database's name.
    pub fn database(&self) -> &str {
        &self.staging
    }

    /// The row count of every table of the staging database.
    pub async fn table_counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.server.table_counts(&self.staging).await
    }

    /// Drops the staging database; returns what is true of the live one
    /// now (looked up), and whether the drop failed.
    pub async fn abandon(self) -> String {
        let note = self.server.discard(&self.staging).await;
        let live = self.server.live_note(self.live_oid).await;
        match note {
            Some(note) => format!("{live}; {note}"),
            None => format!(
                "the staging database \"{}\" was dropped and {live}",
                self.staging
            ),
        }
    }
}

/// Creates `<db>_restore_<stamp>` and loads the dump into it. The live
/// database is not touched; a failed or cancelled load drops the staging
/// database and says what is true of the live one.
pub async fn stage(
    target: &PgTarget,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    cancel: &CancellationToken,
) -> Result<Staged> {
    prepare(target, file, kind, opts, cancel).await?;
    let server = Server::connect(target).await?;
    let db = server.db.clone();
    let db = db.as_str();
    let staging = staging_name(db, &opts.stamp);
    let previous = previous_name(db, &opts.stamp);
    if !server.can_create() {
        return Err(server.no_createdb("nothing was changed"));
    }
    let live = server.info(db).await?;
    if let Some(info) = &live
        && !info.owned
        && !server.superuser
    {
        return Err(server.fail(format!(
            "the role \"{}\" does not own database \"{db}\", so it cannot rename it; RESTORE_PG_STRATEGY=staging needs the owner (or use RESTORE_PG_STRATEGY=inplace)",
            server.user
        )));
    }
    server.drop_leftovers().await;
    let existing = server.databases().await?;
    for name in [&staging, &previous] {
        if existing.contains(name) {
            return Err(server.fail(format!(
                "database \"{name}\" already exists (left by an interrupted restore with the same stamp?); nothing was changed"
            )));
        }
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }

    // Who the live database is, so that what is said about it after a
    // failure is looked up then, not assumed.
    let live_oid = server.oid(db).await?;
    server.create(&staging, live.as_ref()).await?;
    tracing::info!(database = %staging, "created the staging database");
    let bytes = match load(&server.target, &staging, file, kind, cancel).await {
        Ok(bytes) => bytes,
        Err(e) => return Err(server.abandon(&staging, live_oid, e).await),
    };
    if cancel.is_cancelled() {
        return Err(server.abandon(&staging, live_oid, Error::Cancelled).await);
    }
    tracing::info!(database = %staging, bytes, "loaded the staging database");
    Ok(Staged {
        server,
        staging,
        previous,
        live_exists: live.is_some(),
        live_oid,
        bytes,
    })
}

/// Swaps the staged database in: the live one is set aside as
/// `<db>_pre_restore_<stamp>` by two renames in one transaction, after
/// `before_swap` recorded the oids (no record, no swap). Older previous
/// databases are not pruned here ([`prune_previous`], after the safety
/// backup of the one just set aside).
pub async fn swap_in(
    staged: Staged,
    before_swap: &(dyn Fn(&SwapRecord) -> Result<()> + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Report> {
    let Staged {
        server,
        staging,
        previous,
        live_exists,
        live_oid,
        bytes,
    } = staged;
    let server = &server;
    let db = server.db.as_str();
    if cancel.is_cancelled() {
        return Err(server.abandon(&staging, live_oid, Error::Cancelled).await);
    }
    // The dump's own SQL ran as our role (and the app ran on meanwhile):
    // the live database must not have moved away (ALTER DATABASE … RENAME),
    // or the swap would set aside whatever now has its name.
    if server.oid(db).await? != live_oid {
        let e = server.fail("the live database changed while the dump was loading, so the restored database was not swapped in");
        return Err(server.abandon(&staging, live_oid, e).await);
    }
    let record = match swap_record(server, &staging, &previous).await {
        Ok(record) => record,
        Err(e) => {
            let note = server.discard(&staging).await;
            return Err(with_note(e, note));
        }
    };
    // Recovery tells by these oids whether a swap committed: no record, no swap.
    if let Err(e) = before_swap(&record) {
        let e = server.fail(format!(
            "cannot record the swap in the restore state file, so the restored database was not swapped in: {e}"
        ));
        return Err(server.abandon(&staging, live_oid, e).await);
    }
    crate::restore::test_pause("swapping").await;
    if let Err(e) = server.swap(&staging, &previous, live_exists, cancel).await {
        return Err(server.abandon(&staging, live_oid, e).await);
    }
    crate::restore::test_pause("after-swap").await;
    tracing::info!(
        database = db,
        previous = live_exists.then_some(previous.as_str()),
        "the restored database is in place"
    );
    Ok(Report {
        database: db.to_string(),
        previous: live_exists.then_some(previous),
        dropped: Vec::new(),
        bytes_loaded: bytes,
    })
}

/// [`prune_previous`] on the server of `target`.
pub async fn prune_previous_of(target: &PgTarget, keep: usize) -> Vec<String> {
    match Server::connect(target).await {
        Ok(server) => prune_previous(&server, keep).await,
        Err(e) => {
            tracing::warn!("cannot clean up older previous databases: {e}");
            Vec::new()
        }
    }
}

/// Drops all but the newest `keep` `<db>_pre_restore_<stamp>` databases;
/// a failure is logged (the next restore tries again). Returns the names
/// dropped.
pub async fn prune_previous(server: &Server, keep: usize) -> Vec<String> {
    match server.prune(keep).await {
        Ok(dropped) => dropped,
        Err(e) => {
            tracing::warn!("cannot clean up older previous databases: {e}");
            Vec::new()
        }
    }
}

async fn inplace(
    server: &Server,
    file: &Input,
    kind: FileKind,
    cancel: &CancellationToken,
) -> Result<Report> {
    let db = server.db.as_str();
    tracing::warn!(
        database = db,
        "RESTORE_PG_STRATEGY=inplace: the live database is emptied before loading; a failed load leaves it empty or partial (the safety backup is the way back)"
    );
    server.drop_leftovers().await;
    let live = server.info(db).await?;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if server.can_create() {
        server
            .drop_if_exists(db, true)
            .await
            .map_err(|f| server.fail(format!("cannot drop database \"{db}\": {}", f.summary())))?;
        server.create(db, live.as_ref()).await?;
    } else {
        // Without CREATEDB the database stays; everything this role owns in
        // it goes (the schema public of PostgreSQL 15+ belongs to
        // pg_database_owner and stays).
        if live.is_none() {
            return Err(server.fail(format!(
                "database \"{db}\" does not exist and the role \"{}\" may not create it (no CREATEDB)",
                server.user
            )));
        }
        let _ = server.sql(&server.terminate_sql(db)).await;
        run_sql(
            &server.target,
            db,
            "DROP OWNED BY CURRENT_USER;\nCREATE SCHEMA IF NOT EXISTS public;\n",
        )
        .await
        .map_err(|f| {
            server.fail(format!(
                "cannot empty database \"{db}\" (DROP OWNED BY CURRENT_USER): {}",
                f.summary()
            ))
        })?;
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let bytes = load(&server.target, db, file, kind, cancel).await?;
    Ok(Report {
        database: db.to_string(),
        previous: None,
        dropped: Vec::new(),
        bytes_loaded: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_with_a_clear_error() {
        assert_eq!("staging".parse::<Strategy>(), Ok(Strategy::Staging));
        assert_eq!(" InPlace ".parse::<Strategy>(), Ok(Strategy::Inplace));
        assert_eq!("".parse::<Strategy>(), Ok(Strategy::Staging));
        let err = "swap".parse::<Strategy>().unwrap_err().to_string();
        assert!(
            err.contains("'swap'") && err.contains("staging") && err.contains("inplace"),
            "{err}"
        );
        assert_eq!(Strategy::Inplace.to_string(), "inplace");
    }
}
