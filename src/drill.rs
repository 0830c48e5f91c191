//! Restore drills (issue 13): prove that a backup loads and holds the rows
//! its manifest records, by loading it somewhere harmless and counting.
//!
//! `backupd drill [FILE|latest]` and the daemon's `BACKUP_DRILL_SCHEDULE`
//! both call [`run`]. Under the `BACKUP_DIR` lock (so never beside a backup,
//! and one drill at a time per folder) the file goes through the restore's
//! own check ([`check::check`]: opened once, kind match, `.enc` decrypted
//! into a private folder, the whole content inspected), then:
//! - **PostgreSQL**: on the drill server (`DRILL_DATABASE_URL`, else the
//!   database's own server) the scratch databases of killed drills are
//!   dropped, the dump is loaded into a new `<db>_drill_<stamp>` by the
//!   restore's loader ([`Server::load_into_new_database`]: restricted psql,
//!   the same rules for untrusted input), every table is counted, and the
//!   scratch database is dropped again whatever happened (a kill -9 leaves
//!   it for the next drill).
//! - **SQLite**: the check decompresses into a random 0600 file in the
//!   private folder and runs `integrity_check` on it; its tables are
//!   counted, and the file and the folder are removed.
//!
//! The counts are compared with the manifest found for the file
//! ([`manifest::lookup::find`], believed only for the file's SHA-256).
//! Without a manifest (a file from elsewhere, a backup older than
//! manifests) the drill passes on a sound load and says loudly that no row
//! counts were compared (`last_drill_manifest`, a warning in the log). The
//! result goes into the status file (`last_drill*`).
//!
//! The scratch database is `<db>_drill_<stamp>` (stamp
//! `YYYYMMDDTHHMMSS.ffffffZ`, [`STAMP_FORMAT`]); a drill drops exactly the
//! names of this form for the configured database, never
//! `<db>_restore_<stamp>` or `<db>_pre_restore_<stamp>` (the restore's) nor
//! any other database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::Clock;
use crate::crypto::keys::Keys;
use crate::db::{Database, PgTarget};
use crate::error::Error;
use crate::events::{DrillFailed, DrillFinished, Event, Failure, FailureKind, Observer};
use crate::inspect::kind::by_extension;
use crate::manifest::{self, CountMismatch, Lookup};
use crate::restore::check::{self, CheckError, Checked};
use crate::restore::input::{InputError, PrivateDir};
use crate::restore::postgres::{STAMP_FORMAT, Server, is_stamp};
use crate::state;
use crate::store::Kind;
use crate::store::local::{self, DirLock};

/// What a drill needs: the configured database, where to drill a
/// PostgreSQL backup, the backups and the status file, and the keys.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// The app's database (`DATABASE_URL`): its kind decides which backups
    /// are drilled, its name the scratch database's.
    pub database: Database,
    /// `DRILL_DATABASE_URL`: another PostgreSQL server to load into; `None`
    /// drills on the database's own server.
    pub drill_server: Option<PgTarget>,
    pub backup_dir: PathBuf,
    pub status_file: PathBuf,
    /// Decrypt `.enc` backups.
    pub keys: Keys,
}

/// Which backup to drill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// The newest backup backupd wrote in `BACKUP_DIR` for the configured
    /// database's kind.
    Latest,
    File(PathBuf),
}

impl Which {
    /// `latest` or a path (`./latest` for a file of that name).
    pub fn parse(arg: &str) -> Which {
        if arg == "latest" {
            Which::Latest
        } else {
            Which::File(PathBuf::from(arg))
        }
    }
}

/// Why a drill did not pass. The text is the one-line reason the status
/// file (`last_drill_error`) and `backupd drill` show.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("no backup written by backupd for this {kind} database in {}", .dir.display())]
    NoBackup { kind: &'static str, dir: PathBuf },
    #[error("cannot list the backups: {0}")]
    List(#[source] Error),
    #[error(
        "{} is not a backup file name (.sql, .sql.gz, .dump, .dump.gz, .db or .db.gz, optionally with .enc)",
        .0.display()
    )]
    NotABackupName(PathBuf),
    /// The `BACKUP_DIR` lock or the folder itself.
    #[error("{0}")]
    Lock(#[source] Error),
    #[error("cannot prepare the drill's private folder: {0}")]
    Private(#[source] InputError),
    /// The file did not pass the restore's check (nothing was loaded).
    #[error("the backup does not pass the restore check: {0}")]
    Check(#[source] CheckError),
    #[error("cannot reach the drill server: {0}")]
    Connect(#[source] Error),
    #[error(
        "the role \"{user}\" may not create databases on {server} (no CREATEDB), and a drill loads into a new scratch database there (\"{scratch}\"); grant it (ALTER ROLE {role} CREATEDB), or set DRILL_DATABASE_URL to a server where it may; nothing was loaded"
    )]
    NoCreatedb {
        user: String,
        /// The ALTER ROLE form of `user` (quoted when needed).
        role: String,
        /// The drill server's masked URL.
        server: String,
        scratch: String,
    },
    /// Loading into the scratch database failed (it was dropped again).
    #[error("{0}")]
    Load(#[source] Error),
    #[error("cannot count the rows of the drilled copy: {0}")]
    Counting(String),
    /// The loaded copy holds other row counts than the manifest records.
    #[error("{mismatch} ({manifest})")]
    RowCounts {
        mismatch: CountMismatch,
        /// The manifest's path.
        manifest: String,
    },
    #[error("cancelled by shutdown")]
    Cancelled,
}

impl DrillError {
    /// What kind of thing failed, for notification rules and metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            DrillError::Cancelled => FailureKind::Cancelled,
            DrillError::Check(_) | DrillError::NotABackupName(_) | DrillError::RowCounts { .. } => {
                FailureKind::Verify
            }
            DrillError::Connect(_)
            | DrillError::NoCreatedb { .. }
            | DrillError::Load(_)
            | DrillError::Counting(_) => FailureKind::Database,
            DrillError::Lock(_) | DrillError::Private(_) | DrillError::List(_) => FailureKind::Io,
            DrillError::NoBackup { .. } => FailureKind::Other,
        }
    }
}

/// What one drill did.
#[derive(Debug)]
pub struct DrillReport {
    /// The backup drilled (`None` when there was none to drill).
    pub file: Option<PathBuf>,
    /// Its size on disk.
    pub bytes: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// What the row counts were compared with: `checked N tables against
    /// PATH`, or why they were not (`row counts not compared: no manifest
    /// (looked for …)`).
    pub manifest: Option<String>,
    /// Where it was loaded: the scratch database, or "a private copy" for SQLite.
    pub loaded_into: Option<String>,
    pub result: Result<(), DrillError>,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// `passed` or `failed`, as the status file says it.
    pub fn result_word(&self) -> &'static str {
        if self.passed() { "passed" } else { "failed" }
    }

    /// The event of this drill.
    pub fn event(&self) -> Event {
        match &self.result {
            Ok(()) => DrillFinished {
                file: self.file.clone().unwrap_or_default(),
                size: self.bytes,
                started_at: self.started_at,
                finished_at: self.finished_at,
                duration: self.duration,
                manifest: self.manifest.clone().unwrap_or_default(),
            }
            .into(),
            Err(e) => DrillFailed {
                file: self.file.clone(),
                started_at: self.started_at,
                finished_at: self.finished_at,
                duration: self.duration,
                error: Failure::new(e.kind(), e.to_string()),
            }
            .into(),
        }
    }

    /// The one-line reason of a failure, naming the file.
    pub fn failure(&self) -> Option<String> {
        let err = self.result.as_ref().err()?;
        Some(match &self.file {
            Some(file) => format!("drill of {} failed: {err}", file.display()),
            None => format!("drill failed: {err}"),
        })
    }
}

/// Drills `which`, records the result in the status file, tells `observer`
/// (`DrillFinished` or `DrillFailed`) and returns it. `cancel` stops it
/// (the scratch database is still dropped).
pub async fn run(
    settings: &DrillSettings,
    which: &Which,
    clock: &dyn Clock,
    cancel: &CancellationToken,
    observer: &dyn Observer,
) -> DrillReport {
    let span = tracing::info_span!(
        "drill",
        file = tracing::field::Empty,
        bytes = tracing::field::Empty,
        duration_seconds = tracing::field::Empty
    );
    async {
        let started_at = clock.now();
        let started = Instant::now();
        let mut report = DrillReport {
            file: None,
            bytes: 0,
            started_at,
            finished_at: started_at,
            duration: Duration::ZERO,
            manifest: None,
            loaded_into: None,
            result: Ok(()),
        };
        report.result = drill(settings, which, clock, cancel, &mut report).await;
        report.finished_at = clock.now();
        report.duration = started.elapsed();
        let span = tracing::Span::current();
        span.record(
            "duration_seconds",
            format!("{:.2}", report.duration.as_secs_f64()).as_str(),
        );
        // The status file first: by the time anyone hears of the drill, it
        // says so too.
        record(&settings.status_file, &report);
        log(&report);
        observer.observe(&report.event());
        report
    }
    .instrument(span)
    .await
}

/// The drill itself; `report` collects what is known as it goes.
async fn drill(
    settings: &DrillSettings,
    which: &Which,
    clock: &dyn Clock,
    cancel: &CancellationToken,
    report: &mut DrillReport,
) -> Result<(), DrillError> {
    let dir = &settings.backup_dir;
    local::ensure_dir(dir).map_err(DrillError::Lock)?;
    let _lock = lock(dir, cancel).await?;
    let path = match which {
        Which::File(path) => path.clone(),
        Which::Latest => latest(settings, clock)?,
    };
    tracing::Span::current().record("file", path.display().to_string());
    report.file = Some(path.clone());
    let kind = path
        .file_name()
        .and_then(|name| by_extension(&name.to_string_lossy()))
        .ok_or_else(|| DrillError::NotABackupName(path.clone()))?;
    let stamp = drill_stamp_at(clock.now());
    // The server first: a role that may not create the scratch database is
    // told so before a long check of the file.
    let scratch = match &settings.database {
        Database::Postgres(live) => {
            let on = settings.drill_server.as_ref().unwrap_or(live);
            Some(Scratch::prepare(live, on, &stamp).await?)
        }
        Database::Sqlite(_) => None,
    };
    let private = DrillFolder::new(dir)?;
    tracing::info!("drilling the backup: checking it first");
    let checked = tokio::select! {
        checked = check::check(&path, kind, &settings.database, &settings.keys, &stamp, &private.dir) => {
            checked.map_err(DrillError::Check)?
        }
        _ = cancel.cancelled() => return Err(DrillError::Cancelled),
    };
    report.bytes = checked.size;
    tracing::Span::current().record("bytes", checked.size);
    let found = manifest::lookup::find(&path, &checked.sha256, Some(dir));
    let counts = match scratch {
        Some(scratch) => {
            report.loaded_into = Some(format!("scratch database \"{}\"", scratch.name));
            scratch.load_and_drop(&checked, cancel).await?
        }
        None => {
            report.loaded_into = Some("a private copy".into());
            sqlite_counts(checked).await?
        }
    };
    drop(private);
    compare(&found, &counts, report)
}

/// Compares `counts` with the manifest, when there is one; the report's
/// `manifest` says what was compared.
fn compare(found: &Lookup, counts: &Counts, report: &mut DrillReport) -> Result<(), DrillError> {
    match found {
        Lookup::Found { manifest, path } => {
            match manifest::compare_counts(&manifest.tables, counts) {
                Ok(tables) => {
                    report.manifest = Some(format!(
                        "checked {tables} table{} against {}",
                        if tables == 1 { "" } else { "s" },
                        path.display()
                    ));
                    Ok(())
                }
                Err(mismatch) => {
                    report.manifest =
                        Some(format!("the row counts differ from {}", path.display()));
                    Err(DrillError::RowCounts {
                        mismatch,
                        manifest: path.display().to_string(),
                    })
                }
            }
        }
        Lookup::NotFound { note } => {
            report.manifest = Some(format!("{NOT_COMPARED}: {note}"));
            Ok(())
        }
    }
}

/// Row counts by table name.
type Counts = BTreeMap<String, u64>;

/// How often a drill waiting for a running backup tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// Takes the `BACKUP_DIR` lock, waiting (cancellably) while a backup holds it.
async fn lock(dir: &Path, cancel: &CancellationToken) -> Result<DirLock, DrillError> {
    let mut told = false;
    loop {
        match DirLock::try_acquire(dir) {
            Ok(Some(lock)) => return Ok(lock),
            Ok(None) if !told => {
                tracing::info!("a backup is running in this directory; the drill waits for it");
                told = true;
            }
            Ok(None) => {}
            Err(e) => return Err(DrillError::Lock(e)),
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_RETRY) => {}
            _ = cancel.cancelled() => return Err(DrillError::Cancelled),
        }
    }
}

/// The newest backup backupd wrote in `BACKUP_DIR` for the configured
/// database's kind.
fn latest(settings: &DrillSettings, clock: &dyn Clock) -> Result<PathBuf, DrillError> {
    let kind = match settings.database {
        Database::Postgres(_) => Kind::PgDump,
        Database::Sqlite(_) => Kind::Sqlite,
    };
    local::list_at(&settings.backup_dir, clock.now())
        .map_err(DrillError::List)?
        .into_iter()
        .find(|backup| backup.name.kind == kind)
        .map(|backup| backup.path)
        .ok_or_else(|| DrillError::NoBackup {
            kind: settings.database.kind(),
            dir: settings.backup_dir.clone(),
        })
}

/// The drill's private folder: `$TMPDIR/.backupd-drill-<16 hex digits of
/// BACKUP_DIR's path>`, 0700 and ours ([`PrivateDir::at`] refuses a link or
/// someone else's folder, and empties what a killed drill left). One name
/// per `BACKUP_DIR`, whose lock the drill holds, so no other drill uses it.
/// Not in `BACKUP_DIR`: the app may write there, and a decrypted dump or a
/// decompressed SQLite database must not be where it can reach. Removed
/// with everything in it when dropped.
struct DrillFolder {
    dir: PrivateDir,
}

impl DrillFolder {
    fn new(backup_dir: &Path) -> Result<DrillFolder, DrillError> {
        let dir = PrivateDir::at(drill_folder_path(backup_dir)).map_err(DrillError::Private)?;
        Ok(DrillFolder { dir })
    }
}

fn drill_folder_path(backup_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(backup_dir).unwrap_or_else(|_| backup_dir.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!(".backupd-drill-{}", hex::encode(&digest[..8])))
}

impl Drop for DrillFolder {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.dir.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                folder = %self.dir.path.display(),
                error = %e,
                "cannot remove the drill's private folder; the next drill empties it"
            ),
        }
    }
}

/// The name a PostgreSQL URL's database goes by (the user's name when the
/// URL names none, as libpq has it).
fn database_name(target: &PgTarget) -> Option<String> {
    target.dbname.clone().or_else(|| target.user.clone())
}

/// The scratch database `<db>_drill_<stamp>` on the drill server, not yet
/// created.
struct Scratch {
    server: Server,
    name: String,
}

impl Scratch {
    /// Connects to the drill server `on`, drops what killed drills left
    /// there, and makes sure this role may create the scratch database.
    async fn prepare(live: &PgTarget, on: &PgTarget, stamp: &str) -> Result<Scratch, DrillError> {
        let db = database_name(live).ok_or_else(|| {
            DrillError::Connect(Error::Config(
                "the database URL names no database (and no user)".into(),
            ))
        })?;
        let server = Server::connect(on).await.map_err(DrillError::Connect)?;
        drop_leftovers(&server, &db).await;
        let name = drill_database_name(&db, stamp);
        if !server.can_create() {
            return Err(DrillError::NoCreatedb {
                user: server.user().to_string(),
                role: format!("\"{}\"", server.user().replace('"', "\"\"")),
                server: on.to_string(),
                scratch: name,
            });
        }
        Ok(Scratch { server, name })
    }

    /// Loads the checked dump into the scratch database and counts its
    /// tables; the scratch database is dropped again in every case.
    async fn load_and_drop(
        self,
        checked: &Checked,
        cancel: &CancellationToken,
    ) -> Result<Counts, DrillError> {
        let counted = self.load_and_count(checked, cancel).await;
        // Always, whatever the load and the count did (the loader drops what
        // it created when it fails itself; this covers the rest).
        match self.server.drop_database(&self.name).await {
            Ok(()) => tracing::info!(database = %self.name, "dropped the scratch database"),
            Err(e) => tracing::warn!(
                database = %self.name,
                error = %e,
                "cannot drop the scratch database; the next drill drops it"
            ),
        }
        counted
    }

    async fn load_and_count(
        &self,
        checked: &Checked,
        cancel: &CancellationToken,
    ) -> Result<Counts, DrillError> {
        let (server, scratch) = (&self.server, self.name.as_str());
        tracing::info!(database = %scratch, "loading the backup into the scratch database");
        server
            .load_into_new_database(scratch, &checked.input, checked.kind, cancel)
            .await
            .map_err(|e| match e {
                Error::Cancelled => DrillError::Cancelled,
                e => DrillError::Load(e),
            })?;
        tokio::select! {
            counts = server.table_counts(scratch) => {
                counts.map_err(|e| DrillError::Counting(e.to_string()))
            }
            _ = cancel.cancelled() => Err(DrillError::Cancelled),
        }
    }
}

/// Drops the `<db>_drill_<stamp>` databases on `server` that killed drills
/// left; what cannot be dropped is logged and left for the next time.
/// Returns the names dropped.
async fn drop_leftovers(server: &Server, db: &str) -> Vec<String> {
    let names = match server.databases().await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for scratch databases of interrupted drills");
            return Vec::new();
        }
    };
    let mut dropped = Vec::new();
    for name in leftover_drill_databases(db, &names) {
        match server.drop_database(name).await {
            Ok(()) => {
                tracing::warn!(database = %name, "dropped a scratch database left by an interrupted drill");
                dropped.push(name.to_string());
            }
            Err(e) => tracing::warn!(
                database = %name,
                error = %e,
                "cannot drop a scratch database left by an interrupted drill"
            ),
        }
    }
    dropped
}

/// Drops the scratch databases killed drills left on the drill server of
/// `settings` (the daemon calls it at start-up), under the `BACKUP_DIR`
/// lock; while the lock is held (a drill or a backup runs) they are left
/// to the next drill. Nothing for SQLite.
pub async fn drop_leftover_drills(settings: &DrillSettings) -> Result<Vec<String>, Error> {
    let Database::Postgres(live) = &settings.database else {
        return Ok(Vec::new());
    };
    let Some(db) = database_name(live) else {
        return Ok(Vec::new());
    };
    local::ensure_dir(&settings.backup_dir)?;
    let Some(_lock) = DirLock::try_acquire(&settings.backup_dir)? else {
        tracing::debug!("BACKUP_DIR is locked; the next drill drops what killed drills left");
        return Ok(Vec::new());
    };
    let server = Server::connect(settings.drill_server.as_ref().unwrap_or(live)).await?;
    Ok(drop_leftovers(&server, &db).await)
}

/// Counts the tables of the checked (integrity-checked) private copy of a
/// SQLite backup; the copy is removed afterwards.
async fn sqlite_counts(checked: Checked) -> Result<Counts, DrillError> {
    let Some(prepared) = checked.prepared else {
        return Err(DrillError::Counting(
            "the check made no private copy of the SQLite database".into(),
        ));
    };
    tokio::task::spawn_blocking(move || {
        let counts = manifest::sqlite_table_counts(&prepared.path);
        drop(prepared);
        counts
    })
    .await
    .map_err(|e| DrillError::Counting(format!("the counting task failed: {e}")))?
    .map_err(|e| DrillError::Counting(e.to_string()))
}

/// Writes the `last_drill*` keys; a status file that cannot be written is
/// logged (the drill's result stands).
fn record(status_file: &Path, report: &DrillReport) {
    if let Some(parent) = status_file.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(e) = crate::files::create_dir_all(parent)
    {
        tracing::warn!(error = %e, folder = %parent.display(), "cannot create the status file's folder");
    }
    let recorded = state::update(status_file, |status| {
        status.last_drill = Some(state::timestamp(report.finished_at));
        status.last_drill_file = report.file.as_ref().map(|f| f.display().to_string());
        status.last_drill_result = Some(report.result_word().to_string());
        status.last_drill_error = report.result.as_ref().err().map(ToString::to_string);
        status.last_drill_duration_seconds =
            Some((report.duration.as_secs_f64() * 1000.0).round() / 1000.0);
        status.last_drill_manifest = report.manifest.clone();
        if report.passed() {
            status.last_drill_success = status.last_drill.clone();
        }
    });
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record the drill in the status file");
    }
}

/// The drill's one log line (inside its span: file, bytes, duration).
fn log(report: &DrillReport) {
    let manifest = report.manifest.as_deref().unwrap_or("");
    match &report.result {
        Ok(()) if manifest.starts_with(NOT_COMPARED) => tracing::warn!(
            result = "passed",
            manifest,
            "drill passed, but ROW COUNTS NOT COMPARED: the backup loads, but without its manifest nothing says it holds every row"
        ),
        Ok(()) => tracing::info!(result = "passed", manifest, "drill passed"),
        Err(DrillError::Cancelled) => {
            tracing::info!(result = "failed", "drill cancelled by shutdown")
        }
        Err(e) => tracing::error!(result = "failed", error = %e, "drill failed"),
    }
}

/// How the report's `manifest` begins when there was none to compare with.
const NOT_COMPARED: &str = "row counts not compared";

// ------------------------------------------------------------ naming

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER: usize = 63;
const DRILL_SUFFIX: &str = "_drill_";
/// The length of a [`STAMP_FORMAT`] stamp. Drills never wrote the older
/// 16-byte form, so only this one is recognised.
const STAMP_LEN: usize = 23;

/// The stamp of a drill started at `at`.
pub fn drill_stamp_at(at: DateTime<Utc>) -> String {
    at.format(STAMP_FORMAT).to_string()
}

/// `<db>_drill_<stamp>`, `db` shortened (at a character boundary) so the
/// whole name fits PostgreSQL's 63 bytes; `db` keeps 33 bytes.
pub fn drill_database_name(db: &str, stamp: &str) -> String {
    let room = MAX_IDENTIFIER.saturating_sub(DRILL_SUFFIX.len() + stamp.len());
    let mut end = db.len().min(room);
    while !db.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{DRILL_SUFFIX}{stamp}", &db[..end])
}

/// The stamp when `name` is exactly a drill database of `db` as
/// [`drill_database_name`] writes it: such a database is a leftover of a
/// drill that did not finish (one drill runs at a time, under the
/// `BACKUP_DIR` lock), so it may be dropped.
pub fn leftover_drill_stamp<'n>(db: &str, name: &'n str) -> Option<&'n str> {
    let prefix = drill_database_name(db, &"0".repeat(STAMP_LEN));
    let prefix = &prefix[..prefix.len() - STAMP_LEN];
    name.strip_prefix(prefix)
        .filter(|s| s.len() == STAMP_LEN && is_stamp(s))
}

/// The databases among `names` that are leftover drills of `db`.
pub fn leftover_drill_databases<'n>(db: &str, names: &'n [String]) -> Vec<&'n str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|name| leftover_drill_stamp(db, name).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::postgres::{previous_name, staging_name};
    use chrono::TimeZone;

    const STAMP: &str = "20261202T040000.123456Z";

    fn report() -> DrillReport {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap();
        DrillReport {
            file: Some(PathBuf::from("/backups/pg_dump-20261202T030000Z.sql.gz")),
            bytes: 10,
            started_at: at,
            finished_at: at + chrono::Duration::seconds(3),
            duration: Duration::from_millis(2_500),
            manifest: None,
            loaded_into: None,
            result: Ok(()),
        }
    }

    fn manifest_of(tables: &[(&str, u64)]) -> Lookup {
        let mut manifest =
            crate::manifest::record::samples::postgres("b.sql.gz", &"a".repeat(64), &[]);
        manifest.tables = tables.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        Lookup::Found {
            manifest: Box::new(manifest),
            path: PathBuf::from("/backups/b.sql.gz.manifest.json"),
        }
    }

    fn counts(tables: &[(&str, u64)]) -> Counts {
        tables.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn latest_is_a_word_and_anything_else_a_file() {
        assert_eq!(Which::parse("latest"), Which::Latest);
        assert_eq!(Which::parse("./latest"), Which::File("./latest".into()));
        assert_eq!(
            Which::parse("/b/x.sql.gz"),
            Which::File("/b/x.sql.gz".into())
        );
    }

    #[test]
    fn equal_counts_pass_and_say_what_was_compared() {
        let mut report = report();
        let found = manifest_of(&[("public.a", 3), ("public.b", 0)]);
        compare(
            &found,
            &counts(&[("public.a", 3), ("public.b", 0)]),
            &mut report,
        )
        .unwrap();
        assert_eq!(
            report.manifest.as_deref(),
            Some("checked 2 tables against /backups/b.sql.gz.manifest.json")
        );
    }

    #[test]
    fn other_counts_fail_naming_the_table_and_both_counts() {
        let mut report = report();
        let found = manifest_of(&[("public.a", 3), ("public.users", 20)]);
        let err = compare(
            &found,
            &counts(&[("public.a", 3), ("public.users", 19)]),
            &mut report,
        )
        .unwrap_err();
        assert!(matches!(err, DrillError::RowCounts { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("public.users: 19 rows, the manifest says 20")
                && text.ends_with("(/backups/b.sql.gz.manifest.json)"),
            "{text}"
        );
        report.result = Err(err);
        assert_eq!(report.result_word(), "failed");
        let reason = report.failure().unwrap();
        assert!(
            reason.starts_with("drill of /backups/pg_dump-20261202T030000Z.sql.gz failed: "),
            "{reason}"
        );
    }

    #[test]
    fn without_a_manifest_a_sound_load_passes_and_says_nothing_was_compared() {
        let mut report = report();
        let found = Lookup::NotFound {
            note: "no manifest (looked for /backups/b.sql.gz.manifest.json)".into(),
        };
        compare(&found, &counts(&[("public.a", 3)]), &mut report).unwrap();
        let note = report.manifest.unwrap();
        assert!(note.starts_with(NOT_COMPARED), "{note}");
        assert!(
            note.contains("looked for /backups/b.sql.gz.manifest.json"),
            "{note}"
        );
    }

    #[test]
    fn the_private_folder_is_hidden_in_the_temporary_folder_one_per_backup_dir() {
        let a = drill_folder_path(Path::new("/backups"));
        assert_eq!(a, drill_folder_path(Path::new("/backups")));
        assert_ne!(a, drill_folder_path(Path::new("/other")));
        assert_eq!(a.parent(), Some(std::env::temp_dir().as_path()));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".backupd-drill-") && name.len() == 31,
            "{name}"
        );
    }

    #[test]
    fn the_folder_is_0700_and_gone_after_the_drill() {
        use std::os::unix::fs::PermissionsExt;
        let backups = tempfile::tempdir().unwrap();
        let folder = DrillFolder::new(backups.path()).unwrap();
        let path = folder.dir.path.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(path.join("copy.tmp"), b"plaintext").unwrap();
        drop(folder);
        assert!(!path.exists());
    }

    #[test]
    fn latest_is_the_newest_backup_of_the_configured_kind() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "sqlite-20261201T030000Z.db.gz",
            "sqlite-20261202T030000Z.db.gz.enc",
            "pg_dump-20261203T030000Z.sql.gz",
            "sqlite-manual-20261204T030000Z.db.gz",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let settings = |url: &str| DrillSettings {
            database: Database::parse(url, "DATABASE_URL").unwrap(),
            drill_server: None,
            backup_dir: dir.path().to_path_buf(),
            status_file: dir.path().join("backup-status.json"),
            keys: Keys::default(),
        };
        let clock = crate::clock::SystemClock;
        let sqlite = latest(&settings("sqlite:///app.db"), &clock).unwrap();
        assert_eq!(sqlite, dir.path().join("sqlite-20261202T030000Z.db.gz.enc"));
        let pg = latest(&settings("postgresql://u@h/appdb"), &clock).unwrap();
        assert_eq!(pg, dir.path().join("pg_dump-20261203T030000Z.sql.gz"));
        std::fs::remove_file(&pg).unwrap();
        let err = latest(&settings("postgresql://u@h/appdb"), &clock).unwrap_err();
        assert!(
            err.to_string().starts_with("no backup written by backupd"),
            "{err}"
        );
    }

    #[test]
    fn the_result_goes_into_the_status_file_keeping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup-status.json");
        std::fs::write(
            &path,
            r#"{"last_backup":"2026-12-02T03:00:00Z","future_key":1}"#,
        )
        .unwrap();
        let mut failed = report();
        failed.result = Err(DrillError::Cancelled);
        record(&path, &failed);
        let status = state::Status::read(&path).unwrap().unwrap();
        assert_eq!(status.last_drill_result.as_deref(), Some("failed"));
        assert_eq!(
            status.last_drill_error.as_deref(),
            Some("cancelled by shutdown")
        );
        assert_eq!(status.last_drill_success, None, "only a pass sets it");
        let mut passed = report();
        passed.manifest = Some("checked 2 tables against /m".into());
        record(&path, &passed);
        let status = state::Status::read(&path).unwrap().unwrap();
        assert_eq!(status.last_drill.as_deref(), Some("2026-12-02T04:00:03Z"));
        assert_eq!(
            status.last_drill_file.as_deref(),
            Some("/backups/pg_dump-20261202T030000Z.sql.gz")
        );
        assert_eq!(status.last_drill_result.as_deref(), Some("passed"));
        assert_eq!(
            status.last_drill_success.as_deref(),
            Some("2026-12-02T04:00:03Z")
        );
        assert_eq!(status.last_drill_error, None);
        assert_eq!(status.last_drill_duration_seconds, Some(2.5));
        assert_eq!(
            status.last_drill_manifest.as_deref(),
            Some("checked 2 tables against /m")
        );
        assert_eq!(status.last_backup.as_deref(), Some("2026-12-02T03:00:00Z"));
        assert!(status.other.contains_key("future_key"));
    }

    #[test]
    fn the_stamp_is_the_restore_stamp_form() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(drill_stamp_at(at), STAMP);
        assert!(is_stamp(&drill_stamp_at(at)));
    }

    #[test]
    fn names_fit_postgres_identifiers() {
        assert_eq!(
            drill_database_name("appdb", STAMP),
            "appdb_drill_20261202T040000.123456Z"
        );
        let long = "d".repeat(80);
        let name = drill_database_name(&long, STAMP);
        assert_eq!(name.len(), 63);
        assert_eq!(leftover_drill_stamp(&long, &name), Some(STAMP));
        // Never cut inside a character.
        let wide = "ä".repeat(40);
        let name = drill_database_name(&wide, STAMP);
        assert!(name.len() <= 63);
        assert_eq!(leftover_drill_stamp(&wide, &name), Some(STAMP));
    }

    #[test]
    fn only_drill_names_of_the_configured_database_are_leftovers() {
        let names: Vec<String> = [
            drill_database_name("appdb", STAMP),
            // The restore's own names: never a drill's to drop.
            staging_name("appdb", STAMP),
            previous_name("appdb", STAMP),
            // Other databases, and near misses.
            "appdb".into(),
            "postgres".into(),
            "appdb_drill_".into(),
            "appdb_drill_latest".into(),
            "appdb_drill_20261202T040000Z".into(),
            format!("appdb_drill_{STAMP}x"),
            format!("other_drill_{STAMP}"),
            format!("appdb2_drill_{STAMP}"),
            format!("xappdb_drill_{STAMP}"),
            drill_database_name("appdb_drill", STAMP),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            leftover_drill_databases("appdb", &names),
            [drill_database_name("appdb", STAMP)]
        );
    }

    #[test]
    fn a_drill_name_is_never_a_restore_name() {
        // The restore drops `<db>_restore_<stamp>` and prunes
        // `<db>_pre_restore_<stamp>`; a drill's name must be neither, for
        // any database name.
        for db in ["appdb", "app_restore", "app_pre", "x", &"d".repeat(80)] {
            let name = drill_database_name(db, STAMP);
            assert_ne!(name, staging_name(db, STAMP));
            assert_ne!(name, previous_name(db, STAMP));
            // What the restore recognises is the suffix after the name.
            assert!(!name.ends_with(&format!("_restore_{STAMP}")), "{name}");
        }
    }
}
