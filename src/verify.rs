//! `backupd verify` and `list --verify`: is this file a backup we could
//! restore from? Checked without touching any database, by the same
//! inspection the restore check runs ([`crate::inspect`]), plus the
//! checksum sidecar.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive;
use crate::crypto::fernet::{DecryptError, KeyRing, decrypt_from};
use crate::error::{Error, Result};
use crate::inspect::read::{self, FirstPassHash, HashingReader};
use crate::inspect::sidecar::{self, SidecarError};
use crate::inspect::{self, Feed, InspectError, SqliteCopy, kind};
use crate::manifest::{Lookup, compare_counts, lookup};

/// What a sound backup turned out to be.
#[derive(Debug)]
pub struct Report {
    pub kind: &'static str,
    pub compressed_bytes: u64,
    pub raw_bytes: u64,
    pub checksum: ChecksumCheck,
    /// A Fernet token whose tag verified.
    pub encrypted: bool,
    pub manifest: ManifestCheck,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ChecksumCheck {
    Matched,
    NoSidecar,
}

/// The manifest of a sound file, against the file's own stream.
#[derive(Debug, PartialEq, Eq)]
pub enum ManifestCheck {
    /// Every table's count, and the uncompressed size, as the manifest says.
    Matched { path: PathBuf, tables: usize },
    /// A manifest for this file, but a kind whose rows the stream does not
    /// show (a custom-format dump): only the size was compared.
    NotCounted { path: PathBuf },
    /// No usable manifest; why (from [`lookup::find`]).
    Missing { note: String },
}

/// Verifies `path`; `keys` decrypt an `.enc` file (`Err` holds why there
/// are none, for the message). The file is opened once (no symlink, no
/// FIFO) and every pass reads that descriptor, as a restore does.
///
/// The manifest is looked for beside the file and in `backup_dir`
/// ([`lookup::find`]); one found must agree with the stream: the same
/// uncompressed size and, for a plain dump or SQLite, every table's count.
pub async fn verify(
    path: &Path,
    keys: std::result::Result<Option<&KeyRing>, String>,
    backup_dir: Option<&Path>,
) -> Result<Report> {
    let file =
        Arc::new(read::open(path).map_err(|reason| Error::verify(path, reason.to_string()))?);
    let size = file
        .metadata()
        .map_err(|e| Error::io("inspect", path, e))?
        .len();
    let name = archive::file_name(path);
    let encrypted = name.ends_with(".enc");
    let ring = match (encrypted, keys) {
        (false, _) => None,
        (true, Ok(Some(ring))) => Some(ring.clone()),
        (true, Ok(None)) => {
            return Err(Error::verify(
                path,
                "it is encrypted (.enc) but no encryption key is configured (BACKUP_ENCRYPTION_KEY or .encryption_key)",
            ));
        }
        (true, Err(reason)) => return Err(Error::verify(path, reason)),
    };
    let Some(kind) = kind::by_extension(&name) else {
        return Err(Error::verify(
            path,
            "unrecognised file name: expected .sql.gz, .dump.gz, .db.gz, .sql, .dump or .db (each optionally .enc)",
        ));
    };
    let expected = sidecar::expected_sha256(path).map_err(|e| match e {
        SidecarError::Unreadable { path, source } => Error::io("read", &path, source),
        malformed @ SidecarError::Malformed { .. } => Error::verify(path, malformed.to_string()),
    })?;
    // Always a private copy: SQLite opens files by path, and the temporary
    // folder (sticky, our file 0600 with a random name) is one nobody else
    // can swap a file in.
    let scratch = match kind.payload {
        kind::Payload::Sqlite => Some(
            tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("create a scratch copy in", &std::env::temp_dir(), e))?,
        ),
        _ => None,
    };
    let sqlite_copy = match &scratch {
        Some(scratch) => Some(SqliteCopy {
            file: scratch
                .as_file()
                .try_clone()
                .map_err(|e| Error::io("write", scratch.path(), e))?,
            path: scratch.path().to_path_buf(),
        }),
        None => None,
    };
    let source = Source {
        path: path.to_path_buf(),
        file: file.clone(),
        ring,
    };
    let inspected = inspect::inspect(kind, sqlite_copy, move |feed| source.decode_into(feed)).await;
    // SQLite's rows are counted in the checked copy, before it goes.
    let sqlite_rows = match (&scratch, &inspected) {
        (Some(scratch), Ok(_)) => {
            let copy = scratch.path().to_path_buf();
            tokio::task::spawn_blocking(move || crate::manifest::sqlite_table_counts(&copy))
                .await
                .map_err(|e| Error::Other(format!("the counting task failed: {e}")))?
                .ok()
        }
        _ => None,
    };
    drop(scratch);

    // A checksum mismatch explains a damaged stream (or a damaged content)
    // better than the stream does, so it is reported first.
    let mismatch = || {
        Error::verify(
            path,
            format!(
                "the SHA-256 checksum does not match {} (the file was altered or damaged)",
                archive::sidecar_path(path).display()
            ),
        )
    };
    let checksum = match (&expected, &inspected) {
        (None, _) => ChecksumCheck::NoSidecar,
        (Some(expected), Ok((_, actual))) if actual == expected => ChecksumCheck::Matched,
        (Some(_), Ok(_)) => return Err(mismatch()),
        (Some(expected), Err(_)) => {
            // Hash the whole file to tell damage the sidecar knows about.
            let (_, actual) = HashingReader::new(&file)
                .finish_to_end()
                .map_err(|e| Error::io("read", path, e))?;
            if actual != *expected {
                return Err(mismatch());
            }
            ChecksumCheck::NoSidecar
        }
    };
    let (sound, sha256) = inspected.map_err(|failure| match failure {
        Failure::Unsound(InspectError::WriteCopy { path, source }) => {
            Error::io("write", &path, source)
        }
        Failure::Unsound(reason) => Error::verify(path, reason.to_string()),
        Failure::Other(e) => e,
    })?;
    let rows = sound.rows.clone().or(sqlite_rows);
    let manifest = check_manifest(path, &sha256, backup_dir, sound.raw_bytes, rows.as_ref())?;
    Ok(Report {
        kind: kind.payload.describe(),
        compressed_bytes: size,
        raw_bytes: sound.raw_bytes,
        checksum,
        encrypted,
        manifest,
    })
}

/// The manifest of the file whose SHA-256 is `sha256`, against what its
/// stream held: a disagreement is the verdict, naming the tables.
fn check_manifest(
    path: &Path,
    sha256: &str,
    backup_dir: Option<&Path>,
    raw_bytes: u64,
    rows: Option<&BTreeMap<String, u64>>,
) -> Result<ManifestCheck> {
    let (manifest, at) = match lookup::find(path, sha256, backup_dir) {
        Lookup::Found { manifest, path } => (manifest, path),
        Lookup::NotFound { note } => return Ok(ManifestCheck::Missing { note }),
    };
    if manifest.uncompressed_bytes != raw_bytes {
        return Err(Error::verify(
            path,
            format!(
                "it holds {raw_bytes} bytes of data but its manifest {} says {}",
                at.display(),
                manifest.uncompressed_bytes
            ),
        ));
    }
    let Some(rows) = rows else {
        return Ok(ManifestCheck::NotCounted { path: at });
    };
    match compare_counts(&manifest.tables, rows) {
        Ok(tables) => Ok(ManifestCheck::Matched { path: at, tables }),
        Err(mismatch) => Err(Error::verify(
            path,
            format!("{mismatch} ({})", at.display()),
        )),
    }
}

/// Why the pass over the file failed: the file, or reading it.
enum Failure {
    Unsound(InspectError),
    Other(Error),
}

impl From<InspectError> for Failure {
    fn from(e: InspectError) -> Self {
        Failure::Unsound(e)
    }
}

/// A backup file and its Fernet layer.
struct Source {
    path: PathBuf,
    file: Arc<File>,
    /// Set when the file is a Fernet token.
    ring: Option<KeyRing>,
}

impl Source {
    /// Streams the content into the inspection; returns the SHA-256 of the
    /// file's bytes that were read. An encrypted file is authenticated
    /// completely before a byte is decrypted; the decryption then runs on
    /// its own thread, feeding the decompressor through a pipe, so both
    /// stay streaming and no plaintext is written anywhere.
    fn decode_into(&self, feed: &mut Feed) -> std::result::Result<String, Failure> {
        let Some(ring) = &self.ring else {
            let mut reader = HashingReader::new(&self.file);
            feed.decode(&mut reader)?;
            let (_, sha) = reader
                .finish_to_end()
                .map_err(|e| Failure::Other(Error::io("read", &self.path, e)))?;
            return Ok(sha);
        };
        let (reader, writer) = io::pipe()
            .map_err(|e| Failure::Other(Error::io("create a pipe to decrypt", &self.path, e)))?;
        let name = self.path.display().to_string();
        let file = &*self.file;
        std::thread::scope(|scope| {
            let decrypting = scope.spawn(move || {
                let mut token = FirstPassHash::new(file);
                let decrypted = decrypt_from(
                    ring,
                    &mut token,
                    &name,
                    io::BufWriter::with_capacity(1 << 16, writer),
                );
                decrypted.map(|_| token.first_pass())
            });
            // A decompressor that stops early closes the pipe (decode owns
            // its end): the decryption then fails with a broken pipe, which
            // only the decompressor explains.
            let copied = feed.decode(reader);
            let decrypted = decrypting.join().map_err(|_| {
                Failure::Other(Error::Other("the decryption thread panicked".into()))
            })?;
            match (decrypted, copied) {
                (Err(e @ (DecryptError::Rejected { .. } | DecryptError::Read { .. })), _) => {
                    Err(Failure::Unsound(e.into()))
                }
                (_, Err(e)) => Err(Failure::Unsound(e)),
                (Err(e), Ok(_)) => Err(Failure::Unsound(e.into())),
                (Ok(Err(e)), Ok(_)) => Err(Failure::Other(Error::io("read", &self.path, e))),
                (Ok(Ok((_, sha))), Ok(_)) => Ok(sha),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;
    use crate::crypto::fernet::{Key, encrypt_stream};
    use crate::crypto::keys::Keys;
    use crate::db::{Database, SqliteTarget};
    use crate::inspect::kind::{Payload, classify};
    use crate::restore::check;
    use crate::restore::input::PrivateDir;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
        CREATE TABLE public.t (id integer);\n\nCOPY public.t (id) FROM stdin;\n1\n2\n\\.\n\n";
    const TRAILER: &str = "--\n-- PostgreSQL database dump complete\n--\n\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn sqlite_database(path: &Path) -> Vec<u8> {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        drop(conn);
        std::fs::read(path).unwrap()
    }

    /// Good and bad files of every kind, by name.
    fn files(dir: &Path, key: &Key) -> Vec<(&'static str, Vec<u8>, bool)> {
        let good_sql = format!("{DUMP}{TRAILER}");
        let good_gz = gzip(good_sql.as_bytes());
        let mut flipped = good_gz.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        let mut token = Vec::new();
        encrypt_stream(key, &good_gz[..], &mut token).unwrap();
        let mut tampered = token.clone();
        let at = tampered.len() / 2;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let db = sqlite_database(&dir.join("source.db"));
        vec![
            ("app.sql.gz", good_gz.clone(), true),
            ("app.sql", good_sql.clone().into_bytes(), true),
            ("no-trailer.sql.gz", gzip(DUMP.as_bytes()), false),
            (
                "meta-command.sql",
                format!("{DUMP}\\! id\n{TRAILER}").into_bytes(),
                false,
            ),
            (
                "server-file.sql.gz",
                gzip(format!("{DUMP}SELECT pg_read_file('/etc/passwd');\n{TRAILER}").as_bytes()),
                false,
            ),
            (
                "truncated.sql.gz",
                good_gz[..good_gz.len() / 2].to_vec(),
                false,
            ),
            ("flipped.sql.gz", flipped, false),
            ("empty.sql", Vec::new(), false),
            ("app.sql.gz.enc", token, true),
            ("tampered.sql.gz.enc", tampered, false),
            ("app.db", db.clone(), true),
            ("app.db.gz", gzip(&db), true),
            (
                "not-sqlite.db.gz",
                gzip(&b"not a database\n".repeat(500)),
                false,
            ),
            ("not-a-dump.dump", b"PGDMP but not really".to_vec(), false),
            ("not-a-dump.dump.gz", gzip(b"no archive here"), false),
        ]
    }

    /// The restore check's wording for a broken SQLite file is its own;
    /// the reason after it is the inspection's.
    fn same_reason(verify: &str, check: &str) -> bool {
        verify == check
            || verify
                .strip_prefix("SQLite integrity_check failed: ")
                .is_some_and(|r| check.strip_prefix("not a sound SQLite database: ") == Some(r))
    }

    #[tokio::test]
    async fn verify_and_the_restore_check_give_the_same_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate();
        let ring = KeyRing::parse(&key.to_base64()).unwrap();
        let keys = Keys::new(Some(ring.clone()), dir.path()).unwrap();
        let private = PrivateDir::at(dir.path().join("private")).unwrap();
        let postgres = Database::parse("postgresql://app@localhost/app", "DATABASE_URL").unwrap();
        let sqlite = Database::Sqlite(SqliteTarget {
            path: dir.path().join("live.db"),
        });
        let inbox = dir.path().join("inbox");
        std::fs::create_dir(&inbox).unwrap();
        for (name, bytes, sound) in files(dir.path(), &key) {
            let path = inbox.join(name);
            std::fs::write(&path, &bytes).unwrap();
            let verified = verify(&path, Ok(Some(&ring)), None).await;
            let kind = classify(name).unwrap();
            let database = match kind.payload {
                Payload::Sqlite => &sqlite,
                Payload::PlainSql | Payload::CustomDump => &postgres,
            };
            let checked = check::check(&path, kind, database, &keys, "stamp", &private).await;
            match (verified, checked) {
                (Ok(report), Ok(checked)) => {
                    assert!(sound, "{name} passed both, but is not sound");
                    assert_eq!(report.raw_bytes, checked.raw_bytes, "{name}");
                }
                (Err(Error::Verify { reason, .. }), Err(refused)) => {
                    assert!(!sound, "{name} failed both: {reason}");
                    let refused = refused.to_string();
                    assert!(
                        same_reason(&reason, &refused),
                        "{name}: verify says {reason:?}, the restore check {refused:?}"
                    );
                }
                (verified, checked) => panic!(
                    "{name}: verify says {:?}, the restore check {:?}",
                    verified.map(|r| r.kind),
                    checked.map(|c| c.kind)
                ),
            }
        }
    }
}
