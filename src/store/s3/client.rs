//! Building the SDK client once: TLS, retries, timeouts, region and
//! credentials, the checksum mode; and the store's names for its objects.

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::types::{ServerSideEncryption as SdkServerSideEncryption, StorageClass};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::S3Store;
use super::settings::{ServerSideEncryption, ValidS3Settings};
use crate::error::Result;

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
pub(super) const COMPLETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A body transfer (either way) that moves no bytes for this long fails and
/// is retried; this is what keeps a part from hanging forever on a dead
/// connection.
const STALL_GRACE_PERIOD: Duration = Duration::from_secs(30);

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
    /// time driver enabled (retries, timeouts). The settings were checked
    /// once, by [`super::S3Settings::validate`] at start-up.
    pub async fn connect(settings: ValidS3Settings) -> Result<S3Store> {
        let bucket = settings.bucket.clone();
        let storage_class = settings.storage_class.as_deref().map(StorageClass::from);

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
            prefix: settings.prefix.clone(),
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
}

/// The options every write carries (storage class, server-side encryption),
/// set in one place for both requests that create an object.
pub(super) trait WriteOptions: Sized {
    fn storage_class_option(self, class: StorageClass) -> Self;
    fn encryption_option(self, sse: SdkServerSideEncryption, kms_key_id: Option<String>) -> Self;

    fn with_write_options(self, store: &S3Store) -> Self {
        let mut request = self;
        if let Some(class) = &store.storage_class {
            request = request.storage_class_option(class.clone());
        }
        match &store.sse {
            Some(ServerSideEncryption::Aes256) => {
                request.encryption_option(SdkServerSideEncryption::Aes256, None)
            }
            Some(ServerSideEncryption::Kms { key_id }) => {
                request.encryption_option(SdkServerSideEncryption::AwsKms, key_id.clone())
            }
            None => request,
        }
    }
}

macro_rules! write_options_for {
    ($($builder:ty),*) => {$(
        impl WriteOptions for $builder {
            fn storage_class_option(self, class: StorageClass) -> Self {
                self.storage_class(class)
            }

            fn encryption_option(
                self,
                sse: SdkServerSideEncryption,
                kms_key_id: Option<String>,
            ) -> Self {
                self.server_side_encryption(sse).set_ssekms_key_id(kms_key_id)
            }
        }
    )*};
}

write_options_for!(
    aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder
);

/// A per-request timeout override for the operations whose duration depends
/// on their size.
pub(super) fn attempt_timeout(timeout: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(timeout)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::s3::S3Settings;

    #[tokio::test]
    async fn keys_are_the_prefix_and_the_name() {
        let mut settings = S3Settings::new("bucket");
        settings.prefix = "/prod/db//".into();
        settings.endpoint = Some("http://127.0.0.1:9".into());
        settings.access_key_id = Some("AKIDEXAMPLE".into());
        settings.secret_access_key = Some("very-secret".into());
        let store = S3Store::connect(settings.clone().validate().unwrap())
            .await
            .unwrap();
        assert_eq!(store.key_for("x.sql.gz"), "prod/db/x.sql.gz");
        assert_eq!(store.describe(), "s3://bucket/prod/db/");
        assert_eq!(store.url_for("prod/db/x"), "s3://bucket/prod/db/x");
        settings.session_token = Some("very-secret-token".into());
        assert!(!format!("{settings:?}").contains("very-secret"));

        settings.prefix = String::new();
        let store = S3Store::connect(settings.validate().unwrap())
            .await
            .unwrap();
        assert_eq!(store.key_for("x.sql.gz"), "x.sql.gz");
        assert_eq!(store.describe(), "s3://bucket/");
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let mut settings = S3Settings::new("bucket");
        settings.storage_class = Some("STANDARD-IA".into());
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("AWS_S3_STORAGE_CLASS"), "{err}");

        let mut settings = S3Settings::new("bucket");
        settings.endpoint = Some("minio:9000".into());
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");

        let mut settings = S3Settings::new("bucket");
        settings.access_key_id = Some("AKIDEXAMPLE".into());
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");

        let err = S3Settings::new(" ").validate().unwrap_err().to_string();
        assert!(err.contains("AWS_S3_BUCKET"), "{err}");
    }

    #[tokio::test]
    async fn connect_uses_the_validated_settings_as_they_are() {
        let mut settings = S3Settings::new(" bucket ");
        settings.storage_class = Some("standard_ia".into());
        settings.endpoint = Some("http://127.0.0.1:9".into());
        let valid = settings.validate().unwrap();
        assert_eq!(valid.storage_class.as_deref(), Some("STANDARD_IA"));
        let store = S3Store::connect(valid).await.unwrap();
        assert_eq!(store.bucket(), "bucket");
        assert_eq!(store.storage_class, Some(StorageClass::StandardIa));
    }
}
