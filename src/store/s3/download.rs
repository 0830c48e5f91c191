//! Checked downloads: streamed into a private temporary file beside the
//! destination while hashing, renamed into place only when the SHA-256
//! matches the `KEY.sha256` object (when there is one).

use std::path::{Path, PathBuf};

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::S3Store;
use super::errors::{error_chain, sdk_reason};
use crate::error::{Error, Result};
use crate::store::remote::{Downloaded, parse_sidecar};

/// The longest a `KEY.sha256` object may be; anything bigger is not one.
const SIDECAR_MAX_BYTES: usize = 4096;

/// Whether a download without a `KEY.sha256` object is taken unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sidecar {
    IfPresent,
    Required,
}

impl S3Store {
    /// Downloads the object `key` (a full key, as from [`crate::store::remote::RemoteObject::key`]
    /// or [`super::parse_s3_url`]) to `dest`: streamed into a private random-named
    /// temporary file beside it ([`crate::files::temp_in`], never through a
    /// planted link) while hashing, checked against `KEY.sha256` when that
    /// object exists, fsynced and renamed. On any failure the temporary file
    /// is removed and `dest` is untouched.
    pub async fn download(
        &self,
        key: &str,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded> {
        self.fetch(key, dest, Sidecar::IfPresent, cancel).await
    }

    /// [`S3Store::download`], refusing (before anything is written) an
    /// object without its `KEY.sha256` as [`S3Store::require_sidecar`] does.
    pub async fn download_checked(
        &self,
        key: &str,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded> {
        self.fetch(key, dest, Sidecar::Required, cancel).await
    }

    async fn fetch(
        &self,
        key: &str,
        dest: &Path,
        sidecar: Sidecar,
        cancel: &CancellationToken,
    ) -> Result<Downloaded> {
        let url = self.url_for(key);
        let action = format!("download {url} to");
        let fail =
            |reason: String| Error::storage(action.clone(), dest.display().to_string(), reason);
        if dest.file_name().is_none() {
            return Err(fail("the destination has no file name".into()));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };

        let expected = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            sidecar = self.expected_sha256(key) => sidecar?,
        };
        if expected.is_none() && sidecar == Sidecar::Required {
            return Err(self.no_sidecar(key));
        }
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            response = self.client.get_object().bucket(&self.bucket).key(key).send() => {
                response.map_err(|e| Error::storage("download", &url, sdk_reason(&e)))?
            }
        };
        let Received {
            temp,
            bytes,
            sha256,
        } = receive(response, &dir, None, &fail, cancel).await?;
        if let Some(expected) = &expected
            && *expected != sha256
        {
            return Err(fail(format!(
                "checksum mismatch: the object's SHA-256 is {sha256} but {key}.sha256 says \
                 {expected}; the download was discarded"
            )));
        }
        put_in_place(temp, dest, &dir).await?;
        tracing::info!(source = %url, dest = %dest.display(), bytes,
            checksum_verified = expected.is_some(), "downloaded");
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            sha256,
            checksum_verified: expected.is_some(),
        })
    }

    /// Downloads the object `key` to `dest` when the bucket has it (`None`
    /// when it does not), refusing one larger than `max_bytes` before or
    /// while it streams: for a backup's companion that has no `.sha256` of
    /// its own (its manifest, believed only for the SHA-256 it records).
    /// Written like [`S3Store::download`]: a private temporary file beside
    /// `dest`, fsynced and renamed; on any failure `dest` is untouched.
    pub async fn download_if_present(
        &self,
        key: &str,
        dest: &Path,
        max_bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<Downloaded>> {
        let url = self.url_for(key);
        let action = format!("download {url} to");
        let fail =
            |reason: String| Error::storage(action.clone(), dest.display().to_string(), reason);
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            response = self.client.get_object().bucket(&self.bucket).key(key).send() => response,
        };
        let response = match response {
            Ok(response) => response,
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                tracing::debug!(object = %url, "not in the bucket");
                return Ok(None);
            }
            Err(e) => return Err(Error::storage("download", url, sdk_reason(&e))),
        };
        let Received {
            temp,
            bytes,
            sha256,
        } = receive(response, &dir, Some(max_bytes), &fail, cancel).await?;
        put_in_place(temp, dest, &dir).await?;
        tracing::info!(source = %url, dest = %dest.display(), bytes, "downloaded");
        Ok(Some(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            sha256,
            checksum_verified: false,
        }))
    }

    /// Fails unless `KEY.sha256` exists and is a checksum line for `key`:
    /// restores take only objects backupd uploaded completely (the data
    /// first, its `.sha256` last).
    pub async fn require_sidecar(&self, key: &str) -> Result<String> {
        self.expected_sha256(key)
            .await?
            .ok_or_else(|| self.no_sidecar(key))
    }

    fn no_sidecar(&self, key: &str) -> Error {
        Error::storage(
            "restore",
            self.url_for(key),
            format!(
                "there is no {key}.sha256 object beside it; backupd uploads one after every backup, so this object is not a complete backupd upload (refused)"
            ),
        )
    }

    /// The hex SHA-256 from the `KEY.sha256` object, `None` when there is
    /// none; an object that is not a `sha256sum` line for this key is an error.
    async fn expected_sha256(&self, key: &str) -> Result<Option<String>> {
        let sidecar_key = format!("{key}.sha256");
        let url = self.url_for(&sidecar_key);
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&sidecar_key)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                tracing::debug!(sidecar = %url, "no checksum object; the download is not checked");
                return Ok(None);
            }
            Err(e) => return Err(Error::storage("download", url, sdk_reason(&e))),
        };
        if response
            .content_length()
            .is_some_and(|l| l > SIDECAR_MAX_BYTES as i64)
        {
            return Err(Error::storage(
                "use the checksum",
                url,
                "it is too large to be a sha256sum line",
            ));
        }
        let data = response
            .body
            .collect()
            .await
            .map_err(|e| Error::storage("download", &url, error_chain(&e)))?
            .into_bytes();
        let object_name = key.rsplit('/').next().unwrap_or(key);
        parse_sidecar(&data, object_name)
            .map(Some)
            .map_err(|why| Error::storage("use the checksum", url, why))
    }
}

/// An object received into a private temporary file, not yet in place.
struct Received {
    /// Removed when dropped, unless persisted.
    temp: tempfile::NamedTempFile,
    bytes: u64,
    /// Hex SHA-256 of what was written.
    sha256: String,
}

/// Streams the object's body into a private random-named file in `dir`
/// while hashing, fsynced; the transfer must be as long as the server
/// said, and no longer than `limit` when there is one (refused as soon as
/// the server announces more, or more arrives).
async fn receive(
    response: GetObjectOutput,
    dir: &Path,
    limit: Option<u64>,
    fail: &(dyn Fn(String) -> Error + Sync),
    cancel: &CancellationToken,
) -> Result<Received> {
    let too_large = |limit: u64| fail(format!("it is larger than {limit} bytes (refused)"));
    let expected_len = response
        .content_length()
        .filter(|l| *l >= 0)
        .map(|l| l as u64);
    if let (Some(len), Some(limit)) = (expected_len, limit)
        && len > limit
    {
        return Err(too_large(limit));
    }
    let mut body = response.body;
    let temp =
        crate::files::temp_in(dir).map_err(|e| Error::io("create a temporary file in", dir, e))?;
    let partial = temp.path().to_path_buf();
    let mut file = tokio::fs::File::from_std(
        temp.as_file()
            .try_clone()
            .map_err(|e| Error::io("create", &partial, e))?,
    );
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            chunk = body.next() => chunk,
        };
        match chunk {
            None => break,
            Some(Ok(data)) => {
                bytes += data.len() as u64;
                if let Some(limit) = limit
                    && bytes > limit
                {
                    return Err(too_large(limit));
                }
                hasher.update(&data);
                file.write_all(&data)
                    .await
                    .map_err(|e| Error::io("write", &partial, e))?;
            }
            Some(Err(e)) => return Err(fail(error_chain(&e))),
        }
    }
    file.flush()
        .await
        .map_err(|e| Error::io("write", &partial, e))?;
    file.sync_all()
        .await
        .map_err(|e| Error::io("fsync", &partial, e))?;
    drop(file);
    if let Some(len) = expected_len
        && len != bytes
    {
        return Err(fail(format!(
            "the transfer ended after {bytes} of {len} bytes"
        )));
    }
    Ok(Received {
        temp,
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Renames a received file to `dest` (a link planted there is replaced,
/// not followed) and fsyncs the folder.
async fn put_in_place(temp: tempfile::NamedTempFile, dest: &Path, dir: &Path) -> Result<()> {
    temp.persist(dest)
        .map_err(|e| Error::io("rename into place", dest, e.error))?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::archive::sync_dir(&dir))
        .await
        .map_err(|e| Error::Other(format!("the fsync task failed: {e}")))?
}
