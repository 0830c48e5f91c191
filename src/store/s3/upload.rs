//! Uploads: one PutObject for small files, else a multipart upload with a
//! bounded number of parts in memory, each with a SHA-256 computed before it
//! is sent; a multipart upload that fails or is cancelled is aborted.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::S3Store;
use super::client::{COMPLETE_ATTEMPT_TIMEOUT, WriteOptions, attempt_timeout};
use super::errors::sdk_reason;
use crate::error::{Error, Result};
use crate::store::remote::Uploaded;

const MIB: u64 = 1024 * 1024;

/// Files up to this size go up in one PutObject: one request is cheaper and
/// simpler than a multipart upload, and this much fits in memory.
pub const SINGLE_PUT_MAX: u64 = 16 * MIB;

/// The smallest part of a multipart upload. S3 requires 5 MiB; 8 MiB halves
/// the request count at the same memory bound.
pub const MIN_PART_SIZE: u64 = 8 * MIB;

/// S3 allows at most 10,000 parts per upload.
pub const MAX_PARTS: u64 = 10_000;

/// S3 refuses parts larger than 5 GiB.
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;

/// S3 refuses objects larger than 5 TiB.
const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * MIB;

/// Parts uploaded at the same time. Each holds its part in memory, so an
/// upload needs at most `PARTS_IN_FLIGHT × part size` of buffers (24 MiB for
/// files up to 78 GiB). Three keep a link busy while staying well inside the
/// 64 MiB budget once the allocator's per-thread caches are counted
/// (bench/results/2026-11-29-offsite.md measured 4 at 63.7 MiB peak RSS).
pub const PARTS_IN_FLIGHT: usize = 3;

/// The part size for a file of `size` bytes: [`MIN_PART_SIZE`], grown in
/// whole MiB until the file fits in [`MAX_PARTS`] parts.
pub fn part_size_for(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    needed.div_ceil(MIB).saturating_mul(MIB).max(MIN_PART_SIZE)
}

/// How long one attempt to send `bytes` may take before it is retried: a
/// backstop behind the stall detection, generous enough for a slow uplink
/// shared by [`PARTS_IN_FLIGHT`] parts (256 KiB/s in total).
fn transfer_attempt_timeout(bytes: u64) -> Duration {
    let shared = bytes.saturating_mul(PARTS_IN_FLIGHT as u64);
    Duration::from_secs(300 + shared / (256 * 1024))
}

impl S3Store {
    /// Uploads the finished file `path` as `name` under the prefix, replacing
    /// any object of that name. Cancelling stops the transfer and aborts the
    /// multipart upload; the result is then [`Error::Cancelled`].
    pub async fn upload(
        &self,
        path: &Path,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<Uploaded> {
        let key = self.key_for(name);
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::io("read", path, e))?
            .len();
        if size > MAX_OBJECT_SIZE {
            return Err(Error::storage(
                format!("upload {} to", path.display()),
                self.url_for(&key),
                format!("{size} bytes is more than S3's 5 TiB object limit"),
            ));
        }
        let started = Instant::now();
        let parts = if size <= SINGLE_PUT_MAX {
            self.put_single(path, &key, cancel).await?;
            1
        } else {
            self.put_multipart(path, &key, size, cancel).await?
        };
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            target_url = %self.url_for(&key),
            bytes = size,
            parts,
            seconds,
            mib_per_second = size as f64 / MIB as f64 / seconds.max(1e-3),
            "uploaded"
        );
        Ok(Uploaded {
            key,
            bytes: size,
            parts,
        })
    }

    async fn put_single(&self, path: &Path, key: &str, cancel: &CancellationToken) -> Result<()> {
        let action = format!("upload {} to", path.display());
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| Error::io("read", path, e))?;
        let timeout = transfer_attempt_timeout(data.len() as u64);
        let send = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(sha256_base64(&data))
            .body(ByteStream::from(data))
            .with_write_options(self)
            .customize()
            .config_override(attempt_timeout(timeout))
            .send();
        tokio::select! {
            _ = cancel.cancelled() => Err(Error::Cancelled),
            result = send => result
                .map(|_| ())
                .map_err(|e| Error::storage(action, self.url_for(key), sdk_reason(&e))),
        }
    }

    async fn put_multipart(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        cancel: &CancellationToken,
    ) -> Result<usize> {
        let url = self.url_for(key);
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .with_write_options(self);
        let created = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            result = create.send() => result.map_err(|e| {
                Error::storage(
                    format!("start a multipart upload of {} to", path.display()),
                    &url,
                    sdk_reason(&e),
                )
            })?,
        };
        let upload_id = created.upload_id().map(str::to_string).ok_or_else(|| {
            Error::storage(
                format!("start a multipart upload of {} to", path.display()),
                &url,
                "the server returned no upload id",
            )
        })?;
        tracing::debug!(target_url = %url, upload_id, "multipart upload started");

        let result = match self.upload_parts(path, key, &upload_id, size, cancel).await {
            Ok(parts) if cancel.is_cancelled() => {
                drop(parts);
                Err(Error::Cancelled)
            }
            Ok(parts) => self.complete(path, key, &upload_id, parts).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::warn!(target_url = %url, upload_id, error = %e,
                "multipart upload failed; aborting it");
            if let Err(abort) = self.abort_upload(key, &upload_id).await {
                tracing::warn!(target_url = %url, upload_id, error = %abort,
                    "could not abort the multipart upload: its parts stay stored (and billed) \
                     until it is aborted (S3Store::abort_stale_uploads, or a bucket lifecycle \
                     rule AbortIncompleteMultipartUpload)");
            }
        }
        result
    }

    /// Uploads every part, at most [`PARTS_IN_FLIGHT`] at a time, each read
    /// from the file just before it is sent. Returns the parts in order.
    async fn upload_parts(
        &self,
        path: &Path,
        key: &str,
        upload_id: &str,
        size: u64,
        cancel: &CancellationToken,
    ) -> Result<Vec<CompletedPart>> {
        let part_size = part_size_for(size);
        let count = size.div_ceil(part_size);
        if part_size > MAX_PART_SIZE || count > MAX_PARTS {
            return Err(Error::storage(
                format!("upload {} to", path.display()),
                self.url_for(key),
                format!("{size} bytes do not fit in {MAX_PARTS} parts of at most 5 GiB"),
            ));
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io("open", path, e))?;
        let mut tasks: JoinSet<Result<CompletedPart>> = JoinSet::new();
        let mut done = Vec::with_capacity(count as usize);
        let result: Result<()> = async {
            for number in 1..=count {
                // Wait for a free slot before reading, so no more than
                // PARTS_IN_FLIGHT part buffers exist at any time.
                while tasks.len() >= PARTS_IN_FLIGHT {
                    done.push(next_part(&mut tasks, cancel).await?);
                }
                if cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let len = part_size.min(size - (number - 1) * part_size);
                let mut data = vec![0; len as usize];
                file.read_exact(&mut data)
                    .await
                    .map_err(|e| Error::io("read", path, e))?;
                let checksum = sha256_base64(&data);
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number as i32)
                    .checksum_sha256(&checksum)
                    .body(ByteStream::from(data))
                    .customize()
                    .config_override(attempt_timeout(transfer_attempt_timeout(len)));
                let action = format!("upload {} (part {number} of {count}) to", path.display());
                let url = self.url_for(key);
                tasks.spawn(async move {
                    let output = request
                        .send()
                        .await
                        .map_err(|e| Error::storage(action, &url, sdk_reason(&e)))?;
                    tracing::debug!(target_url = %url, part = number, of = count, bytes = len,
                        "part uploaded");
                    Ok(CompletedPart::builder()
                        .part_number(number as i32)
                        .set_e_tag(output.e_tag().map(str::to_string))
                        .checksum_sha256(checksum)
                        .build())
                });
            }
            while !tasks.is_empty() {
                done.push(next_part(&mut tasks, cancel).await?);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Stop and wait for the parts still in flight before the caller
            // aborts the upload, so none lands after the abort.
            tasks.shutdown().await;
            return Err(e);
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    async fn complete(
        &self,
        path: &Path,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<usize> {
        let count = parts.len();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(attempt_timeout(COMPLETE_ATTEMPT_TIMEOUT))
            .send()
            .await
            .map_err(|e| {
                Error::storage(
                    format!("complete the upload of {} to", path.display()),
                    self.url_for(key),
                    sdk_reason(&e),
                )
            })?;
        Ok(count)
    }
}

/// Waits for the next finished part, or for cancellation.
async fn next_part(
    tasks: &mut JoinSet<Result<CompletedPart>>,
    cancel: &CancellationToken,
) -> Result<CompletedPart> {
    tokio::select! {
        _ = cancel.cancelled() => Err(Error::Cancelled),
        joined = tasks.join_next() => match joined {
            Some(Ok(part)) => part,
            Some(Err(e)) => Err(Error::Other(format!("a part upload task failed: {e}"))),
            None => Err(Error::Other("no part upload in flight".into())),
        },
    }
}

fn sha256_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_start_at_8_mib_and_keep_within_10000_parts() {
        assert_eq!(part_size_for(SINGLE_PUT_MAX + 1), MIN_PART_SIZE);
        assert_eq!(part_size_for(MIN_PART_SIZE * MAX_PARTS), MIN_PART_SIZE);
        assert_eq!(part_size_for(MIN_PART_SIZE * MAX_PARTS + 1), 9 * MIB);
        for size in [
            100 * MIB,
            80 * 1024 * MIB,
            1024 * 1024 * MIB,
            MAX_OBJECT_SIZE,
        ] {
            let part = part_size_for(size);
            assert!(
                part >= MIN_PART_SIZE && part.is_multiple_of(MIB),
                "{size}: {part}"
            );
            assert!(size.div_ceil(part) <= MAX_PARTS, "{size}: {part}");
            assert!(part <= MAX_PART_SIZE, "{size}: {part}");
        }
        assert_eq!(part_size_for(MAX_OBJECT_SIZE), 525 * MIB);
    }
}
