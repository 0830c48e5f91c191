//! The bucket, seen by name: what the offsite pass, `list --remote` and
//! `restore --from-s3` need of a remote store, with the S3 implementation
//! ([`crate::store::s3`]) and an in-memory one ([`crate::store::memory`])
//! that unit tests drive in milliseconds. [`crate::store::conformance`]
//! is the one suite both pass.
//!
//! Names are file names (`pg_dump-….sql.gz`, `….sha256`); where they live
//! (a key prefix) is the store's business.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;

#[async_trait::async_trait]
pub trait RemoteStore: Send + Sync {
    /// Where the store is, for logs and messages (`s3://bucket/prefix/`).
    fn describe(&self) -> String;

    /// Where the object called `name` is, for logs and messages.
    fn location(&self, name: &str) -> String;

    /// Every object in the store, sorted by name.
    async fn list(&self) -> Result<Vec<RemoteObject>>;

    /// Uploads the finished local file `path` as `name`, replacing any
    /// object of that name; what arrives is checked against the SHA-256 of
    /// what was read. Cancelling leaves no partial object
    /// ([`crate::Error::Cancelled`]).
    async fn put(&self, path: &Path, name: &str, cancel: &CancellationToken) -> Result<Uploaded>;

    /// The hex SHA-256 recorded in `NAME.sha256`. Fails when there is none:
    /// backupd uploads the data first and its checksum last, so an object
    /// without one is not a complete upload of ours.
    async fn require_checksum(&self, name: &str) -> Result<String>;

    /// Downloads `name` to `dest` through a private temporary file beside
    /// it, renamed into place only when its SHA-256 matches `NAME.sha256`;
    /// without that object nothing is written. On any failure `dest` is
    /// untouched.
    async fn get_checked(
        &self,
        name: &str,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded>;

    /// Deletes the object called `name`; one that does not exist is gone
    /// already, which is not an error.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Frees what uploads that started more than `older_than` before `now`
    /// and never finished still keep stored; returns how many there were.
    async fn clean_up_stale_uploads(
        &self,
        older_than: Duration,
        now: DateTime<Utc>,
    ) -> Result<usize>;
}

/// One stored object (for S3: under the store's prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// The key without the prefix: a backup or sidecar file name.
    pub name: String,
    /// The full key (for S3 with the prefix; the name elsewhere).
    pub key: String,
    pub size: u64,
    /// `None` only when the server did not say.
    pub last_modified: Option<DateTime<Utc>>,
}

/// The result of [`RemoteStore::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub key: String,
    pub bytes: u64,
    /// 1 for a single PutObject, else the number of multipart parts.
    pub parts: usize,
}

/// The result of a download ([`RemoteStore::get_checked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Hex SHA-256 of what was written.
    pub sha256: String,
    /// Whether a `KEY.sha256` object existed and matched (without one, the
    /// content is unchecked here).
    pub checksum_verified: bool,
}

/// Checks a `sha256sum` line (`HEX  NAME`, or `HEX *NAME`) for the object
/// `object_name` and returns the lower-case hex digest.
pub(crate) fn parse_sidecar(data: &[u8], object_name: &str) -> std::result::Result<String, String> {
    let text = std::str::from_utf8(data).map_err(|_| "it is not text".to_string())?;
    let line = text.lines().next().unwrap_or("").trim_end();
    let (hex, name) = line
        .split_once(char::is_whitespace)
        .map(|(h, n)| (h, n.trim_start().trim_start_matches('*')))
        .unwrap_or((line, ""));
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{}` is not a sha256sum line", truncate(line, 100)));
    }
    // sha256sum writes the name as it was given (maybe with a directory);
    // a different file name means the checksum belongs to another file.
    let listed = name.rsplit('/').next().unwrap_or(name);
    if !listed.is_empty() && listed != object_name {
        return Err(format!(
            "it is the checksum of `{listed}`, not of `{object_name}`"
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_parse_like_sha256sum_check() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_sidecar(format!("{hex}  x.sql.gz\n").as_bytes(), "x.sql.gz").unwrap(),
            hex
        );
        assert_eq!(
            parse_sidecar(
                format!("{}  /backups/x.sql.gz\n", hex.to_uppercase()).as_bytes(),
                "x.sql.gz"
            )
            .unwrap(),
            hex
        );
        assert_eq!(
            parse_sidecar(format!("{hex} *x.sql.gz").as_bytes(), "x.sql.gz").unwrap(),
            hex
        );
        assert_eq!(parse_sidecar(hex.as_bytes(), "x.sql.gz").unwrap(), hex);
        assert!(parse_sidecar(b"not a checksum  x.sql.gz\n", "x.sql.gz").is_err());
        assert!(parse_sidecar(format!("{hex}  y.sql.gz\n").as_bytes(), "x.sql.gz").is_err());
        assert!(parse_sidecar(&[0xff, 0xfe], "x").is_err());
    }
}
