//! S3 storage for finished backups: AWS S3 and S3-compatible servers (MinIO,
//! Garage, Ceph RGW…), through the official SDK.
//!
//! Uploads read the finished local file, so a failed upload never loses a
//! backup: small files go up in one PutObject, larger ones as a multipart
//! upload with a bounded number of parts in memory. Every part carries a
//! SHA-256 computed before it is sent, as a plain header: since early 2025 the
//! SDK otherwise sends CRC checksums as aws-chunked trailers, which many
//! S3-compatible servers reject. A multipart upload that fails or is cancelled
//! is aborted so its parts do not stay stored (and billed).
//!
//! Downloads stream into a hidden temporary file beside the destination,
//! hash on the way, and are renamed into place only when the SHA-256 matches
//! the `KEY.sha256` object (when there is one).
//!
//! By job: `settings` (what the variables mean, no network), `client` (the
//! SDK client and the options every write carries), `upload`, `download`,
//! `housekeeping` (unfinished multipart uploads), `errors` (wording); this
//! file lists and deletes, and implements [`RemoteStore`].

mod client;
mod download;
mod errors;
mod housekeeping;
mod settings;
mod upload;

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::StorageClass;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use self::errors::sdk_reason;
use crate::error::{Error, Result};

pub use self::housekeeping::IncompleteUpload;
pub use self::settings::{
    S3Settings, ServerSideEncryption, ValidS3Settings, normalize_prefix, parse_s3_url,
    parse_storage_class,
};
pub use self::upload::{MAX_PARTS, MIN_PART_SIZE, PARTS_IN_FLIGHT, SINGLE_PUT_MAX, part_size_for};
use crate::store::remote::RemoteStore;
pub use crate::store::remote::{Downloaded, RemoteObject, Uploaded};

/// A bucket and prefix to store backups under.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
}

impl S3Store {
    /// Every object directly under the prefix (objects in deeper "folders"
    /// are left out), sorted by name, all pages.
    pub async fn list(&self) -> Result<Vec<RemoteObject>> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut start_after: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .delimiter("/")
                .set_continuation_token(token.clone())
                .set_start_after(start_after.clone())
                .send()
                .await
                .map_err(|e| Error::storage("list", self.describe(), sdk_reason(&e)))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                objects.push(RemoteObject {
                    name: name.to_string(),
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified().and_then(to_chrono),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            if let Some(next) = page.next_continuation_token() {
                token = Some(next.to_string());
                continue;
            }
            // Some S3-compatible servers truncate without a continuation
            // token; carry on after the last key they returned.
            let last = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .chain(page.common_prefixes().iter().filter_map(|p| p.prefix()))
                .max()
                .map(str::to_string);
            if last.is_none() || last == start_after {
                return Err(Error::storage(
                    "list",
                    self.describe(),
                    "the server said the listing is truncated but gave no way to continue",
                ));
            }
            start_after = last;
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    /// Deletes the object called `name` (no error when it does not exist).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let key = self.key_for(name);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(target_url = %self.url_for(&key), "deleted");
                Ok(())
            }
            // S3 answers 204 for a missing key; some compatible servers say
            // NoSuchKey. Either way the object is gone, as wanted.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
            Err(e) => Err(Error::storage("delete", self.url_for(&key), sdk_reason(&e))),
        }
    }
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

#[async_trait::async_trait]
impl RemoteStore for S3Store {
    fn describe(&self) -> String {
        S3Store::describe(self)
    }

    fn location(&self, name: &str) -> String {
        self.url_for(&self.key_for(name))
    }

    async fn list(&self) -> Result<Vec<RemoteObject>> {
        S3Store::list(self).await
    }

    async fn put(&self, path: &Path, name: &str, cancel: &CancellationToken) -> Result<Uploaded> {
        self.upload(path, name, cancel).await
    }

    async fn require_checksum(&self, name: &str) -> Result<String> {
        self.require_sidecar(&self.key_for(name)).await
    }

    async fn get_checked(
        &self,
        name: &str,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded> {
        self.download_checked(&self.key_for(name), dest, cancel)
            .await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        S3Store::delete(self, name).await
    }

    async fn clean_up_stale_uploads(
        &self,
        older_than: Duration,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        Ok(self.abort_stale_uploads(older_than, now).await?.len())
    }
}
