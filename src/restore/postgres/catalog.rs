//! The server's catalog, through psql: statements run from a maintenance
//! database (one fresh psql each, stopping at the first error, codes taken
//! from its verbose output), database oids and settings, creating and
//! dropping databases, the swap of the live and the staging database in one
//! transaction, and pruning of the replaced ones.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::error::{failed, takes_notes, with_note};
use super::naming::{conninfo, ident, literal, previous_stamp, staging_stamp, stamp_order};
use crate::db::PgTarget;
use crate::db::postgres::PgCommand;
use crate::error::{Error, Result};
use crate::process::StderrLog;

/// How often the swap is tried when sessions reconnect to the live database
/// between their termination and the rename.
const SWAP_ATTEMPTS: u32 = 4;
/// Separates fields in the maintenance queries' output.
const FIELD_SEP: &str = "\u{1f}";

/// A libpq program for database `dbname` of `target`: settings from the
/// environment only, killed when dropped.
pub(super) fn pg_command(program: &str, target: &PgTarget, dbname: &str) -> PgCommand {
    let mut cmd = crate::db::postgres::command(program, target);
    cmd.env("PGDATABASE", dbname)
        .arg("-d")
        .arg(conninfo(dbname))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
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

// ------------------------------------------------------------------ SQL

/// The SQLSTATE codes backupd acts on (PostgreSQL's errcodes.txt): codes,
/// unlike messages, are the same in every server language and release.
mod sqlstate {
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const OBJECT_IN_USE: &str = "55006";
}

/// A maintenance statement that failed; `log` is masked, `sqlstate` the
/// code of its first error (psql runs them with `VERBOSITY=verbose`).
#[derive(Debug)]
pub(super) struct SqlFailure {
    log: StderrLog,
    sqlstate: Option<String>,
}

impl SqlFailure {
    /// A failure before the server said anything (psql did not run).
    fn local(message: String) -> Self {
        let mut log = StderrLog::default();
        log.push(&message);
        SqlFailure {
            log,
            sqlstate: None,
        }
    }

    pub(super) fn summary(&self) -> String {
        self.log.summary()
    }

    /// The server's error had SQLSTATE `code`.
    fn is(&self, code: &str) -> bool {
        self.sqlstate.as_deref() == Some(code)
    }

    /// The connection failed because of the database asked for (missing,
    /// CONNECT not granted, connections not allowed), not of the server or
    /// the login. psql prints no SQLSTATE for a failed connection (its
    /// VERBOSITY applies once connected), so only the message can tell; it
    /// chooses the wording of an error and never what is tried.
    fn names_the_database(&self) -> bool {
        self.log.lines().any(|line| {
            line.contains("does not exist")
                || line.contains("permission denied for database")
                || line.contains("not allowed")
        })
    }
}

/// The error when every maintenance database failed: a failure that is not
/// about its database (the server, the login) is the one to report.
fn no_maintenance_database(target: &PgTarget, failures: &[(&str, SqlFailure)]) -> Error {
    if let Some((_, f)) = failures.iter().find(|(_, f)| !f.names_the_database()) {
        return failed(
            target,
            format!("cannot connect to the server: {}", f.summary()),
        );
    }
    let (name, f) = failures
        .last()
        .expect("at least one maintenance database was tried");
    failed(
        target,
        format!(
            "cannot connect to a maintenance database (tried postgres and template1; {name}: {})",
            f.summary()
        ),
    )
}

/// `ERROR:  42501: permission denied …` (psql's verbose form, in any
/// language) as `ERROR:  permission denied …` and its code: messages read
/// as they do at the default verbosity.
fn without_sqlstate(line: &str) -> (String, Option<String>) {
    for (at, _) in line.match_indices(":  ") {
        let rest = &line[at + 3..];
        let code = rest.as_bytes().get(..5);
        if code.is_some_and(|c| {
            c.iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        }) && rest[5..].starts_with(": ")
        {
            let text = format!("{}{}", &line[..at + 3], &rest[7..]);
            return (text, Some(rest[..5].to_string()));
        }
    }
    (line.to_string(), None)
}

/// `LOCATION:  createdb, dbcommands.c:1242`: where in the server's source
/// an error was raised, printed only at verbose verbosity (its label is
/// translated, so the shape decides).
fn is_source_location(line: &str) -> bool {
    let Some((_, rest)) = line.split_once(":  ") else {
        return false;
    };
    let Some((function, place)) = rest.split_once(", ") else {
        return false;
    };
    let Some((file, number)) = place.rsplit_once(':') else {
        return false;
    };
    !function.is_empty()
        && !function.contains(char::is_whitespace)
        && file.ends_with(".c")
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Runs `script` through psql in `dbname`, statement by statement (so
/// CREATE/DROP DATABASE work), stopping at the first error. Returns the
/// rows: unaligned, tuples only, fields separated by [`FIELD_SEP`].
pub(super) async fn run_sql(
    target: &PgTarget,
    dbname: &str,
    script: &str,
) -> std::result::Result<String, SqlFailure> {
    let mut child = pg_command("psql", target, dbname)
        .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(["-v", "VERBOSITY=verbose", "-F"])
        .arg(FIELD_SEP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            SqlFailure::local(format!(
                "error: cannot run psql: {e} (is the PostgreSQL client installed and on PATH?)"
            ))
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // psql that cannot connect exits without reading: its stderr says why.
    let written = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await;
    let out = match out {
        Ok(out) => out,
        Err(e) => return Err(SqlFailure::local(format!("error: waiting for psql: {e}"))),
    };
    let mut log = StderrLog::default();
    let mut sqlstate = None;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let line = target.mask(line);
        if is_source_location(&line) {
            continue;
        }
        let (line, code) = without_sqlstate(&line);
        tracing::debug!(target: "backupd::restore", "psql: {line}");
        log.push(&line);
        // The first error's code. Its label (ERROR, FEHLER, …) is translated,
        // so the code's class decides: notices and warnings (00, 01, 02)
        // carry codes too.
        if sqlstate.is_none() {
            sqlstate = code.filter(|c| !matches!(&c[..2], "00" | "01" | "02"));
        }
    }
    if !out.status.success() {
        if log.first_error().is_none() {
            log.push(&format!("error: psql exited with {}", out.status));
        }
        return Err(SqlFailure { log, sqlstate });
    }
    if let Err(e) = written {
        log.push(&format!("error: writing to psql: {e}"));
        return Err(SqlFailure { log, sqlstate });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Encoding and locale of an existing database, copied to the one that
/// replaces it.
#[derive(Debug, Clone)]
pub(super) struct DbInfo {
    encoding: String,
    collate: String,
    ctype: String,
    /// `c` libc, `i` icu, `b` builtin.
    provider: String,
    locale: String,
    /// The current role may rename and drop it.
    pub(super) owned: bool,
}

/// A PostgreSQL server as seen from a maintenance database, for one live
/// database: who we are there and what we may do. Every statement runs
/// through a fresh psql of [`pg_command`] (connection settings in the
/// environment, the password in a private file).
#[derive(Debug, Clone)]
pub struct Server {
    pub(super) target: PgTarget,
    /// The live database.
    pub(super) db: String,
    maintenance: &'static str,
    pub(super) version: u32,
    pub(super) user: String,
    pub(super) superuser: bool,
    createdb: bool,
}

impl Server {
    /// Connects to `postgres` (or `template1` when that cannot be used, or
    /// is the live database itself) and asks who we are.
    pub async fn connect(target: &PgTarget) -> Result<Server> {
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
        let mut failures = Vec::new();
        for &maintenance in candidates {
            let f = match run_sql(target, maintenance, probe).await {
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
                        target: target.clone(),
                        db,
                        maintenance,
                        version,
                        user: user.to_string(),
                        superuser: superuser == "t",
                        createdb: createdb == "t",
                    });
                }
                Err(f) => f,
            };
            tracing::debug!(
                maintenance,
                "maintenance database not usable: {}",
                f.summary()
            );
            failures.push((maintenance, f));
        }
        Err(no_maintenance_database(target, &failures))
    }

    /// The live database (the one the URL names).
    pub fn live_database(&self) -> &str {
        &self.db
    }

    /// The role backupd connects as.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn is_superuser(&self) -> bool {
        self.superuser
    }

    /// True when database `name` exists, looked up in the catalog now.
    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        Ok(self.oid(name).await?.is_some())
    }

    /// Drops database `name` when it exists, terminating its sessions
    /// first. Never the live database: that only a restore replaces.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        if name == self.db {
            return Err(self.fail(format!(
                "refusing to drop database \"{name}\": it is the live database"
            )));
        }
        self.drop_if_exists(name, true)
            .await
            .map_err(|f| self.fail(format!("cannot drop database \"{name}\": {}", f.summary())))
    }

    pub(super) async fn sql(&self, script: &str) -> std::result::Result<String, SqlFailure> {
        run_sql(&self.target, self.maintenance, script).await
    }

    pub(super) fn fail(&self, reason: impl fmt::Display) -> Error {
        failed(&self.target, reason)
    }

    /// Every database name on the server.
    pub async fn databases(&self) -> Result<Vec<String>> {
        let out = self
            .sql("SELECT datname FROM pg_database;\n")
            .await
            .map_err(|f| self.fail(format!("cannot list the databases: {}", f.summary())))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// The oid of database `name`, when it exists.
    pub async fn oid(&self, name: &str) -> Result<Option<u32>> {
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

    pub(super) async fn info(&self, name: &str) -> Result<Option<DbInfo>> {
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
    pub(super) async fn live_note(&self, before: Option<u32>) -> String {
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
    pub async fn drop_leftover_staging(&self) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        for name in self.databases().await? {
            if staging_stamp(&self.db, &name).is_none() {
                continue;
            }
            self.drop_if_exists(&name, true).await.map_err(|f| {
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
    pub(super) async fn drop_leftovers(&self) {
        if let Err(e) = self.drop_leftover_staging().await {
            tracing::warn!(error = %e, "cannot clean up leftover staging databases");
        }
    }

    /// A statement terminating the other sessions on `name` that this role
    /// may terminate (others would make pg_terminate_backend fail).
    pub(super) fn terminate_sql(&self, name: &str) -> String {
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

    pub fn can_create(&self) -> bool {
        self.superuser || self.createdb
    }

    pub(super) fn no_createdb(&self, detail: &str) -> Error {
        self.fail(format!(
            "permission denied to create database: the role \"{user}\" lacks CREATEDB, which RESTORE_PG_STRATEGY=staging needs to load into a new database and swap it in. Grant it (ALTER ROLE {role} CREATEDB) or set RESTORE_PG_STRATEGY=inplace (empties the live database before loading: a failed load leaves it empty or partial); {detail}",
            user = self.user,
            role = ident(&self.user),
        ))
    }

    /// `CREATE DATABASE name` owned by this role, from template0 with the
    /// encoding and locale of `like` (the database it replaces).
    pub(super) async fn create(&self, name: &str, like: Option<&DbInfo>) -> Result<()> {
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
            if f.is(sqlstate::INSUFFICIENT_PRIVILEGE) {
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
    pub(super) async fn drop_if_exists(
        &self,
        name: &str,
        force: bool,
    ) -> std::result::Result<(), SqlFailure> {
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
    pub(super) async fn discard(&self, staging: &str) -> Option<String> {
        match self.drop_if_exists(staging, true).await {
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
    pub(super) async fn abandon(&self, staging: &str, live_oid: Option<u32>, err: Error) -> Error {
        let note = self.discard(staging).await;
        let live = self.live_note(live_oid).await;
        if takes_notes(&err) {
            with_note(with_note(err, Some(live)), note)
        } else {
            tracing::warn!(database = %self.db, "{live}");
            with_note(err, note)
        }
    }

    /// Renames the live database to `previous` (when it exists) and
    /// `staging` to the live name, in one transaction, after terminating
    /// the live database's sessions. Retried when sessions came back.
    pub(super) async fn swap(
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
                Err(f) if attempt < SWAP_ATTEMPTS && f.is(sqlstate::OBJECT_IN_USE) => {
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
    pub(super) async fn prune(&self, keep: usize) -> Result<Vec<String>> {
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
            match self.drop_if_exists(&name, false).await {
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

pub(super) async fn swap_record(
    server: &Server,
    staging: &str,
    previous: &str,
) -> Result<SwapRecord> {
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

impl Server {
    /// The row count of every table of database `name` (relkind `r`, user
    /// schemas; tables of an extension left out unless they are its
    /// configuration tables, whose rows pg_dump dumps), named
    /// `format('%I.%I', schema, table)` as pg_dump names them, so they
    /// compare with a manifest's. Counted exactly (`count(*) FROM ONLY`),
    /// in one statement and one snapshot, with `row_security = off` so a
    /// policy makes the count fail instead of hiding rows. The answer is one
    /// JSON object: table names may hold line breaks.
    pub async fn table_counts(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        let sql = "SET row_security = off;\n\
            SELECT coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname), \
            (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', \
            n.nspname, c.relname), false, true, '')))[1]::text::bigint), '{}') \
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
            WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
            AND d.objid = c.oid AND d.deptype = 'e' AND NOT EXISTS (SELECT 1 FROM pg_extension x \
            WHERE x.oid = d.refobjid AND c.oid = ANY (x.extconfig)));\n";
        let out = run_sql(&self.target, name, sql).await.map_err(|f| {
            self.fail(format!(
                "cannot count the rows of the tables in database \"{name}\": {}",
                f.summary()
            ))
        })?;
        let json = out.lines().last().unwrap_or("{}").trim();
        serde_json::from_str(json).map_err(|e| {
            self.fail(format!(
                "unexpected row counts from database \"{name}\": {e}"
            ))
        })
    }
}

/// True when database `name` exists on the server of `target`.
pub async fn database_exists(target: &PgTarget, name: &str) -> Result<bool> {
    Server::connect(target).await?.database_exists(name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_errors_read_as_at_default_verbosity_with_their_code() {
        assert_eq!(
            without_sqlstate("ERROR:  42501: permission denied to create database"),
            (
                "ERROR:  permission denied to create database".to_string(),
                Some("42501".to_string())
            )
        );
        assert_eq!(
            without_sqlstate("psql:<stdin>:3: FEHLER:  55006: Datenbank wird benutzt"),
            (
                "psql:<stdin>:3: FEHLER:  Datenbank wird benutzt".to_string(),
                Some("55006".to_string())
            )
        );
        assert_eq!(
            without_sqlstate("DETAIL:  There is 1 other session: using it."),
            (
                "DETAIL:  There is 1 other session: using it.".to_string(),
                None
            )
        );
        assert!(is_source_location("LOCATION:  createdb, dbcommands.c:1242"));
        assert!(is_source_location("ORT:  int4div, int.c:869"));
        assert!(!is_source_location("DETAIL:  see a, b.c:12 for more"));
        assert!(!is_source_location("ERROR:  division by zero"));
    }

    fn connection_failure(message: &str) -> SqlFailure {
        SqlFailure::local(format!(
            "psql: error: connection to server on socket \"/run/x\" failed: FATAL:  {message}"
        ))
    }

    #[test]
    fn a_server_or_login_failure_is_reported_before_a_missing_maintenance_database() {
        let target = PgTarget {
            host: Some("db".into()),
            port: None,
            user: Some("app".into()),
            password: Some("pw".into()),
            dbname: Some("appdb".into()),
            options: vec![],
        };
        let missing = || connection_failure("database \"postgres\" does not exist");
        let denied = || connection_failure("permission denied for database \"template1\"");
        let login = || connection_failure("password authentication failed for user \"app\"");
        let err =
            no_maintenance_database(&target, &[("postgres", missing()), ("template1", denied())])
                .to_string();
        assert!(
            err.contains("cannot connect to a maintenance database (tried postgres and template1; template1: ")
                && err.contains("permission denied for database"),
            "{err}"
        );
        for failures in [
            [("postgres", login()), ("template1", login())],
            [("postgres", missing()), ("template1", login())],
        ] {
            let err = no_maintenance_database(&target, &failures).to_string();
            assert!(
                err.contains("cannot connect to the server: ")
                    && err.contains("password authentication failed"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_failed_statement_is_told_by_its_code() {
        let failure = SqlFailure {
            log: StderrLog::default(),
            sqlstate: Some(sqlstate::OBJECT_IN_USE.into()),
        };
        assert!(failure.is(sqlstate::OBJECT_IN_USE));
        assert!(!failure.is(sqlstate::INSUFFICIENT_PRIVILEGE));
        assert!(!SqlFailure::local("error: cannot run psql".into()).is(sqlstate::OBJECT_IN_USE));
    }
}
