//! The whole file is checked before anything is stopped: decompressed to the
//! end, content checked, and matched against the configured database. A file
//! that fails here never touches the stack.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::archive::has_pg_dump_trailer;
use crate::crypto::fernet::decrypt_from;
use crate::crypto::keys::Keys;
use crate::db::Database;
use crate::db::sqlite::check_integrity;
use crate::restore::input::{self, CheckReader, FirstPassHash, HashingReader, Input, PrivateDir};
use crate::restore::kind::{FileKind, Payload};
use crate::restore::postgres::{live_tables_with_rows, psql_knows_restrict};
use crate::restore::sql_scan::{SqlScan, shortened};
use crate::verify::{TailSink, decompress_from};

/// A file that passed every check.
#[derive(Debug)]
pub struct Checked {
    /// The file as it was named (for messages and the failed folder only:
    /// nothing is read through it again).
    pub path: PathBuf,
    pub kind: FileKind,
    pub size: u64,
    pub raw_bytes: u64,
    /// SHA-256 of the file as it was read (an `.enc` file's token).
    pub sha256: String,
    /// The bytes to load: the opened file itself, or an `.enc` file's
    /// authenticated plaintext in the private folder; with the digest of
    /// exactly what the check read from it.
    pub input: Input,
    /// SQLite: the decompressed, integrity-checked database, in the private
    /// folder (0700). Removed when dropped.
    pub prepared: Option<Prepared>,
    /// A PostgreSQL dump's tables (`schema.table`), for
    /// [`same_application`].
    pub tables: Option<BTreeSet<String>>,
}

/// A temporary file removed on drop unless taken.
#[derive(Debug)]
pub struct Prepared {
    pub path: PathBuf,
    keep: bool,
}

impl Prepared {
    pub fn new(path: PathBuf) -> Self {
        Prepared { path, keep: false }
    }

    /// The file has been moved into place: do not remove it.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Checks `path` for restoring into `database`. `Err` is the one-line reason
/// recorded beside the file in the failed folder. The file is opened once
/// (no symlink, no FIFO, a regular non-empty file on the descriptor); an
/// encrypted file is authenticated completely and decrypted into an
/// unlinked file in `private` before anything else. One pass over the bytes
/// to load then hashes and checks them; the load reads the same descriptor
/// and compares its own hash with this one.
pub async fn check(
    path: &Path,
    kind: FileKind,
    database: &Database,
    keys: &Keys,
    _stamp: &str,
    private: &PrivateDir,
) -> Result<Checked, String> {
    match (kind.payload, database) {
        (Payload::Sqlite, Database::Postgres(_)) => {
            return Err(
                "this is a SQLite database but the configured database is PostgreSQL".into(),
            );
        }
        (Payload::PlainSql | Payload::CustomDump, Database::Sqlite(_)) => {
            return Err(format!(
                "this is a {} but the configured database is SQLite",
                kind.payload.describe()
            ));
        }
        _ => {}
    }
    let file = Arc::new(input::open(path)?);
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read the file's metadata: {e}"))?
        .len();
    let shown = path.display().to_string();
    let (source, token_sha256) = if kind.encrypted {
        let (plain, sha) = decrypt_privately(file, &shown, keys, private).await?;
        (plain, Some(sha))
    } else {
        (file, None)
    };
    let kind = FileKind {
        encrypted: false,
        ..kind
    };
    let short = |e: crate::error::Error| match e {
        crate::error::Error::Verify { reason, .. } => reason,
        other => other.to_string(),
    };
    // A dropped file may be rewritten in place after this pass read it, so
    // the load reads a private copy of exactly what was checked; decrypted
    // plaintext is private already.
    let copy_into = token_sha256.is_none().then(|| private.clone());
    let input_name = if token_sha256.is_some() {
        format!("the decrypted content of {shown}")
    } else {
        shown.clone()
    };
    let (raw_bytes, input, prepared, tables) = match (kind.payload, database) {
        (Payload::PlainSql, _) => {
            let (source, path, name) = (source.clone(), path.to_path_buf(), input_name.clone());
            let copy_into = copy_into.clone();
            let (n, input, tail, scan) = blocking(move || {
                let mut tail = TailSink::default();
                // The same pass feeds the trailer check and the scan, and
                // copies what it reads for the load.
                let mut scan = SqlScan::for_psql();
                let mut reader = CheckReader::new(&source, copy_into.as_ref())?;
                let n = decompress_from(
                    &mut reader,
                    kind.gzip,
                    &mut Both(&mut tail, &mut scan),
                    &path,
                )
                .map_err(short)?;
                let input = reader
                    .into_input(source.clone(), name)
                    .map_err(|e| format!("cannot read the file: {e}"))?;
                Ok((n, input, tail, scan))
            })
            .await?;
            let scanned = scan.finish()?;
            if !has_pg_dump_trailer(&tail.bytes) {
                return Err("the SQL dump does not end with pg_dump's trailer '-- PostgreSQL database dump complete' (incomplete dump)".into());
            }
            psql_knows_restrict().await.map_err(|e| e.to_string())?;
            (n, input, None, Some(scanned.tables))
        }
        (Payload::CustomDump, _) => {
            let (n, input, tables) =
                check_custom_dump(source, path, kind.gzip, input_name, copy_into.clone()).await?;
            (n, input, None, Some(tables))
        }
        (Payload::Sqlite, Database::Sqlite(target)) => {
            // SQLite opens files by name, so the copy has one, in the
            // private folder: the online-backup restore copies from it into
            // the live file, so it need not share the target's filesystem.
            let name = crate::archive::file_name(&target.path);
            let prepared = Prepared::new(
                private
                    .path
                    .join(format!("{name}.restore-{}.tmp", random_suffix())),
            );
            let out_path = prepared.path.clone();
            let (source, path, input_name) = (source.clone(), path.to_path_buf(), input_name);
            let (n, input) = blocking(move || {
                let file = private_new_file(&out_path).map_err(|e| {
                    format!(
                        "cannot create {} in the private folder: {e}",
                        out_path.display()
                    )
                })?;
                let mut out = io::BufWriter::new(file);
                let mut reader = HashingReader::new(&source);
                let n = decompress_from(&mut reader, kind.gzip, &mut out, &path).map_err(short)?;
                let input = reader
                    .into_input(source.clone(), input_name)
                    .map_err(|e| format!("cannot read the file: {e}"))?;
                let file = out
                    .into_inner()
                    .map_err(|e| format!("writing {}: {e}", out_path.display()))?;
                file.sync_all()
                    .map_err(|e| format!("fsync {}: {e}", out_path.display()))?;
                Ok((n, input))
            })
            .await?;
            check_integrity(&prepared.path, "integrity_check")
                .map_err(|reason| format!("not a sound SQLite database: {reason}"))?;
            (n, input, Some(prepared), None)
        }
        (Payload::Sqlite, Database::Postgres(_)) => unreachable!("refused above"),
    };
    Ok(Checked {
        path: path.to_path_buf(),
        kind,
        size,
        raw_bytes,
        sha256: token_sha256.unwrap_or_else(|| input.sha256.clone()),
        input,
        prepared,
        tables,
    })
}

/// Writes everything to both sinks: one decompression pass feeds the
/// trailer check and the scan.
struct Both<'a, A, B>(&'a mut A, &'a mut B);

impl<A: Write, B: Write> Write for Both<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// How many table names a refusal shows of each side.
const TABLES_SHOWN: usize = 8;

/// Refuses a PostgreSQL dump that shares no table with the live database's
/// non-empty tables (a dump of another application, most likely), unless
/// `allow_schema_change` (`RESTORE_ALLOW_SCHEMA_CHANGE`). A live database
/// that is missing or holds no rows takes any dump. Runs before anything
/// is stopped.
pub async fn same_application(
    checked: &Checked,
    database: &Database,
    allow_schema_change: bool,
) -> Result<(), String> {
    let (Database::Postgres(target), Some(dump)) = (database, &checked.tables) else {
        return Ok(());
    };
    if allow_schema_change {
        return Ok(());
    }
    let live = live_tables_with_rows(target)
        .await
        .map_err(|e| format!("cannot compare the dump's tables with the live database's: {e}"))?;
    let Some(live) = live.filter(|live| !live.is_empty()) else {
        return Ok(());
    };
    if dump.intersection(&live).next().is_some() {
        return Ok(());
    }
    Err(format!(
        "the dump shares no table with the live database, which holds data (a dump of another application?): the dump has {} table(s) ({}), the live database {} non-empty table(s) ({}); nothing was changed (set RESTORE_ALLOW_SCHEMA_CHANGE=true to replace it anyway)",
        dump.len(),
        shortened(dump, TABLES_SHOWN),
        live.len(),
        shortened(&live, TABLES_SHOWN),
    ))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the checking task failed: {e}"))?
}

/// Sixteen random hex digits for a temporary name nobody can predict.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    hex::encode(bytes)
}

/// Decrypts the opened token into an unlinked file in the private folder,
/// readable only by us. `decrypt_from` checks the tag over the whole token
/// before it writes anything, and again while decrypting; the digest
/// returned is that of the token it authenticated.
async fn decrypt_privately(
    token: Arc<File>,
    shown: &str,
    keys: &Keys,
    private: &PrivateDir,
) -> Result<(Arc<File>, String), String> {
    let ring = keys.for_decryption()?.ok_or_else(|| {
        format!(
            "cannot decrypt {shown}: no encryption key is configured (looked in {})",
            keys.sources()
        )
    })?;
    let plain = private.temp_file()?;
    let shown = shown.to_string();
    let (plain, sha) = blocking(move || {
        let mut reader = FirstPassHash::new(&token);
        let mut out = io::BufWriter::with_capacity(1 << 20, &plain);
        decrypt_from(&ring, &mut reader, &shown, &mut out).map_err(|e| e.to_string())?;
        out.flush()
            .map_err(|e| format!("writing the decrypted content of {shown}: {e}"))?;
        drop(out);
        let (_, sha) = reader
            .first_pass()
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        Ok((plain, sha))
    })
    .await?;
    Ok((Arc::new(plain), sha))
}

fn private_new_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(path)
}

/// One pass over the dump: decompressed to its end (hashing the file's
/// bytes, copied privately for the load) and fed to `pg_restore -f -`, whose SQL
/// goes through the scanner, which also collects the tables.
async fn check_custom_dump(
    source: Arc<File>,
    path: &Path,
    gzip: bool,
    input_name: String,
    copy_into: Option<PrivateDir>,
) -> Result<(u64, Input, BTreeSet<String>), String> {
    // `-f -` and no -d: the SQL comes out on stdout, nothing connects
    // anywhere. pg_restore runs no psql meta-commands, but the SQL of a
    // crafted custom dump is the server's to run all the same: it goes
    // through the scanner, which also collects the tables.
    let mut command = crate::process::command("pg_restore");
    command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run pg_restore: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let scan = tokio::task::spawn_blocking(move || -> Result<SqlScan, String> {
        let mut from = tokio_util::io::SyncIoBridge::new(stdout);
        let mut scan = SqlScan::for_pg_restore();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from
                .read(&mut buf)
                .map_err(|e| format!("reading pg_restore's output: {e}"))?;
            if n == 0 {
                return Ok(scan);
            }
            let _ = scan.write(&buf[..n]);
        }
    });
    let stdin = child.stdin.take().expect("stdin is piped");
    let path = path.to_path_buf();
    let feed = tokio::task::spawn_blocking(move || {
        let mut sink = UntilClosed(Some(tokio_util::io::SyncIoBridge::new(stdin)));
        let mut reader = match CheckReader::new(&source, copy_into.as_ref()) {
            Ok(reader) => reader,
            Err(e) => return (Ok(0), Err(io::Error::other(e))),
        };
        let n = decompress_from(&mut reader, gzip, &mut sink, &path);
        // pg_restore sees its end of input here.
        drop(sink);
        let input = reader.into_input(source.clone(), input_name);
        (n, input)
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("pg_restore: {e}"))?;
    let (raw_bytes, input) = feed.await.map_err(|e| format!("decompression task: {e}"))?;
    let raw_bytes = raw_bytes.map_err(|e| match e {
        crate::error::Error::Verify { reason, .. } => reason,
        other => other.to_string(),
    })?;
    let input = input.map_err(|e| format!("cannot read the file: {e}"))?;
    let scan = scan
        .await
        .map_err(|e| format!("the scanning task failed: {e}"))??;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "pg_restore rejected the dump: {}",
            stderr.lines().next().unwrap_or("").trim()
        ));
    }
    let scanned = scan
        .finish()
        .map_err(|reason| format!("in the SQL of the custom dump, {reason}"))?;
    Ok((raw_bytes, input, scanned.tables))
}

/// Writes to the inner writer until it fails (pg_restore closes its input
/// once it has the table of contents), then swallows the rest, so the
/// decompression still runs to the end of the file.
struct UntilClosed<W: Write>(Option<W>);

impl<W: Write> Write for UntilClosed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(inner) = self.0.as_mut()
            && inner.write_all(buf).is_err()
        {
            self.0 = None;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(inner) = self.0.as_mut()
            && inner.flush().is_err()
        {
            self.0 = None;
        }
        Ok(())
    }
}

/// Removes decrypted copies that older versions of backupd left beside dropped
/// files (`.NAME.decrypted-STAMP.tmp`, plaintext in the watch folder).
/// Decrypted content now lives only in the private folder, unlinked.
pub fn remove_legacy_decrypted(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".decrypted-") && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a decrypted copy left by an older backupd")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale decrypted copy")
                }
            }
        }
    }
}
