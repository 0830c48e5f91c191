//! Streaming a checked input into a database: plain SQL through psql in
//! restricted mode (under a random `\\restrict` key the file cannot know,
//! the file's own `\\restrict` lines blanked), custom dumps through
//! pg_restore, both in one transaction, fed on stdin in chunks with the
//! last one held back until the bytes read matched the check's digest.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use flate2::read::MultiGzDecoder;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::catalog::{DbInfo, Server, pg_command};
use super::error::{PsqlUnfit, failed, with_note};
use crate::db::PgTarget;
use crate::error::{Error, Result};
use crate::process::{STDERR_TAIL, capture_stderr};
use crate::restore::input::Input;
use crate::restore::kind::{FileKind, Payload};

const CHUNK: usize = 256 * 1024;

/// Why the input could not be fed to the loader.
#[derive(Debug, thiserror::Error)]
enum InputFailed {
    #[error("reading {name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    /// The bytes differ from what the check read.
    #[error("{name}: {source}")]
    Changed {
        name: String,
        source: std::io::Error,
    },
    #[error("the reading task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// The first release of each major version whose psql knows `\restrict`
/// (the fix for CVE-2025-8714); every release from 18 on does.
const RESTRICT_SINCE: &[(u32, u32)] = &[(13, 22), (14, 19), (15, 14), (16, 10), (17, 6)];

/// `Ok` when a psql of `version` (`psql (PostgreSQL) 15.18 (Debian …)`)
/// knows `\restrict`; `Err` says which one is needed.
fn restrict_supported(version: &str) -> std::result::Result<(), PsqlUnfit> {
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
        Err(PsqlUnfit::TooOld {
            version: version.trim().to_string(),
        })
    }
}

/// Runs `psql --version` and fails closed when that psql cannot be put into
/// restricted mode (or cannot be run at all).
pub async fn psql_knows_restrict() -> std::result::Result<(), PsqlUnfit> {
    let out = crate::process::command("psql")
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(PsqlUnfit::CannotRun)?;
    if !out.status.success() {
        return Err(PsqlUnfit::VersionFailed {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
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
) -> std::result::Result<(), InputFailed> {
    let read_err = |source| InputFailed::Read {
        name: input.name.clone(),
        source,
    };
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
        .map_err(|source| InputFailed::Changed {
            name: input.name.clone(),
            source,
        })?;
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
pub(super) async fn load(
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
    let masking = target.clone();
    let stderr = tokio::spawn(capture_stderr(
        child.stderr.take().expect("stderr is piped"),
        STDERR_TAIL,
        move |line| {
            let line = masking.mask(&file_line_numbers(line, line_offset));
            if line.trim().is_empty() {
                return None;
            }
            if line.contains("NOTICE:") {
                tracing::debug!(target: "backupd::restore", "{program}: {line}");
            } else {
                tracing::warn!(target: "backupd::restore", "{program}: {line}");
            }
            Some(line)
        },
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
    let produced = producer.await.unwrap_or_else(|e| Err(InputFailed::Task(e)));
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

/// Refuses what cannot be loaded into PostgreSQL: an encrypted file (the
/// caller decrypts) or another engine's file.
pub(super) fn check_loadable(target: &PgTarget, file: &Input, kind: FileKind) -> Result<()> {
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
    Ok(())
}

impl Server {
    /// Creates database `name` (owned by this role, with the live
    /// database's encoding and locale when it exists) and loads the checked
    /// `file` into it, as a restore loads its staging database; returns the
    /// bytes fed. A failed or cancelled load drops `name` again. `name` must
    /// not exist yet and is never the live database, so no database of
    /// anyone else is ever touched. Pick a name that is not of the
    /// `<db>_restore_<stamp>` form: a restore drops those as leftovers.
    pub async fn load_into_new_database(
        &self,
        name: &str,
        file: &Input,
        kind: FileKind,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        check_loadable(&self.target, file, kind)?;
        if name == self.db {
            return Err(self.fail(format!(
                "refusing to load into database \"{name}\": it is the live database (a restore replaces it); nothing was changed"
            )));
        }
        if kind.payload == Payload::PlainSql {
            psql_knows_restrict()
                .await
                .map_err(|e| failed(&self.target, e))?;
        }
        if self.database_exists(name).await? {
            return Err(self.fail(format!(
                "database \"{name}\" already exists; nothing was changed"
            )));
        }
        if !self.can_create() {
            return Err(self.no_createdb("nothing was changed"));
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let like: Option<DbInfo> = self.info(&self.db).await?;
        self.create(name, like.as_ref()).await?;
        match load(&self.target, name, file, kind, cancel).await {
            Ok(bytes) => Ok(bytes),
            Err(e) => {
                let note = self.drop_if_exists(name, true).await.err().map(|f| {
                    format!(
                        "database \"{name}\" could not be dropped either ({}); drop it by hand",
                        f.summary()
                    )
                });
                Err(with_note(e, note))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_psql_with_restricted_mode_is_used() {
        for ok in [
            "psql (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)",
            "psql (PostgreSQL) 18.1",
            "psql (PostgreSQL) 19devel",
            "psql (PostgreSQL) 17.6",
            "psql (PostgreSQL) 13.22",
        ] {
            assert!(restrict_supported(ok).is_ok(), "{ok}");
        }
        for old in [
            "psql (PostgreSQL) 15.13",
            "psql (PostgreSQL) 17.5 (Ubuntu 17.5-1)",
            "psql (PostgreSQL) 12.22",
            "psql (PostgreSQL) 9.6.24",
            "",
        ] {
            let err = restrict_supported(old).unwrap_err().to_string();
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
}
