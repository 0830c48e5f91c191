//! What `AWS_S3_*` settings mean, checked without any network: the
//! [`S3Settings`] that `config` builds once, and the pure parsers it uses.

use std::fmt;

use crate::error::{Error, Result};

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

impl S3Settings {
    /// The one check of these settings (no network), each error naming its
    /// variable. `config` calls it at start-up, so a typo fails before any
    /// backup runs; [`super::S3Store::connect`] takes only its result and
    /// checks nothing again. The bucket comes back trimmed, the prefix
    /// normalised and the storage class in S3's spelling.
    pub fn validate(mut self) -> Result<ValidS3Settings> {
        self.bucket = self.bucket.trim().to_string();
        self.prefix = normalize_prefix(&self.prefix);
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(Error::Config(format!(
                "AWS_S3_BUCKET=`{}` is not a bucket name",
                self.bucket
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            // Wording of the start-up check operators know; the scheme test
            // catches what parses as a URL but is none (`minio:9000`).
            let parsed = url::Url::parse(endpoint).map_err(|_| {
                Error::Config(format!(
                    "AWS_ENDPOINT_URL '{endpoint}' is not a URL (expected e.g. http://minio:9000)"
                ))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(Error::Config(format!(
                    "AWS_ENDPOINT_URL=`{endpoint}` must be http://HOST[:PORT] or https://HOST[:PORT]"
                )));
            }
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err(Error::Config(
                "AWS_SESSION_TOKEN (or its _FILE) is set but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not; a session token only works with the temporary keys it was issued with".into(),
            ));
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(Error::Config(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY (or its _FILE) is not"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID (or its _FILE) is not"
                        .into(),
                ));
            }
            _ => {}
        }
        self.storage_class = match &self.storage_class {
            Some(class) => parse_storage_class(class)?,
            None => None,
        };
        Ok(ValidS3Settings(self))
    }
}

/// [`S3Settings`] that passed [`S3Settings::validate`], the only way to
/// build one; read-only from then on, so nothing downstream checks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidS3Settings(S3Settings);

impl std::ops::Deref for ValidS3Settings {
    type Target = S3Settings;

    fn deref(&self) -> &S3Settings {
        &self.0
    }
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
}
