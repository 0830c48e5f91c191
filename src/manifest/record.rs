//! `NAME.manifest.json`: what a backup holds, written beside it.
//!
//! The manifest is written by backupd, but it is read from places anyone
//! with write access to `BACKUP_DIR`, the watch folder or the bucket can
//! fill: reading it never follows a link, never blocks on a FIFO, takes at
//! most [`MAX_MANIFEST_BYTES`], and a manifest is only ever believed for the
//! file whose SHA-256 it records ([`Manifest::describes`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest format this version writes. A reader refuses a newer one
/// instead of guessing what its fields mean.
pub const FORMAT_VERSION: u32 = 1;

/// `NAME` + this is the manifest of backup `NAME`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Far above any real manifest (a table name and a number per line); a
/// bigger file is not ours.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What a backup holds, as the backup itself saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The backup's file name (no folder).
    pub backup: String,
    pub database: DatabaseInfo,
    /// The database server's version (`server_version` of PostgreSQL,
    /// the SQLite library's version for SQLite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// `pg_dump --version`'s number (PostgreSQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_version: Option<String>,
    /// RFC 3339, UTC: when the dump (snapshot) began and when the file was complete.
    pub started_at: String,
    pub finished_at: String,
    /// The file as stored (the `.enc` token for an encrypted backup).
    pub file: Digest,
    /// For an encrypted backup, the gzip stream inside the token: what the
    /// app's restore page writes when it decrypts, so that copy still finds
    /// its manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<Digest>,
    /// Bytes of the dump (snapshot) before compression.
    pub uncompressed_bytes: u64,
    /// Every table's row count, by name: `schema.table` as pg_dump writes
    /// it (quoted where needed) for PostgreSQL, the table name for SQLite.
    pub tables: BTreeMap<String, u64>,
}

/// The database a backup was taken of: never credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// `postgres` or `sqlite`.
    pub kind: String,
    /// The database name (PostgreSQL) or the file name (SQLite).
    pub name: String,
}

/// Size and SHA-256 (lower-case hex) of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refused the manifest {}: {why}", .path.display())]
    Refused { path: PathBuf, why: String },
    #[error("the manifest {} is not valid: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
}

impl Manifest {
    /// Whether this manifest is the one of a file with this SHA-256: the
    /// stored file's, or (encrypted backups) the gzip inside it.
    pub fn describes(&self, sha256: &str) -> bool {
        let sha256 = sha256.to_ascii_lowercase();
        self.file.sha256 == sha256 || self.gzip.as_ref().is_some_and(|g| g.sha256 == sha256)
    }

    /// The manifest as written to disk: pretty JSON and a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates manifest bytes read from `path` (for messages).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |why: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        // The version first, so a newer format says so instead of failing
        // on a field it renamed.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("{e}")))?;
        if version.format_version > FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version {} is newer than this backupd understands ({FORMAT_VERSION}); upgrade backupd",
                version.format_version
            )));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("{e}")))?;
        for digest in std::iter::once(&manifest.file).chain(manifest.gzip.as_ref()) {
            if digest.sha256.len() != 64
                || !digest
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(format!(
                    "'{}' is not a lower-case SHA-256",
                    digest.sha256
                )));
            }
        }
        Ok(manifest)
    }

    /// Reads the manifest at `path`; `None` when there is no such file. A
    /// link, a FIFO, a file with a second hard link or a huge file is
    /// refused, never read.
    pub fn read(path: &Path) -> Result<Option<Manifest>, ManifestError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let refused = |why: &str| ManifestError::Refused {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused("it is a symbolic link, which is never followed"));
            }
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(refused("it is not a regular file"));
        }
        if meta.nlink() > 1 {
            return Err(refused("it has another hard link"));
        }
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(refused(&format!(
                "it is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        Manifest::from_json(&bytes, path).map(Some)
    }
}

/// `NAME.manifest.json` beside the backup at `backup`.
pub fn manifest_path(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(MANIFEST_SUFFIX);
    PathBuf::from(name)
}

/// True for a manifest's file name (never a backup of its own).
pub fn is_manifest_name(name: &str) -> bool {
    name.ends_with(MANIFEST_SUFFIX)
}

#[cfg(test)]
pub(crate) mod samples {
    use super::*;

    /// A PostgreSQL backup's manifest with the given tables.
    pub fn postgres(backup: &str, sha256: &str, tables: &[(&str, u64)]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            backup: backup.to_string(),
            database: DatabaseInfo {
                kind: "postgres".into(),
                name: "app".into(),
            },
            server_version: Some("18.1".into()),
            pg_dump_version: Some("18.1".into()),
            started_at: "2026-12-01T03:00:00Z".into(),
            finished_at: "2026-12-01T03:00:05Z".into(),
            file: Digest {
                size: 1234,
                sha256: sha256.to_string(),
            },
            gzip: None,
            uncompressed_bytes: 5678,
            tables: tables
                .iter()
                .map(|(name, rows)| (name.to_string(), *rows))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_manifest_reads_back_as_written_and_describes_its_file_and_inner_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = samples::postgres(
            "pg_dump-20261201T030000Z.sql.gz.enc",
            SHA,
            &[("public.users", 3)],
        );
        let inner = "f".repeat(64);
        manifest.gzip = Some(Digest {
            size: 1000,
            sha256: inner.clone(),
        });
        let path = manifest_path(&dir.path().join(&manifest.backup));
        assert!(path.ends_with("pg_dump-20261201T030000Z.sql.gz.enc.manifest.json"));
        std::fs::write(&path, manifest.to_json()).unwrap();
        let read = Manifest::read(&path).unwrap().unwrap();
        assert_eq!(read, manifest);
        assert!(read.describes(SHA));
        assert!(read.describes(&inner.to_uppercase()));
        assert!(!read.describes(&"e".repeat(64)));
    }

    #[test]
    fn a_missing_manifest_is_none_and_links_fifos_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Manifest::read(&dir.path().join("x.manifest.json"))
                .unwrap()
                .is_none()
        );

        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, b"{}").unwrap();
        let link = dir.path().join("link.manifest.json");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let err = Manifest::read(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");

        let fifo = dir.path().join("fifo.manifest.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Manifest::read(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let junk = dir.path().join("junk.manifest.json");
        std::fs::write(&junk, b"not json").unwrap();
        let err = Manifest::read(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.manifest.json") && err.contains("not valid"),
            "{err}"
        );
    }

    #[test]
    fn a_newer_format_or_a_bad_digest_is_refused_with_the_reason() {
        let path = Path::new("m.manifest.json");
        let mut manifest = samples::postgres("b.sql.gz", SHA, &[]);
        manifest.format_version = FORMAT_VERSION + 1;
        let err = Manifest::from_json(&manifest.to_json(), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer") && err.contains("upgrade"), "{err}");
        manifest.format_version = FORMAT_VERSION;
        manifest.file.sha256 = "../../etc/passwd".into();
        let err = Manifest::from_json(&manifest.to_json(), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256"), "{err}");
    }
}
