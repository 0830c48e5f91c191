//! The whole file is checked before anything is stopped: decompressed to the
//! end, content checked (by [`crate::inspect`], as `backupd verify` does),
//! and matched against the configured database. A file that fails here
//! never touches the stack.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::fernet::{DecryptError, decrypt_from};
use crate::crypto::keys::Keys;
use crate::db::Database;
use crate::inspect::kind::{FileKind, Payload};
use crate::inspect::sql_scan::shortened;
use crate::inspect::{self, InspectError, SqliteCopy};
use crate::restore::input::{
    self, CheckReader, FirstPassHash, HashingReader, Input, InputError, OpenError, PrivateDir,
};
use crate::restore::postgres::{PsqlUnfit, live_tables_with_rows, psql_knows_restrict};

/// Why a file was not accepted for restoring. The wording is the one-line
/// reason recorded beside the file in the failed folder.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("this is a SQLite database but the configured database is PostgreSQL")]
    SqliteIntoPostgres,
    #[error("this is a {} but the configured database is SQLite", .0.describe())]
    PostgresIntoSqlite(Payload),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Input(#[from] InputError),
    /// What the inspection found wrong with the content.
    #[error(transparent)]
    Unsound(#[from] InspectError),
    #[error("not a sound SQLite database: {0}")]
    NotSqlite(String),
    #[error("cannot read the file: {0}")]
    Read(#[source] io::Error),
    #[error("cannot create {} in the private folder: {source}", path.display())]
    CreateCopy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot decrypt {file}: no encryption key is configured (looked in {sources})")]
    NoKey { file: String, sources: String },
    /// The keys could not be loaded (the reason names the key file).
    #[error("{0}")]
    Keys(String),
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    #[error("writing the decrypted content of {file}: {source}")]
    WriteDecrypted {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {file}: {source}")]
    ReadToken {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("the checking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// psql cannot load the file safely (no restricted mode).
    #[error(transparent)]
    Loader(#[from] PsqlUnfit),
    #[error("cannot compare the dump's tables with the live database's: {0}")]
    CompareTables(#[source] crate::error::Error),
    #[error(
        "the dump shares no table with the live database, which holds data (a dump of another application?): the dump has {} table(s) ({}), the live database {} non-empty table(s) ({}); nothing was changed (set RESTORE_ALLOW_SCHEMA_CHANGE=true to replace it anyway)",
        dump.len(),
        shortened(dump, TABLES_SHOWN),
        live.len(),
        shortened(live, TABLES_SHOWN)
    )]
    OtherApplication {
        dump: BTreeSet<String>,
        live: BTreeSet<String>,
    },
}

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

/// Checks `path` for restoring into `database`. The file is opened once
/// (no symlink, no FIFO, a regular non-empty file on the descriptor); an
/// encrypted file is authenticated completely and decrypted into an
/// unlinked file in `private` before anything else. One pass over the bytes
/// to load then hashes and inspects them; the load reads the same
/// descriptor and compares its own hash with this one.
pub async fn check(
    path: &Path,
    kind: FileKind,
    database: &Database,
    keys: &Keys,
    _stamp: &str,
    private: &PrivateDir,
) -> Result<Checked, CheckError> {
    match (kind.payload, database) {
        (Payload::Sqlite, Database::Postgres(_)) => return Err(CheckError::SqliteIntoPostgres),
        (Payload::PlainSql | Payload::CustomDump, Database::Sqlite(_)) => {
            return Err(CheckError::PostgresIntoSqlite(kind.payload));
        }
        _ => {}
    }
    let file = Arc::new(input::open(path)?);
    let size = file.metadata().map_err(OpenError::Metadata)?.len();
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
    // A dropped file may be rewritten in place after this pass read it, so
    // the load reads a private copy of exactly what was checked; decrypted
    // plaintext is private already.
    let copy_into = token_sha256.is_none().then(|| private.clone());
    let input_name = if token_sha256.is_some() {
        format!("the decrypted content of {shown}")
    } else {
        shown.clone()
    };
    let (prepared, sqlite_copy) = match (kind.payload, database) {
        // SQLite opens files by name, so the copy has one, in the private
        // folder: the online-backup restore copies from it into the live
        // file, so it need not share the target's filesystem. It is what
        // the load reads.
        (Payload::Sqlite, Database::Sqlite(target)) => {
            let name = crate::archive::file_name(&target.path);
            let prepared = Prepared::new(
                private
                    .path
                    .join(format!("{name}.restore-{}.tmp", random_suffix())),
            );
            let file =
                private_new_file(&prepared.path).map_err(|source| CheckError::CreateCopy {
                    path: prepared.path.clone(),
                    source,
                })?;
            let copy = SqliteCopy {
                file,
                path: prepared.path.clone(),
            };
            (Some(prepared), Some(copy))
        }
        _ => (None, None),
    };
    let inspected = inspect::inspect(kind, sqlite_copy, move |feed| {
        let input = if kind.payload == Payload::Sqlite {
            let mut reader = HashingReader::new(&source);
            feed.decode(&mut reader)?;
            Input::read_to_end(reader, source.clone(), input_name)
        } else {
            let mut reader = CheckReader::new(&source, copy_into.as_ref())?;
            feed.decode(&mut reader)?;
            reader.into_input(source.clone(), input_name)
        };
        input.map_err(CheckError::Read)
    })
    .await;
    let (sound, input) = inspected.map_err(|e| match e {
        CheckError::Unsound(InspectError::SqliteUnsound(reason)) => CheckError::NotSqlite(reason),
        other => other,
    })?;
    if kind.payload == Payload::PlainSql {
        psql_knows_restrict().await?;
    }
    Ok(Checked {
        path: path.to_path_buf(),
        kind,
        size,
        raw_bytes: sound.raw_bytes,
        sha256: token_sha256.unwrap_or_else(|| input.sha256.clone()),
        input,
        prepared,
        tables: sound.tables,
    })
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
) -> Result<(), CheckError> {
    let (Database::Postgres(target), Some(dump)) = (database, &checked.tables) else {
        return Ok(());
    };
    if allow_schema_change {
        return Ok(());
    }
    let live = live_tables_with_rows(target)
        .await
        .map_err(CheckError::CompareTables)?;
    let Some(live) = live.filter(|live| !live.is_empty()) else {
        return Ok(());
    };
    if dump.intersection(&live).next().is_some() {
        return Ok(());
    }
    Err(CheckError::OtherApplication {
        dump: dump.clone(),
        live,
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CheckError> + Send + 'static,
) -> Result<T, CheckError> {
    tokio::task::spawn_blocking(work).await?
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
) -> Result<(Arc<File>, String), CheckError> {
    let ring = keys
        .for_decryption()
        .map_err(|e| CheckError::Keys(e.to_string()))?
        .ok_or_else(|| CheckError::NoKey {
            file: shown.to_string(),
            sources: keys.sources(),
        })?;
    let plain = private.temp_file()?;
    let shown = shown.to_string();
    let (plain, sha) = blocking(move || {
        let mut reader = FirstPassHash::new(&token);
        let mut out = io::BufWriter::with_capacity(1 << 20, &plain);
        decrypt_from(&ring, &mut reader, &shown, &mut out)?;
        out.flush().map_err(|source| CheckError::WriteDecrypted {
            file: shown.clone(),
            source,
        })?;
        drop(out);
        let (_, sha) = reader
            .first_pass()
            .map_err(|source| CheckError::ReadToken {
                file: shown.clone(),
                source,
            })?;
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
