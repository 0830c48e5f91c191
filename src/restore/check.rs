//! The whole file is checked before anything is stopped: decompressed to the
//! end, content checked, and matched against the configured database. A file
//! that fails here never touches the stack.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::archive::has_pg_dump_trailer;
use crate::crypto::fernet::decrypt_file;
use crate::crypto::keys::Keys;
use crate::db::Database;
use crate::db::sqlite::check_integrity;
use crate::restore::kind::{FileKind, Payload};
use crate::verify::{TailSink, decompress_into, sha256_file};

/// A file that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub path: PathBuf,
    pub kind: FileKind,
    pub size: u64,
    pub raw_bytes: u64,
    pub sha256: String,
    /// SQLite: the decompressed, integrity-checked database, already in the
    /// target's folder so the swap is a rename. Removed when dropped.
    pub prepared: Option<Prepared>,
    /// An `.enc` file's authenticated plaintext, which `path` then names.
    /// Removed when dropped.
    pub decrypted: Option<Prepared>,
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
/// recorded beside the file in the failed folder. An encrypted file is
/// authenticated completely and decrypted into a private temporary file
/// before anything else; the checks and the restore then read that file.
pub async fn check(
    path: &Path,
    kind: FileKind,
    database: &Database,
    keys: &Keys,
    stamp: &str,
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
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("the file is empty (0 bytes)".into());
    }
    let size = meta.len();
    let sha256 = sha256_file(path).map_err(|e| e.to_string())?;
    let decrypted = if kind.encrypted {
        Some(decrypt_to_temporary(path, keys, stamp).await?)
    } else {
        None
    };
    let (path, kind) = match &decrypted {
        Some(plain) => (
            plain.path.as_path(),
            FileKind {
                encrypted: false,
                ..kind
            },
        ),
        None => (path, kind),
    };
    let short = |e: crate::error::Error| match e {
        crate::error::Error::Verify { reason, .. } => reason,
        other => other.to_string(),
    };
    let (raw_bytes, prepared) = match (kind.payload, database) {
        (Payload::PlainSql, _) => {
            let mut tail = TailSink::default();
            let n = decompress_into(path, kind.gzip, &mut tail).map_err(short)?;
            if !has_pg_dump_trailer(&tail.bytes) {
                return Err("the SQL dump does not end with pg_dump's trailer '-- PostgreSQL database dump complete' (incomplete dump)".into());
            }
            (n, None)
        }
        (Payload::CustomDump, _) => (check_custom_dump(path, kind.gzip).await?, None),
        (Payload::Sqlite, Database::Sqlite(target)) => {
            let dir = target
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = crate::archive::file_name(&target.path);
            let prepared = Prepared::new(dir.join(format!(".{name}.restore-{stamp}.tmp")));
            let n = {
                let file = File::create(&prepared.path).map_err(|e| {
                    format!(
                        "cannot create {} in the database folder: {e}",
                        prepared.path.display()
                    )
                })?;
                let mut out = io::BufWriter::new(file);
                let n = decompress_into(path, kind.gzip, &mut out).map_err(short)?;
                let file = out
                    .into_inner()
                    .map_err(|e| format!("writing {}: {e}", prepared.path.display()))?;
                file.sync_all()
                    .map_err(|e| format!("fsync {}: {e}", prepared.path.display()))?;
                n
            };
            check_integrity(&prepared.path, "integrity_check")
                .map_err(|reason| format!("not a sound SQLite database: {reason}"))?;
            (n, Some(prepared))
        }
        (Payload::Sqlite, Database::Postgres(_)) => unreachable!("refused above"),
    };
    Ok(Checked {
        path: path.to_path_buf(),
        kind,
        size,
        raw_bytes,
        sha256,
        prepared,
        decrypted,
    })
}

/// Name of the decrypted copy of `NAME` (a dotfile, which the watcher ignores).
fn decrypted_name(name: &str, stamp: &str) -> String {
    format!(".{name}.decrypted-{stamp}.tmp")
}

/// Decrypts `path` into a file readable only by us, beside it (or in the
/// temporary folder when that folder is read-only). `decrypt_file` checks
/// the tag over the whole file before it writes anything.
async fn decrypt_to_temporary(path: &Path, keys: &Keys, stamp: &str) -> Result<Prepared, String> {
    let name = crate::archive::file_name(path);
    let ring = keys.for_decryption()?.ok_or_else(|| {
        format!(
            "cannot decrypt {name}: no encryption key is configured (looked in {})",
            keys.sources()
        )
    })?;
    let temp_name = decrypted_name(&name, stamp);
    let beside = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(&temp_name);
    let (temp, file) = match private_file(&beside) {
        Ok(file) => (beside, file),
        Err(_) => {
            let fallback = std::env::temp_dir().join(&temp_name);
            let file = private_file(&fallback)
                .map_err(|e| format!("cannot create {}: {e}", fallback.display()))?;
            (fallback, file)
        }
    };
    let prepared = Prepared::new(temp);
    let source = path.to_path_buf();
    let target = prepared.path.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        decrypt_file(&ring, &source, &mut out).map_err(|e| e.to_string())?;
        let file = out
            .into_inner()
            .map_err(|e| format!("writing {}: {e}", target.display()))?;
        file.sync_all()
            .map_err(|e| format!("fsync {}: {e}", target.display()))
    })
    .await
    .map_err(|e| format!("decryption task: {e}"))??;
    Ok(prepared)
}

fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Removes decrypted copies an interrupted restore left in `dir`.
pub fn remove_stale_decrypted(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".decrypted-") && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a decrypted copy left by an interrupted restore")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale decrypted copy")
                }
            }
        }
    }
}

/// Decompresses the whole file, then has `pg_restore --list` read its table
/// of contents.
async fn check_custom_dump(path: &Path, gzip: bool) -> Result<u64, String> {
    let whole = path.to_path_buf();
    let raw_bytes =
        tokio::task::spawn_blocking(move || decompress_into(&whole, gzip, &mut io::sink()))
            .await
            .map_err(|e| format!("decompression task: {e}"))?
            .map_err(|e| match e {
                crate::error::Error::Verify { reason, .. } => reason,
                other => other.to_string(),
            })?;
    let mut command = crate::process::command("pg_restore");
    command
        .arg("--list")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = if gzip {
        let mut child = command
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run pg_restore: {e}"))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let source = path.to_path_buf();
        let feed = tokio::task::spawn_blocking(move || {
            let mut sink = tokio_util::io::SyncIoBridge::new(stdin);
            // pg_restore may close its input once it has the table of contents.
            let _ = decompress_into(&source, true, &mut sink);
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("pg_restore: {e}"))?;
        let _ = feed.await;
        out
    } else {
        command
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run pg_restore: {e}"))?
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "pg_restore --list rejected the dump: {}",
            stderr.lines().next().unwrap_or("").trim()
        ));
    }
    Ok(raw_bytes)
}
