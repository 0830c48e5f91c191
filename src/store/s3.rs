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

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    ServerSideEncryption as SdkServerSideEncryption, StorageClass,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

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

/// Attempts per request (the first plus retries), with the SDK's standard
/// exponential backoff with jitter, on throttling, 5xx and network errors.
const MAX_ATTEMPTS: u32 = 5;

/// The region when none is configured or found (and for custom endpoints,
/// which ignore it but need one to sign requests).
const DEFAULT_REGION: &str = "us-east-1";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Small requests (list, delete, create/abort an upload) that take longer
/// than this are retried.
const REQUEST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// CompleteMultipartUpload can take minutes on AWS for large objects (the
/// service keeps the connection alive meanwhile).
const COMPLETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A body transfer (either way) that moves no bytes for this long fails and
/// is retried; this is what keeps a part from hanging forever on a dead
/// connection.
const STALL_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// The longest a `KEY.sha256` object may be; anything bigger is not one.
const SIDECAR_MAX_BYTES: usize = 4096;

/// Server-side encryption applied to every object this store writes
/// (`AWS_S3_SSE`, `AWS_S3_SSE_KMS_KEY_ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// SSE-S3: keys managed by the service (`AES256`).
    Aes256,
    /// SSE-KMS (`aws:kms`), with the bucket's default KMS key when `key_id`
    /// is `None`.
    Kms { key_id: Option<String> },
}

impl ServerSideEncryption {
    /// Parses `AWS_S3_SSE` (`AES256` or `aws:kms`, any case; empty means none)
    /// together with `AWS_S3_SSE_KMS_KEY_ID`. Errors name the variable.
    pub fn parse(sse: &str, kms_key_id: Option<&str>) -> Result<Option<Self>> {
        let key_id = kms_key_id
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        match sse.trim().to_ascii_lowercase().as_str() {
            "" => match key_id {
                Some(_) => Err(Error::Config(
                    "AWS_S3_SSE_KMS_KEY_ID is set but AWS_S3_SSE is not `aws:kms`".into(),
                )),
                None => Ok(None),
            },
            "aes256" => match key_id {
                Some(_) => Err(Error::Config(
                    "AWS_S3_SSE_KMS_KEY_ID only applies with AWS_S3_SSE=aws:kms, not AES256".into(),
                )),
                None => Ok(Some(ServerSideEncryption::Aes256)),
            },
            "aws:kms" | "kms" => Ok(Some(ServerSideEncryption::Kms { key_id })),
            _ => Err(Error::Config(format!(
                "AWS_S3_SSE=`{}` is not a server-side encryption: use AES256 or aws:kms",
                sse.trim()
            ))),
        }
    }
}

/// The storage classes S3 knows. Checked up front so a typo fails at start-up
/// with the variable's name, not at the first upload hours later.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// Validates `AWS_S3_STORAGE_CLASS` (any case; empty means the bucket's
/// default) and returns it in S3's spelling.
pub fn parse_storage_class(value: &str) -> Result<Option<String>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let upper = value.to_ascii_uppercase();
    if STORAGE_CLASSES.contains(&upper.as_str()) {
        Ok(Some(upper))
    } else {
        Err(Error::Config(format!(
            "AWS_S3_STORAGE_CLASS=`{value}` is not an S3 storage class (one of {})",
            STORAGE_CLASSES.join(", ")
        )))
    }
}

/// Where and how to store objects. The caller reads the environment (and
/// `*_FILE` secrets); nothing here reads it except the SDK's own credential
/// and region chains when the explicit values are `None`.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `AWS_S3_BUCKET`.
    pub bucket: String,
    /// Key prefix, `""` or a folder such as `backups/prod`; normalised by
    /// [`normalize_prefix`] (no leading `/`, one trailing `/`).
    pub prefix: String,
    /// `AWS_REGION`; `None` uses the SDK's region chain (profile, IMDS) for
    /// AWS itself and `us-east-1` when an endpoint is set.
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL` of an S3-compatible server (`http://minio:9000`).
    pub endpoint: Option<String>,
    /// `AWS_S3_FORCE_PATH_STYLE`: `http://host/bucket/key` instead of
    /// `http://bucket.host/key`, which most self-hosted servers need.
    pub force_path_style: bool,
    /// `AWS_S3_STORAGE_CLASS`, checked by [`parse_storage_class`].
    pub storage_class: Option<String>,
    /// `AWS_S3_SSE` (+ `AWS_S3_SSE_KMS_KEY_ID`), see
    /// [`ServerSideEncryption::parse`].
    pub sse: Option<ServerSideEncryption>,
    /// Send checksums only where the API requires them and validate response
    /// checksums only then. Should be `true` whenever `endpoint` is set: many
    /// S3-compatible servers reject the SDK's default aws-chunked trailing
    /// checksums. Our own SHA-256 part checksums are sent either way.
    pub checksum_when_required: bool,
    /// Explicit access key; `None` uses the standard credential chain
    /// (environment, profile, web identity, ECS/EC2 instance role).
    pub access_key_id: Option<String>,
    /// Explicit secret key, set together with `access_key_id`. Never logged.
    pub secret_access_key: Option<String>,
    /// Session token of temporary explicit keys (`AWS_SESSION_TOKEN`), sent
    /// as `x-amz-security-token`. Never logged.
    pub session_token: Option<String>,
}

impl S3Settings {
    /// Settings for `bucket` with every option at its default (AWS itself,
    /// credential and region chains, no prefix).
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Settings {
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            endpoint: None,
            force_path_style: false,
            storage_class: None,
            sse: None,
            checksum_when_required: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

// By hand, so the secret key cannot reach a log through `{:?}`.
impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("storage_class", &self.storage_class)
            .field("sse", &self.sse)
            .field("checksum_when_required", &self.checksum_when_required)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `""` stays `""`; anything else loses leading, trailing and doubled `/`
/// and gets exactly one trailing `/`, so `key_for` is a plain concatenation.
pub fn normalize_prefix(prefix: &str) -> String {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        String::new()
    } else {
        format!("{}/", segments.join("/"))
    }
}

/// Splits `s3://BUCKET/KEY` into the bucket and the key.
pub fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let bad = |why: &str| {
        Error::Config(format!(
            "`{url}` is not an S3 object URL: {why} (expected s3://BUCKET/KEY)"
        ))
    };
    let rest = url
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("s3://"))
        .map(|_| &url[5..])
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| bad("there is no key after the bucket"))?;
    if bucket.is_empty() {
        return Err(bad("the bucket name is empty"));
    }
    if bucket.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("the bucket name holds whitespace"));
    }
    if key.is_empty() {
        return Err(bad("the key is empty"));
    }
    if key.ends_with('/') {
        return Err(bad("the key names a folder, not an object"));
    }
    Ok((bucket.to_string(), key.to_string()))
}

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

/// One stored object under the store's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// The key without the prefix: a backup or sidecar file name.
    pub name: String,
    /// The full key.
    pub key: String,
    pub size: u64,
    /// `None` only when the server did not say.
    pub last_modified: Option<DateTime<Utc>>,
}

/// The result of [`S3Store::upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub key: String,
    pub bytes: u64,
    /// 1 for a single PutObject, else the number of multipart parts.
    pub parts: usize,
}

/// The result of [`S3Store::download`].
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

/// A multipart upload that was started and neither completed nor aborted;
/// its parts are stored and billed until it is aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// A bucket and prefix to store backups under.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.describe())
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client. Needs no network, except that with neither
    /// `region` nor `endpoint` the SDK's region chain may ask the instance
    /// metadata service. Credentials from the chain are fetched lazily, on
    /// the first request.
    ///
    /// Must be called (and the store used) inside a Tokio runtime with the
    /// time driver enabled (retries, timeouts).
    pub async fn connect(settings: S3Settings) -> Result<S3Store> {
        let bucket = settings.bucket.trim().to_string();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(Error::Config(format!(
                "AWS_S3_BUCKET=`{bucket}` is not a bucket name"
            )));
        }
        let storage_class = match &settings.storage_class {
            Some(class) => parse_storage_class(class)?.map(|c| StorageClass::from(c.as_str())),
            None => None,
        };
        if let Some(endpoint) = &settings.endpoint {
            let parsed = url::Url::parse(endpoint).map_err(|e| {
                Error::Config(format!("AWS_ENDPOINT_URL=`{endpoint}` is not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(Error::Config(format!(
                    "AWS_ENDPOINT_URL=`{endpoint}` must be http://HOST[:PORT] or https://HOST[:PORT]"
                )));
            }
        }

        if settings.access_key_id.is_some() != settings.secret_access_key.is_some() {
            return Err(Error::Config(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into(),
            ));
        }
        if settings.session_token.is_some() && settings.access_key_id.is_none() {
            return Err(Error::Config(
                "AWS_SESSION_TOKEN is set but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not; a session token only works with the temporary keys it was issued with".into(),
            ));
        }

        // ring instead of the SDK default (aws-lc-rs): no C toolchain or
        // CMake-sized build; the system's CA certificates are trusted.
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(REQUEST_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(STALL_GRACE_PERIOD)
                    .build(),
            );

        match (&settings.region, &settings.endpoint) {
            (Some(region), _) => loader = loader.region(Region::new(region.clone())),
            // A self-hosted server ignores the region but signatures need
            // one; asking instance metadata for it would only add delay.
            (None, Some(_)) => loader = loader.region(Region::new(DEFAULT_REGION)),
            // The loader's own chain (environment, profile, instance
            // metadata), which uses the HTTP client above; us-east-1 below
            // when it finds nothing.
            (None, None) => {}
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                settings.session_token.clone(),
                None,
                "backupd settings",
            ));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.trim_end_matches('/'));
        }
        let shared = loader.load().await;

        let mut config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
        if shared.region().is_none() {
            config = config.region(Region::new(DEFAULT_REGION));
        }
        if settings.checksum_when_required {
            config = config
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let store = S3Store {
            client: Client::from_conf(config.build()),
            bucket,
            prefix: normalize_prefix(&settings.prefix),
            storage_class,
            sse: settings.sse.clone(),
        };
        tracing::debug!(location = %store.describe(), endpoint = ?settings.endpoint,
            path_style = settings.force_path_style, "S3 store ready");
        Ok(store)
    }

    /// `s3://bucket/prefix/` for logs and messages.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The normalised prefix (`""` or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key a file called `name` is stored under.
    pub fn key_for(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `s3://bucket/key`.
    pub fn url_for(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

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
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(sha256_base64(&data))
            .body(ByteStream::from(data));
        if let Some(class) = &self.storage_class {
            request = request.storage_class(class.clone());
        }
        match &self.sse {
            Some(ServerSideEncryption::Aes256) => {
                request = request.server_side_encryption(SdkServerSideEncryption::Aes256);
            }
            Some(ServerSideEncryption::Kms { key_id }) => {
                request = request
                    .server_side_encryption(SdkServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone());
            }
            None => {}
        }
        let send = request
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
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        if let Some(class) = &self.storage_class {
            create = create.storage_class(class.clone());
        }
        match &self.sse {
            Some(ServerSideEncryption::Aes256) => {
                create = create.server_side_encryption(SdkServerSideEncryption::Aes256);
            }
            Some(ServerSideEncryption::Kms { key_id }) => {
                create = create
                    .server_side_encryption(SdkServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone());
            }
            None => {}
        }
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

    /// Downloads the object `key` (a full key, as from [`RemoteObject::key`]
    /// or [`parse_s3_url`]) to `dest`: streamed into a private random-named
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
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            response = self.client.get_object().bucket(&self.bucket).key(key).send() => {
                response.map_err(|e| Error::storage("download", &url, sdk_reason(&e)))?
            }
        };
        let expected_len = response
            .content_length()
            .filter(|l| *l >= 0)
            .map(|l| l as u64);
        let mut body = response.body;

        // Removed when dropped, on every early return.
        let temp = crate::files::temp_in(&dir)
            .map_err(|e| Error::io("create a temporary file in", &dir, e))?;
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
                    hasher.update(&data);
                    file.write_all(&data)
                        .await
                        .map_err(|e| Error::io("write", &partial, e))?;
                    bytes += data.len() as u64;
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
        let sha256 = hex::encode(hasher.finalize());
        if let Some(expected) = &expected
            && *expected != sha256
        {
            return Err(fail(format!(
                "checksum mismatch: the object's SHA-256 is {sha256} but {key}.sha256 says \
                 {expected}; the download was discarded"
            )));
        }
        // A rename: a link planted at `dest` is replaced, not followed.
        temp.persist(dest)
            .map_err(|e| Error::io("rename into place", dest, e.error))?;
        let dir_for_sync = dir.clone();
        tokio::task::spawn_blocking(move || crate::archive::sync_dir(&dir_for_sync))
            .await
            .map_err(|e| Error::Other(format!("the fsync task failed: {e}")))??;
        tracing::info!(source = %url, dest = %dest.display(), bytes,
            checksum_verified = expected.is_some(), "downloaded");
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            sha256,
            checksum_verified: expected.is_some(),
        })
    }

    /// Fails unless `KEY.sha256` exists and is a checksum line for `key`:
    /// restores take only objects backupd uploaded completely (the data
    /// first, its `.sha256` last).
    pub async fn require_sidecar(&self, key: &str) -> Result<String> {
        self.expected_sha256(key).await?.ok_or_else(|| {
            Error::storage(
                "restore",
                self.url_for(key),
                format!(
                    "there is no {key}.sha256 object beside it; backupd uploads one after every backup, so this object is not a complete backupd upload (refused)"
                ),
            )
        })
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
    /// more than `older_than` ago (an upload still running elsewhere is
    /// younger; one without a start time is left alone). Meant for the start
    /// of a backup run: it removes what an upload that could not abort (the
    /// server was unreachable) left behind. Returns the uploads aborted.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<Vec<IncompleteUpload>> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
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

/// A per-request timeout override for the operations whose duration depends
/// on their size.
fn attempt_timeout(timeout: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(timeout)
            .build(),
    )
}

fn sha256_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// Checks a `sha256sum` line (`HEX  NAME`, or `HEX *NAME`) for the object
/// `object_name` and returns the lower-case hex digest.
fn parse_sidecar(data: &[u8], object_name: &str) -> std::result::Result<String, String> {
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

/// The service's error code and message for a service error (with a hint
/// for the usual configuration mistakes), else the whole chain of causes, so
/// "dispatch failure" is never all an operator sees.
fn sdk_reason<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let SdkError::ServiceError(service) = err else {
        return error_chain(err);
    };
    let status = service.raw().status().as_u16();
    let inner = service.err();
    let mut reason = match (inner.code(), inner.message()) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        (None, _) => format!("HTTP {status}: {}", error_chain(inner)),
    };
    let hint = match inner.code() {
        Some("SignatureDoesNotMatch") => Some("check AWS_SECRET_ACCESS_KEY"),
        Some("InvalidAccessKeyId") | Some("NotSignedUp") => Some("check AWS_ACCESS_KEY_ID"),
        Some("AccessDenied") => Some("the credentials lack a permission on this bucket or key"),
        Some("NoSuchBucket") => Some("check AWS_S3_BUCKET (and AWS_ENDPOINT_URL)"),
        Some("PermanentRedirect") | Some("AuthorizationHeaderMalformed") => {
            Some("check AWS_REGION")
        }
        _ => None,
    };
    if let Some(hint) = hint {
        reason.push_str("; ");
        reason.push_str(hint);
    }
    reason
}

/// `outer: cause: root cause`, skipping a cause whose text its parent
/// already shows.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        for (given, expected) in [
            ("", ""),
            ("/", ""),
            ("//", ""),
            ("backups", "backups/"),
            ("backups/", "backups/"),
            ("/backups", "backups/"),
            ("/a//b/", "a/b/"),
            ("a/b/c", "a/b/c/"),
        ] {
            assert_eq!(normalize_prefix(given), expected, "{given:?}");
        }
    }

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

    #[test]
    fn s3_urls_split_into_bucket_and_key() {
        assert_eq!(
            parse_s3_url("s3://my-bucket/backups/pg_dump-20260101T000000Z.sql.gz").unwrap(),
            (
                "my-bucket".to_string(),
                "backups/pg_dump-20260101T000000Z.sql.gz".to_string()
            )
        );
        assert_eq!(
            parse_s3_url("S3://b/k").unwrap(),
            ("b".to_string(), "k".to_string())
        );
        for (bad, why) in [
            ("https://b/k", "does not start with s3://"),
            ("s3:/b/k", "does not start with s3://"),
            ("s3://bucket", "no key"),
            ("s3:///key", "bucket name is empty"),
            ("s3://bucket/", "key is empty"),
            ("s3://bucket/folder/", "names a folder"),
            ("s3://my bucket/k", "whitespace"),
            ("", "does not start with s3://"),
        ] {
            let err = parse_s3_url(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("expected s3://BUCKET/KEY"), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn keys_are_the_prefix_and_the_name() {
        let mut settings = S3Settings::new("bucket");
        settings.prefix = "/prod/db//".into();
        settings.endpoint = Some("http://127.0.0.1:9".into());
        settings.access_key_id = Some("AKIDEXAMPLE".into());
        settings.secret_access_key = Some("very-secret".into());
        let store = S3Store::connect(settings.clone()).await.unwrap();
        assert_eq!(store.key_for("x.sql.gz"), "prod/db/x.sql.gz");
        assert_eq!(store.describe(), "s3://bucket/prod/db/");
        assert_eq!(store.url_for("prod/db/x"), "s3://bucket/prod/db/x");
        settings.session_token = Some("very-secret-token".into());
        assert!(!format!("{settings:?}").contains("very-secret"));

        settings.prefix = String::new();
        let store = S3Store::connect(settings).await.unwrap();
        assert_eq!(store.key_for("x.sql.gz"), "x.sql.gz");
        assert_eq!(store.describe(), "s3://bucket/");
    }

    #[tokio::test]
    async fn bad_settings_name_their_variable() {
        let mut settings = S3Settings::new("bucket");
        settings.storage_class = Some("STANDARD-IA".into());
        let err = S3Store::connect(settings).await.unwrap_err().to_string();
        assert!(err.contains("AWS_S3_STORAGE_CLASS"), "{err}");

        let mut settings = S3Settings::new("bucket");
        settings.endpoint = Some("minio:9000".into());
        let err = S3Store::connect(settings).await.unwrap_err().to_string();
        assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");

        let mut settings = S3Settings::new("bucket");
        settings.access_key_id = Some("AKIDEXAMPLE".into());
        let err = S3Store::connect(settings).await.unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");

        let err = S3Store::connect(S3Settings::new(" "))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_S3_BUCKET"), "{err}");
    }

    #[test]
    fn storage_classes_and_encryption_parse() {
        assert_eq!(parse_storage_class("").unwrap(), None);
        assert_eq!(
            parse_storage_class("standard_ia").unwrap().as_deref(),
            Some("STANDARD_IA")
        );
        assert!(parse_storage_class("COLD").is_err());

        assert_eq!(ServerSideEncryption::parse("", None).unwrap(), None);
        assert_eq!(
            ServerSideEncryption::parse("AES256", None).unwrap(),
            Some(ServerSideEncryption::Aes256)
        );
        assert_eq!(
            ServerSideEncryption::parse("aws:kms", Some("arn:aws:kms:k")).unwrap(),
            Some(ServerSideEncryption::Kms {
                key_id: Some("arn:aws:kms:k".into())
            })
        );
        assert_eq!(
            ServerSideEncryption::parse("aws:kms", Some("")).unwrap(),
            Some(ServerSideEncryption::Kms { key_id: None })
        );
        for (sse, key) in [("des", None), ("AES256", Some("k")), ("", Some("k"))] {
            let err = ServerSideEncryption::parse(sse, key)
                .unwrap_err()
                .to_string();
            assert!(err.contains("AWS_S3_SSE"), "{sse:?}: {err}");
        }
    }

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

    #[test]
    fn error_chains_keep_every_cause_once() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::io("connect", Path::new("/x"), root);
        assert_eq!(error_chain(&outer), "cannot connect /x: refused");
    }
}
