//! Restoring a checked PostgreSQL dump into the live database.
//!
//! **Staging** (the default): the dump is loaded into a new database
//! `<db>_restore_<stamp>`; only when that load succeeded are the live
//! database and the new one swapped by two renames in one transaction, the
//! old one staying as `<db>_pre_restore_<stamp>`. A failed or cancelled load
//! drops the staging database, so the live one is never changed.
//!
//! **Inplace** (for roles without `CREATEDB`, or without room for a second
//! copy): the live database is dropped and created again (or, without
//! `CREATEDB`, emptied with `DROP OWNED BY CURRENT_USER`) and then loaded.
//! A failed load leaves it empty; the safety backup is the way back.
//!
//! Every child gets its connection settings as libpq environment variables
//! (the password never reaches an argv), and everything it prints passes
//! through [`PgTarget::mask`] before it is logged or returned.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::PgTarget;
use crate::db::postgres::PgCommand;
use crate::error::{Error, Result};
use crate::restore::Recovered;
use crate::restore::input::Input;
use crate::restore::kind::{FileKind, Payload};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER: usize = 63;
const STAGING_SUFFIX: &str = "_restore_";
const PREVIOUS_SUFFIX: &str = "_pre_restore_";
/// `YYYYMMDDTHHMMSS.ffffffZ`: microseconds, so two restores within one
/// second get different names.
const STAMP_LEN: usize = 23;
/// `YYYYMMDDTHHMMSSZ`, written before stamps had microseconds; still
/// recognised so such databases are pruned and recovered.
const OLD_STAMP_LEN: usize = 16;
/// The format of [`STAMP_LEN`] stamps, for chrono.
pub const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";
/// How often the swap is tried when sessions reconnect to the live database
/// between their termination and the rename.
const SWAP_ATTEMPTS: u32 = 4;
const CHUNK: usize = 256 * 1024;
/// Separates fields in the maintenance queries' output.
const FIELD_SEP: &str = "\u{1f}";
const STDERR_TAIL: usize = 10;

/// How the dump reaches the live database (`RESTORE_PG_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Load into a new database, then swap it in by renaming.
    #[default]
    Staging,
    /// Drop (or empty) the live database, then load into it.
    Inplace,
}

impl FromStr for Strategy {
    type Err = String;

    /// `staging` or `inplace` (case-insensitive); empty means the default.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "staging" => Ok(Strategy::Staging),
            "inplace" => Ok(Strategy::Inplace),
            _ => Err(format!(
                "unknown PostgreSQL restore strategy '{}': use 'staging' (load into a new database, then swap it in; the default) or 'inplace' (drop, create, load: a failed load leaves an empty or partial database)",
                s.trim()
            )),
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
    /// `YYYYMMDDTHHMMSS.ffffffZ` of this run ([`STAMP_FORMAT`]), used in
    /// the database names.
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
    /// blanking of [`SqlFilter`]; backupd's own `\restrict` line not counted).
    pub bytes_loaded: u64,
}

/// What recovery needs to tell whether a staging swap committed, recorded in
/// the state file just before the swap: the oid is what a database keeps
/// through a rename, so after a crash the live name's oid says which
/// database it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapRecord {
    /// The oid of the live database before the swap (`None`: there was none).
    pub live_oid: Option<u32>,
    /// The loaded staging database and its oid.
    pub staging: String,
    pub staging_oid: u32,
    /// The name the live database moves to.
    pub previous: String,
}

/// `<db>_restore_<stamp>`, the base shortened (at a character boundary) so
/// the whole name fits PostgreSQL's 63 bytes.
pub fn staging_name(db: &str, stamp: &str) -> String {
    suffixed(db, STAGING_SUFFIX, stamp)
}

/// `<db>_pre_restore_<stamp>`, shortened like [`staging_name`].
pub fn previous_name(db: &str, stamp: &str) -> String {
    suffixed(db, PREVIOUS_SUFFIX, stamp)
}

fn suffixed(db: &str, suffix: &str, stamp: &str) -> String {
    let room = MAX_IDENTIFIER.saturating_sub(suffix.len() + stamp.len());
    let mut end = db.len().min(room);
    while !db.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}{stamp}", &db[..end])
}

/// `YYYYMMDDTHHMMSS.ffffffZ` (or the older `YYYYMMDDTHHMMSSZ`), digits
/// where digits belong.
pub fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    let seconds = |b: &[u8]| {
        b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
    };
    match b.len() {
        STAMP_LEN => {
            seconds(b) && b[15] == b'.' && b[16..22].iter().all(u8::is_ascii_digit) && b[22] == b'Z'
        }
        OLD_STAMP_LEN => seconds(b) && b[15] == b'Z',
        _ => false,
    }
}

/// A stamp of either form as a key that sorts in time order.
fn stamp_order(stamp: &str) -> String {
    if stamp.len() == OLD_STAMP_LEN {
        format!("{}.000000Z", &stamp[..15])
    } else {
        stamp.to_string()
    }
}

fn check_stamp(stamp: &str) -> Result<()> {
    if is_stamp(stamp) {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "internal: restore stamp '{stamp}' is not of the form YYYYMMDDTHHMMSS.ffffffZ"
        )))
    }
}

/// The stamp when `name` is exactly `<db><suffix><stamp>` as
/// [`suffixed`] writes it, for a stamp of either length.
fn suffixed_stamp<'n>(db: &str, suffix: &str, name: &'n str) -> Option<&'n str> {
    [STAMP_LEN, OLD_STAMP_LEN].into_iter().find_map(|len| {
        let prefix = suffixed(db, suffix, &"0".repeat(len));
        let prefix = &prefix[..prefix.len() - len];
        name.strip_prefix(prefix)
            .filter(|s| s.len() == len && is_stamp(s))
    })
}

/// The stamp of a previous database of `db`, when `name` is exactly
/// `<db>_pre_restore_<stamp>`.
fn previous_stamp<'n>(db: &str, name: &'n str) -> Option<&'n str> {
    suffixed_stamp(db, PREVIOUS_SUFFIX, name)
}

/// The stamp of a staging database of `db`, when `name` is exactly
/// `<db>_restore_<stamp>`.
fn staging_stamp<'n>(db: &str, name: &'n str) -> Option<&'n str> {
    suffixed_stamp(db, STAGING_SUFFIX, name)
}

/// `"name"` with embedded quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that reads the same whatever standard_conforming_strings is.
fn literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `dbname='…'` for `-d`: a connection string, so a name containing `=` is
/// never read as one, while every other setting still comes from the
/// environment.
fn conninfo(dbname: &str) -> String {
    format!(
        "dbname='{}'",
        dbname.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// A libpq program for database `dbname` of `target`: settings from the
/// environment only, killed when dropped.
fn pg_command(program: &str, target: &PgTarget, dbname: &str) -> PgCommand {
    let mut cmd = crate::db::postgres::command(program, target);
    cmd.env("PGDATABASE", dbname)
        .arg("-d")
        .arg(conninfo(dbname))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn failed(target: &PgTarget, reason: impl fmt::Display) -> Error {
    Error::Other(format!("restore of {target} failed: {reason}"))
}

/// Adds what went wrong while cleaning up to an error.
fn with_note(err: Error, note: Option<String>) -> Error {
    match (err, note) {
        (Error::Other(msg), Some(note)) => Error::Other(format!("{msg}; {note}")),
        (err, Some(note)) => {
            tracing::error!("{note}");
            err
        }
        (err, None) => err,
    }
}

// ------------------------------------------------------------------ stderr

/// What a child printed on stderr, already masked: the first error (with
/// its DETAIL/HINT lines) and the last few lines.
#[derive(Debug, Default)]
struct StderrLog {
    first_error: Option<String>,
    context: Vec<String>,
    after_error: bool,
    tail: VecDeque<String>,
}

impl StderrLog {
    fn push(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let is_context = line.starts_with("DETAIL:") || line.starts_with("HINT:");
        if self.first_error.is_none() {
            if line.contains("ERROR:") || line.contains("FATAL:") || line.contains("error:") {
                self.first_error = Some(line.to_string());
                self.after_error = true;
            }
        } else if self.after_error && is_context && self.context.len() < 2 {
            self.context.push(line.to_string());
        } else if !line.starts_with("LINE ") && !line.ends_with('^') {
            self.after_error = false;
        }
        if self.tail.len() == STDERR_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    fn summary(&self) -> String {
        match &self.first_error {
            Some(first) => {
                let mut parts = vec![first.clone()];
                parts.extend(self.context.iter().cloned());
                parts.join(" ")
            }
            None if self.tail.is_empty() => "no error message".to_string(),
            None => self.tail.iter().cloned().collect::<Vec<_>>().join(" | "),
        }
    }

    fn contains(&self, needle: &str) -> bool {
        self.first_error
            .as_deref()
            .is_some_and(|l| l.contains(needle))
            || self.context.iter().any(|l| l.contains(needle))
            || self.tail.iter().any(|l| l.contains(needle))
    }
}

/// Reads a child's stderr to the end (bytes, so invalid UTF-8 never stops
/// the reading and blocks the child), logging each line masked.
async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    target: PgTarget,
    program: &'static str,
    line_offset: u64,
) -> StderrLog {
    let mut log = StderrLog::default();
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = target.mask(&file_line_numbers(
            String::from_utf8_lossy(&buf).trim_end(),
            line_offset,
        ));
        if line.trim().is_empty() {
            continue;
        }
        if line.contains("NOTICE:") {
            tracing::debug!(target: "backupd::restore", "{program}: {line}");
        } else {
            tracing::warn!(target: "backupd::restore", "{program}: {line}");
        }
        log.push(&line);
    }
    log
}

/// `psql:<stdin>:N:` counted in lines of the file, not of the stream fed
/// (which has `offset` lines of ours before the file's first).
fn file_line_numbers(line: &str, offset: u64) -> std::borrow::Cow<'_, str> {
    const PREFIX: &str = "psql:<stdin>:";
    if offset == 0 {
        return line.into();
    }
    let Some(rest) = line.strip_prefix(PREFIX) else {
        return line.into();
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest[..digits].parse::<u64>() {
        Ok(n) if rest[digits..].starts_with(':') => {
            format!("{PREFIX}{}{}", n.saturating_sub(offset), &rest[digits..]).into()
        }
        _ => line.into(),
    }
}

// ------------------------------------------------------------------ restricted mode

/// The first release of each major version whose psql knows `\restrict`
/// (the fix for CVE-2025-8714); every release from 18 on does.
const RESTRICT_SINCE: &[(u32, u32)] = &[(13, 22), (14, 19), (15, 14), (16, 10), (17, 6)];

/// `Ok` when a psql of `version` (`psql (PostgreSQL) 15.18 (Debian …)`)
/// knows `\restrict`; `Err` says which one is needed.
fn restrict_supported(version: &str) -> std::result::Result<(), String> {
    let number = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("");
    let mut parts = number.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let ok = major >= 18
        || RESTRICT_SINCE
            .iter()
            .any(|&(m, since)| m == major && minor >= since);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the psql in use ({}) is too old to load a plain SQL dump safely: it lacks restricted mode (\\restrict), so the file's psql meta-commands could run programs and read files; install psql 18, 17.6, 16.10, 15.14, 14.19, 13.22 or newer (nothing was changed)",
            version.trim()
        ))
    }
}

/// Runs `psql --version` and fails closed when that psql cannot be put into
/// restricted mode (or cannot be run at all).
pub async fn psql_knows_restrict() -> std::result::Result<(), String> {
    let out = crate::process::command("psql")
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| {
            format!(
                "cannot run psql --version: {e} (is the PostgreSQL client installed and on PATH?)"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "psql --version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    restrict_supported(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or(""),
    )
}

/// A fresh random key for `\restrict` (alphanumeric, as psql wants). It is
/// never logged: a file that knew it could lift restricted mode.
fn restrict_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut key = String::with_capacity(32);
    while key.len() < 32 {
        let mut raw = [0u8; 64];
        getrandom::fill(&mut raw).expect("the operating system's random generator failed");
        // 248 = 4 × 62: no byte value is more likely than another.
        key.extend(
            raw.iter()
                .filter(|&&b| b < 248)
                .map(|&b| char::from(ALPHABET[usize::from(b % 62)]))
                .take(32 - key.len()),
        );
    }
    key
}

// ------------------------------------------------------------------ SQL

/// A maintenance statement that failed; `log` is masked.
#[derive(Debug)]
struct SqlFailure {
    log: StderrLog,
}

impl SqlFailure {
    fn summary(&self) -> String {
        self.log.summary()
    }
}

/// Runs `script` through psql in `dbname`, statement by statement (so
/// CREATE/DROP DATABASE work), stopping at the first error. Returns the
/// rows: unaligned, tuples only, fields separated by [`FIELD_SEP`].
async fn run_sql(
    target: &PgTarget,
    dbname: &str,
    script: &str,
) -> std::result::Result<String, SqlFailure> {
    let mut child = pg_command("psql", target, dbname)
        .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-F"])
        .arg(FIELD_SEP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let mut log = StderrLog::default();
            log.push(&format!(
                "error: cannot run psql: {e} (is the PostgreSQL client installed and on PATH?)"
            ));
            SqlFailure { log }
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // psql that cannot connect exits without reading: its stderr says why.
    let written = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await;
    let mut log = StderrLog::default();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            log.push(&format!("error: waiting for psql: {e}"));
            return Err(SqlFailure { log });
        }
    };
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let line = target.mask(line);
        tracing::debug!(target: "backupd::restore", "psql: {line}");
        log.push(&line);
    }
    if !out.status.success() {
        if log.first_error.is_none() {
            log.push(&format!("error: psql exited with {}", out.status));
        }
        return Err(SqlFailure { log });
    }
    if let Err(e) = written {
        log.push(&format!("error: writing to psql: {e}"));
        return Err(SqlFailure { log });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Encoding and locale of an existing database, copied to the one that
/// replaces it.
#[derive(Debug, Clone)]
struct DbInfo {
    encoding: String,
    collate: String,
    ctype: String,
    /// `c` libc, `i` icu, `b` builtin.
    provider: String,
    locale: String,
    /// The current role may rename and drop it.
    owned: bool,
}

/// The server as seen from a maintenance database.
struct Server<'a> {
    target: &'a PgTarget,
    /// The live database.
    db: String,
    maintenance: &'static str,
    version: u32,
    user: String,
    superuser: bool,
    createdb: bool,
}

impl<'a> Server<'a> {
    /// Connects to `postgres` (or `template1` when that is missing, not
    /// allowed, or the live database itself) and asks who we are.
    async fn connect(target: &'a PgTarget) -> Result<Server<'a>> {
        let db = target
            .dbname
            .clone()
            .or_else(|| target.user.clone())
            .ok_or_else(|| failed(target, "the database URL names no database"))?;
        let candidates: &[&'static str] = if db == "postgres" {
            &["template1"]
        } else {
            &["postgres", "template1"]
        };
        let probe = "SELECT current_setting('server_version_num'), current_user, rolsuper, rolcreatedb \
                     FROM pg_roles WHERE rolname = current_user;\n";
        let mut last = None;
        for &maintenance in candidates {
            match run_sql(target, maintenance, probe).await {
                Ok(out) => {
                    let line = out.lines().next().unwrap_or_default();
                    let fields: Vec<&str> = line.split(FIELD_SEP).collect();
                    let [version, user, superuser, createdb] = fields[..] else {
                        return Err(failed(
                            target,
                            format!("unexpected answer from the server: '{line}'"),
                        ));
                    };
                    let version = version.parse().map_err(|_| {
                        failed(target, format!("unexpected server_version_num '{version}'"))
                    })?;
                    return Ok(Server {
                        target,
                        db,
                        maintenance,
                        version,
                        user: user.to_string(),
                        superuser: superuser == "t",
                        createdb: createdb == "t",
                    });
                }
                Err(f)
                    if f.log.contains("does not exist")
                        || f.log.contains("permission denied for database")
                        || f.log.contains("not allowed") =>
                {
                    tracing::debug!(
                        maintenance,
                        "maintenance database not usable: {}",
                        f.summary()
                    );
                    last = Some((maintenance, f));
                }
                Err(f) => {
                    return Err(failed(
                        target,
                        format!("cannot connect to the server: {}", f.summary()),
                    ));
                }
            }
        }
        let (name, f) = last.expect("at least one maintenance database was tried");
        Err(failed(
            target,
            format!(
                "cannot connect to a maintenance database (tried postgres and template1; {name}: {})",
                f.summary()
            ),
        ))
    }

    async fn sql(&self, script: &str) -> std::result::Result<String, SqlFailure> {
        run_sql(self.target, self.maintenance, script).await
    }

    fn fail(&self, reason: impl fmt::Display) -> Error {
        failed(self.target, reason)
    }

    /// Every database name on the server.
    async fn databases(&self) -> Result<Vec<String>> {
        let out = self
            .sql("SELECT datname FROM pg_database;\n")
            .await
            .map_err(|f| self.fail(format!("cannot list the databases: {}", f.summary())))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// The oid of database `name`, when it exists.
    async fn oid(&self, name: &str) -> Result<Option<u32>> {
        let out = self
            .sql(&format!(
                "SELECT oid FROM pg_database WHERE datname = {};\n",
                literal(name)
            ))
            .await
            .map_err(|f| {
                self.fail(format!(
                    "cannot look up database \"{name}\": {}",
                    f.summary()
                ))
            })?;
        match out.lines().next() {
            None => Ok(None),
            Some(line) => {
                line.trim().parse().map(Some).map_err(|_| {
                    self.fail(format!("unexpected oid of database \"{name}\": '{line}'"))
                })
            }
        }
    }

    async fn info(&self, name: &str) -> Result<Option<DbInfo>> {
        let locale = if self.version >= 170_000 {
            "datlocprovider::text, coalesce(datlocale, '')"
        } else if self.version >= 150_000 {
            "datlocprovider::text, coalesce(daticulocale, '')"
        } else {
            "'c', ''"
        };
        let out = self
            .sql(&format!(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype, {locale}, \
                 pg_has_role(datdba, 'USAGE') FROM pg_database WHERE datname = {};\n",
                literal(name)
            ))
            .await
            .map_err(|f| {
                self.fail(format!(
                    "cannot inspect database \"{name}\": {}",
                    f.summary()
                ))
            })?;
        let Some(line) = out.lines().next() else {
            return Ok(None);
        };
        let fields: Vec<&str> = line.split(FIELD_SEP).collect();
        let [encoding, collate, ctype, provider, locale, owned] = fields[..] else {
            return Err(self.fail(format!(
                "unexpected answer about database \"{name}\": '{line}'"
            )));
        };
        Ok(Some(DbInfo {
            encoding: encoding.into(),
            collate: collate.into(),
            ctype: ctype.into(),
            provider: provider.into(),
            locale: locale.into(),
            owned: owned == "t",
        }))
    }

    /// What is true of the live database now, given its oid before the
    /// restore started: looked up at this moment, never assumed.
    async fn live_note(&self, before: Option<u32>) -> String {
        let db = &self.db;
        match (before, self.oid(db).await) {
            (Some(b), Ok(Some(now))) if b == now => "the live database was not changed".into(),
            (None, Ok(None)) => {
                format!("there was no database \"{db}\" before and there is none now")
            }
            (Some(b), Ok(None)) => format!(
                "the live database \"{db}\" (oid {b}) NO LONGER EXISTS under its name; look for it under another name (SELECT datname FROM pg_database WHERE oid = {b}) or restore the safety backup"
            ),
            (Some(b), Ok(Some(now))) => format!(
                "database \"{db}\" is NOT the live database of before (oid {now}, was {b}); look for oid {b} in pg_database or restore the safety backup"
            ),
            (None, Ok(Some(now))) => format!(
                "a database \"{db}\" (oid {now}) exists now although there was none before the restore"
            ),
            (_, Err(e)) => format!("cannot tell whether the live database was changed: {e}"),
        }
    }

    /// Drops every `<db>_restore_<stamp>` database: only a restore of ours
    /// names a database so, and one restore runs at a time (the restore
    /// lock), so any that exists is left by an interrupted one (a killed
    /// backupd, a server stopped mid-load). Returns the names dropped.
    async fn drop_leftover_staging(&self) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        for name in self.databases().await? {
            if staging_stamp(&self.db, &name).is_none() {
                continue;
            }
            self.drop_database(&name, true).await.map_err(|f| {
                self.fail(format!(
                    "cannot drop the leftover staging database \"{name}\": {}",
                    f.summary()
                ))
            })?;
            tracing::warn!(database = %name, "dropped a staging database left by an interrupted restore");
            dropped.push(name);
        }
        Ok(dropped)
    }

    /// [`Server::drop_leftover_staging`] before a restore: what it cannot
    /// drop is logged and left for the next time.
    async fn drop_leftovers(&self) {
        if let Err(e) = self.drop_leftover_staging().await {
            tracing::warn!(error = %e, "cannot clean up leftover staging databases");
        }
    }

    /// A statement terminating the other sessions on `name` that this role
    /// may terminate (others would make pg_terminate_backend fail).
    fn terminate_sql(&self, name: &str) -> String {
        let allowed = if self.superuser {
            String::new()
        } else {
            " AND (pg_has_role(a.usesysid, 'USAGE') OR (pg_has_role('pg_signal_backend', 'USAGE') \
             AND NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), true)))"
                .to_string()
        };
        format!(
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a \
             WHERE a.datname = {} AND a.pid <> pg_backend_pid(){allowed};\n",
            literal(name)
        )
    }

    fn can_create(&self) -> bool {
        self.superuser || self.createdb
    }

    fn no_createdb(&self, detail: &str) -> Error {
        self.fail(format!(
            "permission denied to create database: the role \"{user}\" lacks CREATEDB, which RESTORE_PG_STRATEGY=staging needs to load into a new database and swap it in. Grant it (ALTER ROLE {role} CREATEDB) or set RESTORE_PG_STRATEGY=inplace (empties the live database before loading: a failed load leaves it empty or partial); {detail}",
            user = self.user,
            role = ident(&self.user),
        ))
    }

    /// `CREATE DATABASE name` owned by this role, from template0 with the
    /// encoding and locale of `like` (the database it replaces).
    async fn create(&self, name: &str, like: Option<&DbInfo>) -> Result<()> {
        let mut sql = format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0",
            ident(name),
            ident(&self.user)
        );
        if let Some(info) = like {
            sql.push_str(&format!(
                " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                literal(&info.encoding),
                literal(&info.collate),
                literal(&info.ctype)
            ));
            if self.version >= 150_000 {
                match info.provider.as_str() {
                    "i" => sql.push_str(&format!(
                        " LOCALE_PROVIDER icu ICU_LOCALE {}",
                        literal(&info.locale)
                    )),
                    "b" => sql.push_str(&format!(
                        " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                        literal(&info.locale)
                    )),
                    _ => sql.push_str(" LOCALE_PROVIDER libc"),
                }
            }
        }
        sql.push_str(";\n");
        self.sql(&sql).await.map_err(|f| {
            if f.log.contains("permission denied to create database") {
                self.no_createdb(&format!("the server said: {}", f.summary()))
            } else {
                self.fail(format!(
                    "cannot create database \"{name}\": {}",
                    f.summary()
                ))
            }
        })?;
        Ok(())
    }

    /// `DROP DATABASE IF EXISTS`, its sessions terminated first (`force`)
    /// or not.
    async fn drop_database(&self, name: &str, force: bool) -> std::result::Result<(), SqlFailure> {
        let sql = if !force {
            format!("DROP DATABASE IF EXISTS {};\n", ident(name))
        } else if self.version >= 130_000 {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE);\n", ident(name))
        } else {
            format!(
                "{}DROP DATABASE IF EXISTS {};\n",
                self.terminate_sql(name),
                ident(name)
            )
        };
        self.sql(&sql).await.map(drop)
    }

    /// Drops the staging database after a failure; `Some(note)` when that
    /// failed too.
    async fn discard(&self, staging: &str) -> Option<String> {
        match self.drop_database(staging, true).await {
            Ok(()) => {
                tracing::info!(database = staging, "dropped the staging database");
                None
            }
            Err(f) => Some(format!(
                "the staging database \"{staging}\" could not be dropped either ({}); drop it by hand",
                f.summary()
            )),
        }
    }

    /// After a failed or cancelled load or swap: drops the staging database
    /// and adds to `err` what is true of the live database now.
    async fn abandon(&self, staging: &str, live_oid: Option<u32>, err: Error) -> Error {
        let note = self.discard(staging).await;
        let live = self.live_note(live_oid).await;
        match err {
            Error::Other(msg) => with_note(Error::Other(format!("{msg}; {live}")), note),
            err => {
                tracing::warn!(database = %self.db, "{live}");
                with_note(err, note)
            }
        }
    }

    /// Renames the live database to `previous` (when it exists) and
    /// `staging` to the live name, in one transaction, after terminating
    /// the live database's sessions. Retried when sessions came back.
    async fn swap(
        &self,
        staging: &str,
        previous: &str,
        live_exists: bool,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut script = String::from("BEGIN;\n");
        if live_exists {
            script.push_str(&self.terminate_sql(&self.db));
            script.push_str(&format!(
                "ALTER DATABASE {} RENAME TO {};\n",
                ident(&self.db),
                ident(previous)
            ));
        }
        script.push_str(&format!(
            "ALTER DATABASE {} RENAME TO {};\nCOMMIT;\n",
            ident(staging),
            ident(&self.db)
        ));
        let mut attempt = 1;
        loop {
            match self.sql(&script).await {
                Ok(_) => return Ok(()),
                Err(f)
                    if attempt < SWAP_ATTEMPTS
                        && f.log.contains("is being accessed by other users") =>
                {
                    tracing::warn!(
                        attempt,
                        "sessions reconnected to the live database before the swap; trying again: {}",
                        f.summary()
                    );
                }
                Err(f) => {
                    return Err(self.fail(format!(
                        "cannot swap the restored database into place: {}",
                        f.summary()
                    )));
                }
            }
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            attempt += 1;
        }
    }

    /// Drops all but the newest `keep` `<db>_pre_restore_<stamp>` databases.
    async fn prune(&self, keep: usize) -> Result<Vec<String>> {
        let mut previous: Vec<(String, String)> = self
            .databases()
            .await?
            .into_iter()
            .filter_map(|name| {
                previous_stamp(&self.db, &name).map(|stamp| (stamp_order(stamp), name.clone()))
            })
            .collect();
        previous.sort_by(|a, b| b.cmp(a));
        let mut dropped = Vec::new();
        for (_, name) in previous.into_iter().skip(keep) {
            match self.drop_database(&name, false).await {
                Ok(()) => {
                    tracing::info!(database = %name, "dropped an older previous database (RESTORE_KEEP_PREVIOUS)");
                    dropped.push(name);
                }
                Err(f) => tracing::warn!(
                    database = %name,
                    "cannot drop an older previous database: {}",
                    f.summary()
                ),
            }
        }
        Ok(dropped)
    }
}

// ------------------------------------------------------------------ loading

/// Blanks, outside COPY data, line by line: `SET transaction_timeout`
/// statements (pg_dump ≥ 17 writes one; older servers reject it), and the
/// file's own `\restrict`/`\unrestrict` lines (ours comes first, and the
/// file must never lift it). The line break stays, so psql's line numbers
/// still match the file.
#[derive(Debug, Default)]
struct SqlFilter {
    in_copy: bool,
    blanked: u64,
    blanked_restrict: u64,
}

impl SqlFilter {
    fn apply(&mut self, line: &mut Vec<u8>) {
        let content_len = line
            .iter()
            .rposition(|&b| b != b'\n' && b != b'\r')
            .map_or(0, |i| i + 1);
        let content = &line[..content_len];
        if self.in_copy {
            if content == b"\\." {
                self.in_copy = false;
            }
            return;
        }
        if content.starts_with(b"COPY ") && content.ends_with(b" FROM stdin;") {
            self.in_copy = true;
            return;
        }
        const SET: &[u8] = b"SET transaction_timeout";
        if content.starts_with(SET) && matches!(content.get(SET.len()), Some(b' ' | b'=' | b'\t')) {
            line.drain(..content_len);
            self.blanked += 1;
            return;
        }
        let start = content
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(content.len());
        let command = &content[start..];
        let is_restrict = [&b"\\restrict"[..], b"\\unrestrict"].iter().any(|name| {
            command.starts_with(name)
                && command
                    .get(name.len())
                    .is_none_or(|b| b.is_ascii_whitespace())
        });
        if is_restrict {
            line.drain(..content_len);
            self.blanked_restrict += 1;
        }
    }
}

/// Sends chunks one behind: the last one is held until the input has been
/// read to its end and matched the checked digest, so a loader that
/// commits when it has read everything (pg_restore at the end of the
/// archive, psql at the end of its input) never gets there with bytes
/// that were not checked.
struct HeldBack {
    tx: mpsc::Sender<Vec<u8>>,
    held: Option<Vec<u8>>,
}

impl HeldBack {
    /// `false` when the receiver is gone.
    fn send(&mut self, chunk: Vec<u8>) -> bool {
        match self.held.replace(chunk) {
            Some(previous) => self.tx.blocking_send(previous).is_ok(),
            None => true,
        }
    }

    fn release(mut self) {
        if let Some(last) = self.held.take() {
            let _ = self.tx.blocking_send(last);
        }
    }
}

/// Reads the checked `input` (gunzipping it when `gzip`) and sends it in
/// chunks; stops quietly when the receiver is gone. Plain SQL (`restrict`
/// is its key) goes through [`SqlFilter`] after a first line
/// `\restrict KEY`, which puts psql into restricted mode: no meta-command
/// of the file runs. Before the last chunk goes out, everything read is
/// compared with the digest the check took: bytes rewritten in the file
/// since then end the load with an error (the caller kills the loader).
fn produce(
    input: &Input,
    gzip: bool,
    restrict: Option<String>,
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<()> {
    let read_err = |e: std::io::Error| Error::Other(format!("reading {}: {e}", input.name));
    let mut hashed = input.reader();
    let mut out = HeldBack { tx, held: None };
    {
        let raw: Box<dyn Read + '_> = if gzip {
            Box::new(MultiGzDecoder::new(BufReader::with_capacity(
                CHUNK,
                &mut hashed,
            )))
        } else {
            Box::new(&mut hashed)
        };
        let mut reader = BufReader::with_capacity(CHUNK, raw);
        if let Some(key) = restrict {
            let mut sql = SqlFilter::default();
            let mut line = Vec::new();
            let mut pending = Vec::with_capacity(CHUNK);
            pending.extend_from_slice(format!("\\restrict {key}\n").as_bytes());
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                sql.apply(&mut line);
                pending.extend_from_slice(&line);
                if pending.len() >= CHUNK
                    && !out.send(std::mem::replace(&mut pending, Vec::with_capacity(CHUNK)))
                {
                    return Ok(());
                }
            }
            if !pending.is_empty() && !out.send(pending) {
                return Ok(());
            }
            if sql.blanked > 0 {
                tracing::info!(
                    lines = sql.blanked,
                    "left out `SET transaction_timeout` (written by pg_dump 17 and newer)"
                );
            }
            if sql.blanked_restrict > 0 {
                tracing::debug!(
                    lines = sql.blanked_restrict,
                    "left out the file's own \\restrict/\\unrestrict lines (psql runs under backupd's key)"
                );
            }
        } else {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = reader.read(&mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if !out.send(buf) {
                    return Ok(());
                }
            }
        }
    }
    input
        .confirm(hashed)
        .map_err(|e| Error::Other(format!("{}: {e}", input.name)))?;
    out.release();
    Ok(())
}

/// Writes every chunk to the child; returns the bytes written and the
/// write error that stopped it, if any.
async fn feed(
    stdin: &mut ChildStdin,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> (u64, Option<std::io::Error>) {
    let mut written = 0u64;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = stdin.write_all(&chunk).await {
            return (written, Some(e));
        }
        written += chunk.len() as u64;
    }
    match stdin.flush().await {
        Ok(()) => (written, None),
        Err(e) => (written, Some(e)),
    }
}

/// Loads `file` into `dbname`: plain SQL through psql in one transaction,
/// custom format through pg_restore, both fed on stdin. Returns the bytes
/// fed. The child is killed (so nothing is committed) when reading the
/// file fails or `cancel` fires.
async fn load(
    target: &PgTarget,
    dbname: &str,
    file: &Input,
    kind: FileKind,
    cancel: &CancellationToken,
) -> Result<u64> {
    let (program, args): (&'static str, &[&str]) = match kind.payload {
        Payload::PlainSql => (
            "psql",
            &[
                "-X",
                "-q",
                "-w",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                // `-f -` rather than bare stdin: psql then names the line
                // of an error (`psql:<stdin>:LINE: ERROR: …`).
                "-f",
                "-",
            ],
        ),
        Payload::CustomDump => (
            "pg_restore",
            &[
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                "-w",
            ],
        ),
        Payload::Sqlite => {
            return Err(failed(
                target,
                "a SQLite database cannot be restored into PostgreSQL",
            ));
        }
    };
    // pg_restore runs no meta-commands (it speaks SQL to the server
    // itself); psql gets the file in restricted mode, under a key the file
    // cannot know.
    let restrict = match kind.payload {
        Payload::PlainSql => {
            psql_knows_restrict().await.map_err(|e| failed(target, e))?;
            Some(restrict_key())
        }
        _ => None,
    };
    tracing::info!(file = %file.name, database = dbname, program, "loading the dump");
    let mut child = pg_command(program, target, dbname)
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(
                target,
                format!(
                    "cannot run {program}: {e} (is the PostgreSQL client installed and on PATH?)"
                ),
            )
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Our `\restrict` line comes before the file's first line.
    let line_offset = u64::from(restrict.is_some());
    let own_bytes = restrict
        .as_ref()
        .map_or(0, |key| format!("\\restrict {key}\n").len() as u64);
    let stderr = tokio::spawn(read_stderr(
        child.stderr.take().expect("stderr is piped"),
        target.clone(),
        program,
        line_offset,
    ));
    let (tx, rx) = mpsc::channel(4);
    let input = file.clone();
    let gzip = kind.gzip;
    let producer = tokio::task::spawn_blocking(move || produce(&input, gzip, restrict, tx));

    let fed = tokio::select! {
        fed = feed(&mut stdin, rx) => Some(fed),
        _ = cancel.cancelled() => None,
    };
    // The receiver is gone now, so the producer finishes promptly.
    let produced = producer
        .await
        .unwrap_or_else(|e| Err(Error::Other(format!("the reading task failed: {e}"))));
    let Some((bytes, write_error)) = fed else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let _ = stderr.await;
        return Err(Error::Cancelled);
    };
    if let Err(e) = produced {
        // Closing stdin now would let psql commit what it has: kill it.
        let _ = child.start_kill();
        let _ = child.wait().await;
        let _ = stderr.await;
        return Err(failed(target, format!("{e}; nothing was loaded")));
    }
    drop(stdin);
    let status = tokio::select! {
        status = child.wait() => status,
        _ = cancel.cancelled() => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = stderr.await;
            return Err(Error::Cancelled);
        }
    };
    let log = stderr.await.unwrap_or_default();
    let status = status.map_err(|e| failed(target, format!("waiting for {program}: {e}")))?;
    if !status.success() {
        return Err(failed(
            target,
            format!(
                "loading {} into database \"{dbname}\" failed ({program} exited with {status}): {}",
                file.name,
                log.summary()
            ),
        ));
    }
    if let Some(e) = write_error {
        return Err(failed(
            target,
            format!(
                "{program} stopped reading {} before its end ({e})",
                file.name
            ),
        ));
    }
    // What the file gave, not our own first line.
    Ok(bytes.saturating_sub(own_bytes))
}

// ------------------------------------------------------------------ restore

/// Restores `file` (plain SQL or custom format, optionally gzipped; never
/// encrypted here) into the live database of `target`.
pub async fn restore(
    target: &PgTarget,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    cancel: &CancellationToken,
) -> Result<Report> {
    restore_recorded(target, file, kind, opts, &|_| {}, cancel).await
}

/// [`restore`], calling `before_swap` with what recovery needs just before
/// the staging swap (the restore service writes it into its state file).
pub async fn restore_recorded(
    target: &PgTarget,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    before_swap: &(dyn Fn(&SwapRecord) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Report> {
    if kind.encrypted {
        return Err(failed(
            target,
            format!("{} is encrypted; decrypt it before loading", file.name),
        ));
    }
    if !kind.payload.is_postgres() {
        return Err(failed(
            target,
            format!(
                "{} is a {}, not a PostgreSQL dump",
                file.name,
                kind.payload.describe()
            ),
        ));
    }
    check_stamp(&opts.stamp)?;
    if kind.payload == Payload::PlainSql {
        psql_knows_restrict().await.map_err(|e| failed(target, e))?;
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let server = Server::connect(target).await?;
    match opts.strategy {
        Strategy::Staging => staging(&server, file, kind, opts, before_swap, cancel).await,
        Strategy::Inplace => inplace(&server, file, kind, cancel).await,
    }
}

async fn staging(
    server: &Server<'_>,
    file: &Input,
    kind: FileKind,
    opts: &Options,
    before_swap: &(dyn Fn(&SwapRecord) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Report> {
    let db = server.db.as_str();
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
    let bytes = match load(server.target, &staging, file, kind, cancel).await {
        Ok(bytes) => bytes,
        Err(e) => return Err(server.abandon(&staging, live_oid, e).await),
    };
    if cancel.is_cancelled() {
        return Err(server.abandon(&staging, live_oid, Error::Cancelled).await);
    }
    // The dump's own SQL ran as our role: it must not have moved the live
    // database away (ALTER DATABASE … RENAME), or the swap would set aside
    // whatever now has its name.
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
    before_swap(&record);
    crate::restore::test_pause("swapping").await;
    if let Err(e) = server
        .swap(&staging, &previous, live.is_some(), cancel)
        .await
    {
        return Err(server.abandon(&staging, live_oid, e).await);
    }
    crate::restore::test_pause("after-swap").await;
    tracing::info!(
        database = db,
        previous = live.is_some().then_some(previous.as_str()),
        "the restored database is in place"
    );
    let dropped = match server.prune(opts.keep_previous).await {
        Ok(dropped) => dropped,
        Err(e) => {
            tracing::warn!("cannot clean up older previous databases: {e}");
            Vec::new()
        }
    };
    let previous = (live.is_some() && !dropped.contains(&previous)).then_some(previous);
    Ok(Report {
        database: db.to_string(),
        previous,
        dropped,
        bytes_loaded: bytes,
    })
}

async fn inplace(
    server: &Server<'_>,
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
            .drop_database(db, true)
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
            server.target,
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
    let bytes = load(server.target, db, file, kind, cancel).await?;
    Ok(Report {
        database: db.to_string(),
        previous: None,
        dropped: Vec::new(),
        bytes_loaded: bytes,
    })
}

async fn swap_record(server: &Server<'_>, staging: &str, previous: &str) -> Result<SwapRecord> {
    let staging_oid = server.oid(staging).await?.ok_or_else(|| {
        server.fail(format!(
            "the staging database \"{staging}\" vanished before the swap; the live database was not changed"
        ))
    })?;
    Ok(SwapRecord {
        live_oid: server.oid(&server.db).await?,
        staging: staging.to_string(),
        staging_oid,
        previous: previous.to_string(),
    })
}

/// Crash recovery after an interrupted run with `stamp`, told by what is on
/// the server now. With `swap` (recorded just before the swap):
/// - the live name carries the staging oid: the swap committed, the
///   restore had finished ([`Recovered::Finished`]);
/// - the live database is missing and the previous one exists: renamed
///   back ([`Recovered::NotRestored`]);
/// - otherwise the live database was not changed; a leftover staging
///   database is dropped ([`Recovered::NotRestored`]).
///
/// Without a record (killed before loading finished, or a state file of an
/// older version) the names decide: both renames happen in one
/// transaction, so the live database and `<db>_pre_restore_<stamp>` both
/// existing means the swap committed.
pub async fn recover(
    target: &PgTarget,
    stamp: &str,
    swap: Option<&SwapRecord>,
) -> Result<Recovered> {
    check_stamp(stamp)?;
    let server = Server::connect(target).await?;
    let db = server.db.clone();
    let db = db.as_str();
    let staging = staging_name(db, stamp);
    let previous = previous_name(db, stamp);
    // The state file is only ours to trust for names we would have made:
    // recovery drops and renames nothing else.
    let swap = swap.filter(|r| {
        let ours = r.staging == staging && r.previous == previous;
        if !ours {
            tracing::warn!(
                recorded_staging = %r.staging,
                recorded_previous = %r.previous,
                "the recorded swap names databases this restore would not have made; ignoring it"
            );
        }
        ours
    });
    let names = server.databases().await?;
    let live_oid = server.oid(db).await?;
    let previous_oid = if names.contains(&previous) {
        server.oid(&previous).await?
    } else {
        None
    };

    let mut done = Vec::new();
    let finished = match (live_oid, swap) {
        (Some(oid), Some(record)) => oid == record.staging_oid,
        (Some(_), None) => previous_oid.is_some(),
        (None, _) => false,
    };
    if live_oid.is_none() {
        if previous_oid.is_some() {
            let script = format!(
                "BEGIN;\n{}ALTER DATABASE {} RENAME TO {};\nCOMMIT;\n",
                server.terminate_sql(&previous),
                ident(&previous),
                ident(db)
            );
            server.sql(&script).await.map_err(|f| {
                server.fail(format!(
                    "database \"{db}\" is missing and \"{previous}\" could not be renamed back: {}",
                    f.summary()
                ))
            })?;
            tracing::warn!(database = db, from = %previous, "put the previous database back");
            done.push(format!("renamed \"{previous}\" back to \"{db}\""));
        } else {
            done.push(format!(
                "database \"{db}\" does not exist and there is no \"{previous}\" to put back"
            ));
        }
    }
    let rolled_back = !done.is_empty() && previous_oid.is_some() && live_oid.is_none();
    if finished {
        let kept = match (previous_oid, swap.and_then(|r| r.live_oid)) {
            (Some(now), Some(before)) if now == before => {
                format!("; the replaced database is kept as \"{previous}\"")
            }
            (Some(_), Some(_)) => format!(
                "; \"{previous}\" exists but is not the replaced database (its oid changed)"
            ),
            (Some(_), None) => format!("; the replaced database is kept as \"{previous}\""),
            (None, _) => String::new(),
        };
        done.push(format!(
            "the restore had finished before backupd stopped: \"{db}\" is the restored database{kept}; the state was completed by recovery"
        ));
    }
    if names.contains(&staging) {
        server.drop_database(&staging, true).await.map_err(|f| {
            server.fail(format!(
                "cannot drop the leftover staging database \"{staging}\": {}",
                f.summary()
            ))
        })?;
        tracing::info!(database = %staging, "dropped the leftover staging database");
        done.push(format!(
            "dropped the leftover staging database \"{staging}\""
        ));
    }
    if finished {
        return Ok(Recovered::Finished(done.join("; ")));
    }
    if rolled_back {
        return Ok(Recovered::NotRestored(done.join("; ")));
    }
    if done.is_empty() {
        done.push(format!("nothing to recover: database \"{db}\" is in place"));
    } else if live_oid.is_some() {
        done.push(format!("the live database \"{db}\" was not changed"));
    }
    Ok(Recovered::NotRestored(done.join("; ")))
}

/// Drops the staging databases (`<db>_restore_<stamp>`, the configured
/// database's only) that interrupted restores left; the caller holds the
/// restore lock. Returns their names.
pub async fn drop_leftover_staging(target: &PgTarget) -> Result<Vec<String>> {
    Server::connect(target).await?.drop_leftover_staging().await
}

/// The restore role, when it is a superuser: such a role can make the
/// server run programs and read its files, which a restore never needs.
pub async fn superuser_role(target: &PgTarget) -> Result<Option<String>> {
    let server = Server::connect(target).await?;
    Ok(server.superuser.then(|| server.user.clone()))
}

/// How many tables the emptiness test looks at per statement.
const TABLES_PER_QUERY: usize = 200;

/// The live database's tables that hold at least one row, as
/// `schema.table` (user schemas; tables of extensions left out), or `None`
/// when the live database does not exist. "At least one row" is looked up
/// (`EXISTS` per table), never taken from statistics. A table this role
/// may not read counts as holding rows.
pub async fn live_tables_with_rows(
    target: &PgTarget,
) -> Result<Option<std::collections::BTreeSet<String>>> {
    let server = Server::connect(target).await?;
    let db = server.db.clone();
    if server.oid(&db).await?.is_none() {
        return Ok(None);
    }
    let list = "SELECT n.nspname, c.relname, has_table_privilege(c.oid, 'SELECT') \
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' \
                AND n.nspname !~ '^pg_' \
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1, 2;\n";
    let tables = run_sql(target, &db, list).await.map_err(|f| {
        failed(
            target,
            format!(
                "cannot list the tables of database \"{db}\": {}",
                f.summary()
            ),
        )
    })?;
    let mut with_rows = std::collections::BTreeSet::new();
    let mut readable = Vec::new();
    for line in tables.lines() {
        let fields: Vec<&str> = line.split(FIELD_SEP).collect();
        let [schema, table, can_read] = fields[..] else {
            continue;
        };
        let name = format!("{schema}.{table}");
        if can_read == "t" {
            readable.push((name, schema.to_string(), table.to_string()));
        } else {
            with_rows.insert(name);
        }
    }
    for chunk in readable.chunks(TABLES_PER_QUERY) {
        let query = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, schema, table))| {
                format!(
                    "SELECT {i} WHERE EXISTS (SELECT 1 FROM ONLY {}.{})",
                    ident(schema),
                    ident(table)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let out = run_sql(target, &db, &format!("{query};\n"))
            .await
            .map_err(|f| {
                failed(
                    target,
                    format!(
                        "cannot look into the tables of database \"{db}\": {}",
                        f.summary()
                    ),
                )
            })?;
        for i in out.lines().filter_map(|l| l.trim().parse::<usize>().ok()) {
            if let Some((name, ..)) = chunk.get(i) {
                with_rows.insert(name.clone());
            }
        }
    }
    Ok(Some(with_rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: &str = "20261129T030405Z";

    #[test]
    fn strategies_parse_with_a_clear_error() {
        assert_eq!("staging".parse::<Strategy>(), Ok(Strategy::Staging));
        assert_eq!(" InPlace ".parse::<Strategy>(), Ok(Strategy::Inplace));
        assert_eq!("".parse::<Strategy>(), Ok(Strategy::Staging));
        let err = "swap".parse::<Strategy>().unwrap_err();
        assert!(
            err.contains("'swap'") && err.contains("staging") && err.contains("inplace"),
            "{err}"
        );
        assert_eq!(Strategy::Inplace.to_string(), "inplace");
    }

    #[test]
    fn names_fit_postgres_identifiers_deterministically() {
        assert_eq!(
            staging_name("appdb", STAMP),
            "appdb_restore_20261129T030405Z"
        );
        assert_eq!(
            previous_name("appdb", STAMP),
            "appdb_pre_restore_20261129T030405Z"
        );
        let long = "d".repeat(80);
        let staging = staging_name(&long, STAMP);
        let previous = previous_name(&long, STAMP);
        assert_eq!(staging.len(), 63);
        assert_eq!(previous.len(), 63);
        assert!(previous.ends_with("_pre_restore_20261129T030405Z"));
        assert_eq!(staging, staging_name(&long, STAMP));
        // Never cut inside a character.
        let wide = "é".repeat(40);
        let name = previous_name(&wide, STAMP);
        assert!(name.len() <= 63 && name.ends_with(STAMP), "{name}");
    }

    #[test]
    fn only_exact_previous_names_are_recognised() {
        assert_eq!(
            previous_stamp("appdb", "appdb_pre_restore_20261129T030405Z"),
            Some(STAMP)
        );
        for other in [
            "appdb",
            "appdb_pre_restore_20261129T030405",
            "appdb_pre_restore_20261129T030405Z_x",
            "appdb_pre_restore_2026112XT030405Z",
            "xappdb_pre_restore_20261129T030405Z",
            "appdb_restore_20261129T030405Z",
            "appdb2_pre_restore_20261129T030405Z",
        ] {
            assert_eq!(previous_stamp("appdb", other), None, "{other}");
        }
        let long = "d".repeat(80);
        assert_eq!(
            previous_stamp(&long, &previous_name(&long, STAMP)),
            Some(STAMP)
        );
        assert!(check_stamp("2026-11-29").is_err());
    }

    const NEW: &str = "20261129T030405.123456Z";

    #[test]
    fn microsecond_stamps_name_databases_in_time_order() {
        assert!(is_stamp(NEW) && is_stamp(STAMP));
        for bad in [
            "20261129T030405.12345Z",
            "20261129T030405,123456Z",
            "20261129T030405.123456",
        ] {
            assert!(!is_stamp(bad), "{bad}");
        }
        let stamp = chrono::DateTime::parse_from_rfc3339("2026-11-29T03:04:05.000007Z")
            .unwrap()
            .format(STAMP_FORMAT)
            .to_string();
        assert_eq!(stamp, "20261129T030405.000007Z");
        let long = "d".repeat(80);
        for db in ["appdb", long.as_str()] {
            for name in [previous_name(db, NEW), staging_name(db, NEW)] {
                assert!(name.len() <= 63, "{name}");
            }
            assert_eq!(previous_stamp(db, &previous_name(db, NEW)), Some(NEW));
            assert_eq!(staging_stamp(db, &staging_name(db, NEW)), Some(NEW));
            // Names from before microseconds are still ours.
            assert_eq!(previous_stamp(db, &previous_name(db, STAMP)), Some(STAMP));
            assert_eq!(staging_stamp(db, &staging_name(db, STAMP)), Some(STAMP));
            assert_eq!(staging_stamp(db, &previous_name(db, NEW)), None);
            assert_eq!(previous_stamp(db, &staging_name(db, NEW)), None);
        }
        for other in [
            "appdb_restore_20261129T030405.123456Z_x",
            "appdb2_restore_20261129T030405.123456Z",
            "appdb_restore_20261129T030405.1234567Z",
            "xappdb_restore_20261129T030405Z",
        ] {
            assert_eq!(staging_stamp("appdb", other), None, "{other}");
        }
        // Old and new stamps sort by time.
        let mut stamps = vec![
            stamp_order("20261129T030406Z"),
            stamp_order("20261129T030405.000001Z"),
            stamp_order("20261129T030405Z"),
        ];
        stamps.sort();
        assert_eq!(
            stamps,
            [
                "20261129T030405.000000Z",
                "20261129T030405.000001Z",
                "20261129T030406.000000Z"
            ]
        );
    }

    #[test]
    fn only_a_psql_with_restricted_mode_is_used() {
        for ok in [
            "psql (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)",
            "psql (PostgreSQL) 18.1",
            "psql (PostgreSQL) 19devel",
            "psql (PostgreSQL) 17.6",
            "psql (PostgreSQL) 13.22",
        ] {
            assert_eq!(restrict_supported(ok), Ok(()), "{ok}");
        }
        for old in [
            "psql (PostgreSQL) 15.13",
            "psql (PostgreSQL) 17.5 (Ubuntu 17.5-1)",
            "psql (PostgreSQL) 12.22",
            "psql (PostgreSQL) 9.6.24",
            "",
        ] {
            let err = restrict_supported(old).unwrap_err();
            assert!(err.contains("too old") && err.contains("15.14"), "{err}");
        }
    }

    #[test]
    fn restrict_keys_are_random_and_alphanumeric() {
        let (a, b) = (restrict_key(), restrict_key());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn psql_line_numbers_count_the_file_lines() {
        assert_eq!(
            file_line_numbers("psql:<stdin>:13: ERROR:  x", 1),
            "psql:<stdin>:12: ERROR:  x"
        );
        assert_eq!(
            file_line_numbers("psql:<stdin>:13: ERROR:  x", 0),
            "psql:<stdin>:13: ERROR:  x"
        );
        assert_eq!(file_line_numbers("DETAIL:  y", 1), "DETAIL:  y");
    }

    #[test]
    fn the_files_own_restrict_lines_are_blanked_outside_copy_data() {
        let dump = "\\restrict abc\nSELECT 1;\n  \\unrestrict guess\nCOPY public.t (a) FROM stdin;\n\\restrict x\n\\.\n\
                    \\restricted\n\\unrestrict abc\n";
        assert_eq!(
            filtered(dump),
            "\nSELECT 1;\n\nCOPY public.t (a) FROM stdin;\n\\restrict x\n\\.\n\\restricted\n\n"
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(conninfo(r"x' y\z"), r"dbname='x\' y\\z'");
    }

    fn filtered(text: &str) -> String {
        let mut filter = SqlFilter::default();
        let mut out = Vec::new();
        for line in text.split_inclusive('\n') {
            let mut line = line.as_bytes().to_vec();
            filter.apply(&mut line);
            out.extend(line);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn transaction_timeout_is_blanked_outside_copy_data_only() {
        let dump = "SET statement_timeout = 0;\nSET transaction_timeout = 0;\r\nSET lock_timeout = 0;\n\
                    COPY public.t (a) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n\
                    SET transaction_timeout=0;\nSET transaction_timeouts = 1;";
        assert_eq!(
            filtered(dump),
            "SET statement_timeout = 0;\n\r\nSET lock_timeout = 0;\n\
             COPY public.t (a) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n\
             \nSET transaction_timeouts = 1;"
        );
    }

    #[test]
    fn stderr_summaries_name_the_first_error_with_its_detail() {
        let mut log = StderrLog::default();
        for line in [
            "NOTICE:  something",
            "psql:<stdin>:120: ERROR:  relation \"no_such_table\" does not exist",
            "LINE 1: SELECT * FROM no_such_table;",
            "                      ^",
            "DETAIL:  more",
            "psql:<stdin>:130: ERROR:  current transaction is aborted",
        ] {
            log.push(line);
        }
        assert_eq!(
            log.summary(),
            "psql:<stdin>:120: ERROR:  relation \"no_such_table\" does not exist DETAIL:  more"
        );
        assert!(log.contains("aborted"));
        let mut quiet = StderrLog::default();
        quiet.push("killed");
        assert_eq!(quiet.summary(), "killed");
    }
}
