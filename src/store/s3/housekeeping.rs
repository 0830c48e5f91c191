//! Multipart uploads that were started and never finished: listed and
//! aborted, since their parts stay stored (and billed) until then.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::errors::sdk_reason;
use super::{S3Store, to_chrono};
use crate::error::{Error, Result};

/// A multipart upload that was started and neither completed nor aborted;
/// its parts are stored and billed until it is aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

impl S3Store {
    /// Aborts one multipart upload, freeing its parts.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(target_url = %self.url_for(key), upload_id, "multipart upload aborted");
                Ok(())
            }
            // Already gone (completed or aborted meanwhile): nothing is stored.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(Error::storage(
                format!("abort the multipart upload {upload_id} of"),
                self.url_for(key),
                sdk_reason(&e),
            )),
        }
    }

    /// Multipart uploads under the prefix that were started and never
    /// completed nor aborted (all pages).
    pub async fn incomplete_uploads(&self) -> Result<Vec<IncompleteUpload>> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(upload_id_marker.clone())
                .send()
                .await
                .map_err(|e| {
                    Error::storage(
                        "list the incomplete multipart uploads in",
                        self.describe(),
                        sdk_reason(&e),
                    )
                })?;
            for upload in page.uploads() {
                if let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) {
                    uploads.push(IncompleteUpload {
                        key: key.to_string(),
                        upload_id: upload_id.to_string(),
                        initiated: upload.initiated().and_then(to_chrono),
                    });
                }
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if page.is_truncated() != Some(true)
                || next.0.is_none()
                || (next.0 == key_marker && next.1 == upload_id_marker)
            {
                break;
            }
            (key_marker, upload_id_marker) = next;
        }
        Ok(uploads)
    }

    /// Aborts the incomplete multipart uploads under the prefix that started
    /// more than `older_than` before `now` (an upload still running elsewhere is
    /// younger; one without a start time is left alone). Meant for the start
    /// of a backup run: it removes what an upload that could not abort (the
    /// server was unreachable) left behind. Returns the uploads aborted.
    pub async fn abort_stale_uploads(
        &self,
        older_than: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<IncompleteUpload>> {
        let cutoff = now - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut aborted = Vec::new();
        let mut failure = None;
        for upload in self.incomplete_uploads().await? {
            if upload.initiated.is_none_or(|t| t >= cutoff) {
                continue;
            }
            match self.abort_upload(&upload.key, &upload.upload_id).await {
                Ok(()) => aborted.push(upload),
                Err(e) => {
                    tracing::warn!(error = %e, "could not abort a stale multipart upload");
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(aborted),
        }
    }
}
