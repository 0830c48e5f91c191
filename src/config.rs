//! One validated configuration per mode, built from the command line (flags
//! and their environment variables) and `*_FILE` secrets. Anything wrong is
//! reported at start-up, naming the variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{BackupArgs, DatabaseArgs, DirArgs, EncryptionArgs, S3Args};
use crate::crypto::keys::Keys;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::retention::Policy;
use crate::store::s3::{S3Settings, ServerSideEncryption, normalize_prefix, parse_storage_class};

/// Strips what env files add: surrounding whitespace, a trailing `\r`, and
/// one pair of matching quotes.
pub fn clean(raw: &str) -> String {
    let trimmed = raw.trim_matches(|c: char| c.is_whitespace() || c == '\r');
    let unquoted = match trimmed.as_bytes() {
        [first @ (b'"' | b'\''), .., last] if first == last && trimmed.len() >= 2 => {
            &trimmed[1..trimmed.len() - 1]
        }
        _ => trimmed,
    };
    unquoted
        .trim_matches(|c: char| c.is_whitespace() || c == '\r')
        .to_string()
}

pub fn clean_value(raw: &str) -> std::result::Result<String, String> {
    Ok(clean(raw))
}

/// `BACKUP_RETENTION_DAYS`: non-digits are dropped as the old script did
/// (`2d` → 2); nothing left means the default of 2.
pub fn retention_days(raw: &str) -> std::result::Result<u32, String> {
    let digits: String = clean(raw).chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Ok(2);
    }
    digits
        .parse()
        .map_err(|_| format!("BACKUP_RETENTION_DAYS '{raw}' is too large"))
}

/// A parser for a whole number where an empty value (`VAR=` in an env file)
/// means the default, as `${VAR:-default}` did in the old scripts.
pub fn whole_number(
    variable: &'static str,
    default: u64,
) -> impl Fn(&str) -> std::result::Result<u64, String> + Clone + Send + Sync {
    move |raw| match clean(raw).as_str() {
        "" => Ok(default),
        value => value
            .parse()
            .map_err(|_| format!("{variable} must be a whole number, not '{value}'")),
    }
}

/// A yes/no setting: true/false, yes/no, on/off, 1/0; empty means the default.
pub fn boolean(
    variable: &'static str,
    default: bool,
) -> impl Fn(&str) -> std::result::Result<bool, String> + Clone + Send + Sync {
    move |raw| match clean(raw).to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("{variable} must be true or false, not '{other}'")),
    }
}

/// `LOG_FORMAT`: `text` or `json`, any case; empty means text.
pub fn log_format(raw: &str) -> std::result::Result<crate::cli::LogFormat, String> {
    match clean(raw).to_ascii_lowercase().as_str() {
        "" | "text" => Ok(crate::cli::LogFormat::Text),
        "json" => Ok(crate::cli::LogFormat::Json),
        other => Err(format!("LOG_FORMAT must be text or json, not '{other}'")),
    }
}

pub fn compression_level(raw: &str) -> std::result::Result<u32, String> {
    match clean(raw).as_str() {
        "" => Ok(6),
        value => match value.parse() {
            Ok(level) if level <= 9 => Ok(level),
            _ => Err(format!(
                "BACKUP_COMPRESSION_LEVEL must be a number from 0 to 9, not '{value}'"
            )),
        },
    }
}

pub const DEFAULT_BACKUP_DIR: &str = "/backups";

/// Where backups and the status file live.
#[derive(Debug, Clone)]
pub struct Paths {
    pub backup_dir: PathBuf,
    pub status_file: PathBuf,
}

impl Paths {
    pub fn from_args(args: &DirArgs) -> Result<Self> {
        let backup_dir = match args.backup_dir.as_deref() {
            None | Some("") => PathBuf::from(DEFAULT_BACKUP_DIR),
            Some(dir) => PathBuf::from(dir),
        };
        let status_file = match args.status_file.as_deref() {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => backup_dir.join("backup-status.json"),
        };
        Ok(Paths {
            backup_dir,
            status_file,
        })
    }
}

/// Everything a backup run needs.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub database: Database,
    pub paths: Paths,
    pub retention: Policy,
    pub compression_level: u32,
    pub timeout: Duration,
    /// Encrypts new backups when a key is configured or the key file exists.
    pub keys: Keys,
    /// Offsite copies, when `AWS_S3_BUCKET` is set.
    pub remote: Option<RemoteConfig>,
}

/// The bucket every backup is copied to, and how long copies stay there.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub settings: S3Settings,
    pub retention: Policy,
}

impl BackupConfig {
    pub fn from_args(args: &BackupArgs) -> Result<Self> {
        let paths = Paths::from_args(&args.dir)?;
        let retention = Policy {
            days: args.retention_days,
            keep_min: usize::try_from(args.keep_min).unwrap_or(usize::MAX),
        };
        Ok(BackupConfig {
            database: resolve_database(&args.database)?,
            keys: load_keys(&args.encryption, &paths)?,
            remote: remote_config(&args.s3, retention)?,
            paths,
            retention,
            compression_level: args.compression_level,
            timeout: if args.timeout_seconds == 0 {
                // 0 reads as "no limit"; a century is as good as none.
                Duration::from_secs(100 * 365 * 86_400)
            } else {
                Duration::from_secs(args.timeout_seconds)
            },
        })
    }
}

/// The S3 settings, or `None` while `AWS_S3_BUCKET` is empty. Remote
/// retention defaults to the local one (`BACKUP_S3_RETENTION_DAYS` unset).
pub fn remote_config(args: &S3Args, local: Policy) -> Result<Option<RemoteConfig>> {
    let Some(settings) = s3_settings(args)? else {
        return Ok(None);
    };
    let days = match args.s3_retention_days.as_str() {
        "" => local.days,
        raw => {
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            digits.parse().map_err(|_| {
                Error::Config(format!(
                    "BACKUP_S3_RETENTION_DAYS must be a number of days, not '{raw}'"
                ))
            })?
        }
    };
    Ok(Some(RemoteConfig {
        settings,
        retention: Policy { days, ..local },
    }))
}

/// The S3 settings from `AWS_*` (credentials also from their `_FILE`), or
/// `None` while `AWS_S3_BUCKET` is empty.
pub fn s3_settings(args: &S3Args) -> Result<Option<S3Settings>> {
    let Some(bucket) = args.bucket.as_deref().filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let endpoint = args.endpoint_url.clone().filter(|e| !e.is_empty());
    if let Some(endpoint) = &endpoint
        && url::Url::parse(endpoint).is_err()
    {
        return Err(Error::Config(format!(
            "AWS_ENDPOINT_URL '{endpoint}' is not a URL (expected e.g. http://minio:9000)"
        )));
    }
    let secret = |value: &Option<String>, file: &Option<String>, name: &str| match (
        value.as_deref().filter(|v| !v.is_empty()),
        file.as_deref().filter(|f| !f.is_empty()),
    ) {
        (Some(value), _) => Ok(Some(value.to_string())),
        (None, Some(file)) => read_secret_file(Path::new(file), &format!("{name}_FILE")).map(Some),
        (None, None) => Ok(None),
    };
    let access_key_id = secret(
        &args.access_key_id,
        &args.access_key_id_file,
        "AWS_ACCESS_KEY_ID",
    )?;
    let secret_access_key = secret(
        &args.secret_access_key,
        &args.secret_access_key_file,
        "AWS_SECRET_ACCESS_KEY",
    )?;
    let session_token = secret(
        &args.session_token,
        &args.session_token_file,
        "AWS_SESSION_TOKEN",
    )?;
    if session_token.is_some() && access_key_id.is_none() {
        return Err(Error::Config(
            "AWS_SESSION_TOKEN (or its _FILE) is set but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not; a session token only works with the temporary keys it was issued with".into(),
        ));
    }
    match (&access_key_id, &secret_access_key) {
        (Some(_), None) => {
            return Err(Error::Config(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY (or its _FILE) is not".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(Error::Config(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID (or its _FILE) is not".into(),
            ));
        }
        _ => {}
    }
    let checksum_when_required = match args.checksum_when_required.as_str() {
        "" => endpoint.is_some(),
        raw => boolean("AWS_S3_CHECKSUM_WHEN_REQUIRED", false)(raw).map_err(Error::Config)?,
    };
    Ok(Some(S3Settings {
        bucket: bucket.to_string(),
        prefix: normalize_prefix(&args.prefix),
        region: args.region.clone().filter(|r| !r.is_empty()),
        endpoint,
        force_path_style: args.force_path_style,
        storage_class: parse_storage_class(&args.storage_class)?,
        sse: ServerSideEncryption::parse(&args.sse, args.sse_kms_key_id.as_deref())?,
        checksum_when_required,
        access_key_id,
        secret_access_key,
        session_token,
    }))
}

/// The key sources of `BACKUP_ENCRYPTION_KEY`(`_FILE`) and
/// `$BACKUP_DIR/.encryption_key`, checked now.
pub fn load_keys(args: &EncryptionArgs, paths: &Paths) -> Result<Keys> {
    Keys::load(
        args.encryption_key.as_deref(),
        args.encryption_key_file.as_deref(),
        &paths.backup_dir,
    )
}

/// `SQLALCHEMY_DATABASE_URI`, else `DATABASE_URL`; each may come from its
/// `_FILE` variant. A direct value wins over its file, with a warning.
pub fn resolve_database(args: &DatabaseArgs) -> Result<Database> {
    let pairs = [
        (
            "SQLALCHEMY_DATABASE_URI",
            &args.sqlalchemy_database_uri,
            &args.sqlalchemy_database_uri_file,
        ),
        ("DATABASE_URL", &args.database_url, &args.database_url_file),
    ];
    for (name, value, file) in pairs {
        let value = value.as_deref().filter(|v| !v.is_empty());
        let file = file.as_deref().filter(|f| !f.is_empty());
        if let (Some(_), Some(_)) = (value, file) {
            tracing::warn!("both {name} and {name}_FILE are set; using {name}");
        }
        if let Some(url) = value {
            return Database::parse(url, name);
        }
        if let Some(file) = file {
            let url = read_secret_file(Path::new(file), &format!("{name}_FILE"))?;
            return Database::parse(&url, &format!("{name}_FILE ({file})"));
        }
    }
    Err(Error::Config(
        "no database configured: set SQLALCHEMY_DATABASE_URI or DATABASE_URL (or DATABASE_URL_FILE)".into(),
    ))
}

pub(crate) fn read_secret_file(path: &Path, var: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{var}: cannot read {}: {e}", path.display())))?;
    let value = clean(&text);
    if value.is_empty() {
        return Err(Error::Config(format!("{var}: {} is empty", path.display())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_decorations_are_stripped() {
        assert_eq!(clean("\"postgresql://a\"\r"), "postgresql://a");
        assert_eq!(clean("'x'"), "x");
        assert_eq!(clean(" /backups\r\n"), "/backups");
        assert_eq!(clean("\"unbalanced"), "\"unbalanced");
        assert_eq!(clean("\""), "\"");
    }

    #[test]
    fn retention_days_keep_only_digits() {
        assert_eq!(retention_days("2d"), Ok(2));
        assert_eq!(retention_days("\"14\"\r"), Ok(14));
        assert_eq!(retention_days("0"), Ok(0));
        assert_eq!(retention_days(""), Ok(2));
    }

    #[test]
    fn compression_level_errors_name_the_variable() {
        assert_eq!(compression_level("9"), Ok(9));
        assert!(
            compression_level("12")
                .unwrap_err()
                .contains("BACKUP_COMPRESSION_LEVEL")
        );
    }

    fn s3_args(extra: &[&str]) -> S3Args {
        use clap::Parser;
        let mut argv = vec!["backupd", "list", "--remote", "--s3-bucket", "b"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::List { s3, .. } => s3,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_session_token_goes_with_explicit_keys_and_stays_masked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "token-from-file\n").unwrap();
        let keys = [
            "--aws-access-key-id",
            "AKID",
            "--aws-secret-access-key",
            "sk",
        ];
        let mut with_file = keys.to_vec();
        with_file.extend(["--aws-session-token-file", file.to_str().unwrap()]);
        let settings = s3_settings(&s3_args(&with_file)).unwrap().unwrap();
        assert_eq!(settings.session_token.as_deref(), Some("token-from-file"));
        assert!(!format!("{settings:?}").contains("token-from-file"));

        let mut direct = keys.to_vec();
        direct.extend(["--aws-session-token", "tok"]);
        let settings = s3_settings(&s3_args(&direct)).unwrap().unwrap();
        assert_eq!(settings.session_token.as_deref(), Some("tok"));

        let err = s3_settings(&s3_args(&["--aws-session-token", "tok"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AWS_SESSION_TOKEN") && err.contains("AWS_ACCESS_KEY_ID"),
            "{err}"
        );
    }

    #[test]
    fn sqlalchemy_uri_wins_and_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(&secret, "'sqlite:////data/app.db'\r\n").unwrap();
        let args = DatabaseArgs {
            sqlalchemy_database_uri: None,
            sqlalchemy_database_uri_file: None,
            database_url: None,
            database_url_file: Some(secret.display().to_string()),
        };
        assert_eq!(
            resolve_database(&args).unwrap().to_string(),
            "sqlite:/data/app.db"
        );
        let args = DatabaseArgs {
            sqlalchemy_database_uri: Some("sqlite:///first.db".into()),
            ..args
        };
        assert_eq!(
            resolve_database(&args).unwrap().to_string(),
            "sqlite:first.db"
        );
    }
}
