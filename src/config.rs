//! One validated configuration per mode, built from the command line (flags
//! and their environment variables) and `*_FILE` secrets. Anything wrong is
//! reported at start-up, naming the variable.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{
    BackupArgs, BackupHookArgs, DaemonArgs, DatabaseArgs, DirArgs, DrillArgs, DrillServerArgs,
    EncryptionArgs, HealthArgs, HookTimeoutArgs, NotifyArgs, RestoreArgs, RestoreHookArgs, S3Args,
};
use crate::crypto::fernet::KeyRing;
use crate::crypto::keys::{KEY_FILE_NAME, Keys};
use crate::db::{Database, PgTarget, SqliteTarget};
use crate::drill::DrillSettings;
use crate::error::{Error, Result};
use crate::events::HookPoint;
use crate::hooks::HookConfig;
use crate::http::StatusToken;
use crate::notify::Destination;
use crate::notify::destination::parse_list;
use crate::restore::postgres::Strategy;
use crate::retention::Policy;
use crate::schedule::{self, CronSchedule, Schedule};
use crate::store::s3::{S3Settings, ServerSideEncryption, ValidS3Settings, parse_s3_url};
use crate::values::{boolean, secret};

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
    /// `HOOK_BEFORE_BACKUP`, `HOOK_AFTER_BACKUP`, `HOOK_BACKUP_FAILED`.
    pub hooks: HookConfig,
}

/// The bucket every backup is copied to, and how long copies stay there.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub settings: ValidS3Settings,
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
            hooks: backup_hooks(&args.hooks)?,
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

/// The backup run's hooks; `HOOK_TIMEOUT_SECONDS` must be at least 1.
pub fn backup_hooks(args: &BackupHookArgs) -> Result<HookConfig> {
    Ok(HookConfig::none()
        .with(HookPoint::BeforeBackup, args.hook_before_backup.as_deref())
        .with(HookPoint::AfterBackup, args.hook_after_backup.as_deref())
        .with(HookPoint::BackupFailed, args.hook_backup_failed.as_deref())
        .with_timeout(hook_timeout(&args.timeout)?))
}

/// The restore procedure's hooks.
pub fn restore_hooks(args: &RestoreHookArgs) -> Result<HookConfig> {
    Ok(HookConfig::none()
        .with(
            HookPoint::BeforeRestore,
            args.hook_before_restore.as_deref(),
        )
        .with(HookPoint::AfterRestore, args.hook_after_restore.as_deref())
        .with(
            HookPoint::RestoreFailed,
            args.hook_restore_failed.as_deref(),
        )
        .with_timeout(hook_timeout(&args.timeout)?))
}

fn hook_timeout(args: &HookTimeoutArgs) -> Result<Duration> {
    match args.hook_timeout_seconds {
        0 => Err(Error::Config(
            "HOOK_TIMEOUT_SECONDS must be at least 1 (a hook always has a time limit)".into(),
        )),
        seconds => Ok(Duration::from_secs(seconds)),
    }
}

/// Where notifications go (`NOTIFY_URLS` or `NOTIFY_URLS_FILE`, every URL
/// checked at start-up; empty when neither is set) and how (`NOTIFY_LEVEL`,
/// `NOTIFY_TIMEOUT_SECONDS`, `BACKUP_PING_URL`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub destinations: Vec<Destination>,
    /// `NOTIFY_LEVEL`.
    pub level: crate::notify::Severity,
    /// `NOTIFY_TIMEOUT_SECONDS`: per attempt, and `once`'s wait in all.
    pub timeout: Duration,
    /// `BACKUP_PING_URL`(`_FILE`).
    pub ping: Option<crate::notify::ping::PingUrl>,
}

impl NotifyConfig {
    pub fn from_args(args: &NotifyArgs) -> Result<Self> {
        let destinations = match secret(
            "NOTIFY_URLS",
            args.notify_urls.as_deref(),
            args.notify_urls_file.as_deref(),
        )? {
            Some(urls) => parse_list(urls.source(), urls.value())?,
            None => Vec::new(),
        };
        let level =
            crate::notify::Severity::parse_level(&args.notify_level).map_err(Error::Config)?;
        if args.notify_timeout_seconds == 0 {
            return Err(Error::Config(
                "NOTIFY_TIMEOUT_SECONDS must be at least 1".into(),
            ));
        }
        let ping = match secret(
            "BACKUP_PING_URL",
            args.backup_ping_url.as_deref(),
            args.backup_ping_url_file.as_deref(),
        )? {
            Some(url) => Some(
                crate::notify::ping::PingUrl::parse(url.value(), url.source())
                    .map_err(Error::Config)?,
            ),
            None => None,
        };
        Ok(NotifyConfig {
            destinations,
            level,
            timeout: Duration::from_secs(args.notify_timeout_seconds),
            ping,
        })
    }

    /// Nothing to send to.
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty() && self.ping.is_none()
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
pub fn s3_settings(args: &S3Args) -> Result<Option<ValidS3Settings>> {
    match args.bucket.as_deref().filter(|b| !b.is_empty()) {
        Some(bucket) => s3_settings_in(args, bucket, &args.prefix).map(Some),
        None => Ok(None),
    }
}

/// The S3 settings from `AWS_*`, for objects under `prefix` in `bucket`.
fn s3_settings_in(args: &S3Args, bucket: &str, prefix: &str) -> Result<ValidS3Settings> {
    let endpoint = args.endpoint_url.clone().filter(|e| !e.is_empty());
    let secret = |name: &str, value: &Option<String>, file: &Option<String>| {
        secret(name, value.as_deref(), file.as_deref()).map(|s| s.map(|s| s.into_value()))
    };
    let access_key_id = secret(
        "AWS_ACCESS_KEY_ID",
        &args.access_key_id,
        &args.access_key_id_file,
    )?;
    let secret_access_key = secret(
        "AWS_SECRET_ACCESS_KEY",
        &args.secret_access_key,
        &args.secret_access_key_file,
    )?;
    let session_token = secret(
        "AWS_SESSION_TOKEN",
        &args.session_token,
        &args.session_token_file,
    )?;
    let checksum_when_required = match args.checksum_when_required.as_str() {
        "" => endpoint.is_some(),
        raw => boolean("AWS_S3_CHECKSUM_WHEN_REQUIRED", false)(raw).map_err(Error::Config)?,
    };
    S3Settings {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        region: args.region.clone().filter(|r| !r.is_empty()),
        endpoint,
        force_path_style: args.force_path_style,
        storage_class: Some(args.storage_class.clone()).filter(|c| !c.is_empty()),
        sse: ServerSideEncryption::parse(&args.sse, args.sse_kms_key_id.as_deref())?,
        checksum_when_required,
        access_key_id,
        secret_access_key,
        session_token,
    }
    .validate()
}

/// The key sources of `BACKUP_ENCRYPTION_KEY`(`_FILE`) and
/// `$BACKUP_DIR/.encryption_key`, checked now.
pub fn load_keys(args: &EncryptionArgs, paths: &Paths) -> Result<Keys> {
    let configured = match secret(
        "BACKUP_ENCRYPTION_KEY",
        args.encryption_key.as_deref(),
        args.encryption_key_file.as_deref(),
    )? {
        Some(key) => Some(
            KeyRing::parse(key.value())
                .map_err(|e| Error::Config(format!("{}: {e}", key.source())))?,
        ),
        None => None,
    };
    Keys::new(configured, &paths.backup_dir)
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
        if let Some(url) = secret(name, value.as_deref(), file.as_deref())? {
            return Database::parse(url.value(), url.source());
        }
    }
    Err(Error::Config(
        "no database configured: set SQLALCHEMY_DATABASE_URI or DATABASE_URL (or DATABASE_URL_FILE)".into(),
    ))
}

/// What `backupd drill` needs.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    pub settings: DrillSettings,
    /// `FILE` or `latest`.
    pub which: crate::drill::Which,
}

impl DrillConfig {
    pub fn from_args(args: &DrillArgs) -> Result<Self> {
        let paths = Paths::from_args(&args.dir)?;
        let which = crate::drill::Which::parse(&args.file);
        let mut keys = load_keys(&args.encryption, &paths)?;
        // As `verify`: a file's own folder may hold its key, as BACKUP_DIR does.
        if let crate::drill::Which::File(file) = &which {
            let own_folder = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            keys = keys.with_decrypt_only_file(own_folder.join(KEY_FILE_NAME))?;
        }
        Ok(DrillConfig {
            settings: drill_settings(
                resolve_database(&args.database)?,
                &args.server,
                &paths,
                keys,
            )?,
            which,
        })
    }
}

/// The drill settings shared by `backupd drill` and the daemon's schedule.
pub fn drill_settings(
    database: Database,
    server: &DrillServerArgs,
    paths: &Paths,
    keys: Keys,
) -> Result<DrillSettings> {
    Ok(DrillSettings {
        drill_server: drill_server(server, &database)?,
        database,
        backup_dir: paths.backup_dir.clone(),
        status_file: paths.status_file.clone(),
        keys,
    })
}

/// `DRILL_DATABASE_URL`(`_FILE`): a PostgreSQL server, for a PostgreSQL
/// database only.
fn drill_server(args: &DrillServerArgs, database: &Database) -> Result<Option<PgTarget>> {
    let Some(url) = secret(
        "DRILL_DATABASE_URL",
        args.drill_database_url.as_deref(),
        args.drill_database_url_file.as_deref(),
    )?
    else {
        return Ok(None);
    };
    match (Database::parse(url.value(), url.source())?, database) {
        (Database::Postgres(target), Database::Postgres(_)) => Ok(Some(target)),
        (Database::Sqlite(_), _) => Err(Error::Config(format!(
            "{} must be a PostgreSQL URL (a server to drill PostgreSQL backups on)",
            url.source()
        ))),
        (Database::Postgres(_), Database::Sqlite(_)) => Err(Error::Config(format!(
            "{} is set, but the configured database is SQLite, which is drilled in a private copy; unset it",
            url.source()
        ))),
    }
}

/// What `backupd healthcheck` needs.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub paths: Paths,
    /// Healthy while the last successful backup is younger than this.
    pub max_age_seconds: u64,
    /// `HEALTH_MAX_DRILL_AGE_SECONDS`: and a restore drill passed within this.
    pub max_drill_age_seconds: Option<u64>,
}

impl HealthConfig {
    pub fn from_args(dir: &DirArgs, health: &HealthArgs) -> Result<Self> {
        Ok(HealthConfig {
            paths: Paths::from_args(dir)?,
            max_age_seconds: health.health_max_age_seconds,
            max_drill_age_seconds: health.health_max_drill_age_seconds.filter(|&s| s > 0),
        })
    }
}

const DEFAULT_INTERVAL_SECONDS: u64 = 86_400;

/// Everything the daemon (`backupd backup`) needs besides the backup itself.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub backup: BackupConfig,
    pub schedule: Schedule,
    pub status_addr: SocketAddr,
    /// `STATUS_TOKEN`(`_FILE`): what /status, / and /metrics require.
    pub status_token: Option<StatusToken>,
    pub health_max_age_seconds: u64,
    /// `HEALTH_MAX_DRILL_AGE_SECONDS` (0 = off).
    pub health_max_drill_age_seconds: Option<u64>,
    /// `BACKUP_DRILL_SCHEDULE`: scheduled restore drills; `None` when off.
    pub drills: Option<DrillSchedule>,
    pub on_start: bool,
    /// A failed run is retried once after this long; zero means no retry.
    pub retry: Duration,
    pub db_startup_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// The daemon's restore drills: when, and of what.
#[derive(Debug, Clone)]
pub struct DrillSchedule {
    pub schedule: Schedule,
    pub settings: DrillSettings,
}

impl DaemonConfig {
    pub fn from_args(args: &DaemonArgs) -> Result<Self> {
        let backup = BackupConfig::from_args(&args.backup)?;
        let drills = match args.drill_schedule.as_deref().filter(|s| !s.is_empty()) {
            Some(expression) => {
                let tz = schedule::parse_time_zone(&args.tz).map_err(Error::Config)?;
                let cron = CronSchedule::parse(expression, tz)
                    .map_err(|e| Error::Config(format!("BACKUP_DRILL_SCHEDULE {e}")))?;
                Some(DrillSchedule {
                    schedule: Schedule::Cron(cron),
                    settings: drill_settings(
                        backup.database.clone(),
                        &args.drill,
                        &backup.paths,
                        backup.keys.clone(),
                    )?,
                })
            }
            None => {
                // Checked all the same, so a bad URL is not a surprise later.
                drill_server(&args.drill, &backup.database)?;
                None
            }
        };
        Ok(DaemonConfig {
            schedule: schedule_from_args(args)?,
            health_max_drill_age_seconds: args
                .health
                .health_max_drill_age_seconds
                .filter(|&s| s > 0),
            drills,
            backup,
            status_addr: status_addr(args)?,
            status_token: status_token(args)?,
            health_max_age_seconds: args.health.health_max_age_seconds,
            on_start: args.on_start,
            retry: Duration::from_secs(args.retry_seconds),
            db_startup_timeout: Duration::from_secs(args.db_startup_timeout),
            shutdown_grace: Duration::from_secs(args.shutdown_timeout),
        })
    }
}

/// Builds the schedule: `BACKUP_SCHEDULE` wins over `BACKUP_INTERVAL_SECONDS`.
pub fn schedule_from_args(args: &DaemonArgs) -> Result<Schedule> {
    match args.schedule.as_deref().filter(|s| !s.is_empty()) {
        Some(expression) => {
            let tz = schedule::parse_time_zone(&args.tz).map_err(Error::Config)?;
            let cron = CronSchedule::parse(expression, tz)
                .map_err(|e| Error::Config(format!("BACKUP_SCHEDULE {e}")))?;
            if args.interval_seconds.is_some() {
                tracing::info!(
                    "both BACKUP_SCHEDULE and BACKUP_INTERVAL_SECONDS are set; BACKUP_SCHEDULE wins"
                );
            }
            Ok(Schedule::Cron(cron))
        }
        None => {
            let seconds = args.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS);
            if seconds == 0 {
                return Err(Error::Config(
                    "BACKUP_INTERVAL_SECONDS must be at least 1".into(),
                ));
            }
            Ok(Schedule::Interval(Duration::from_secs(seconds)))
        }
    }
}

fn status_addr(args: &DaemonArgs) -> Result<SocketAddr> {
    let ip: IpAddr = args.status_bind.parse().map_err(|_| {
        Error::Config(format!(
            "STATUS_BIND '{}' is not an IP address",
            args.status_bind
        ))
    })?;
    let port = u16::try_from(args.status_port).map_err(|_| {
        Error::Config(format!(
            "STATUS_PORT {} is not a port number",
            args.status_port
        ))
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// `STATUS_TOKEN`, or the content of `STATUS_TOKEN_FILE`; an empty or
/// unreadable file stops start-up rather than leaving the status open.
fn status_token(args: &DaemonArgs) -> Result<Option<StatusToken>> {
    let token = secret(
        "STATUS_TOKEN",
        args.status_token.as_deref(),
        args.status_token_file.as_deref(),
    )?;
    Ok(token.map(|token| StatusToken::new(token.value())))
}

/// Everything the restore service needs, validated at start.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    pub database: Database,
    pub backup: BackupConfig,
    pub watch_dir: PathBuf,
    pub failed_dir: PathBuf,
    pub state_file: PathBuf,
    pub poll_interval: Duration,
    pub settle: Duration,
    pub use_notify: bool,
    pub stop_containers: Vec<String>,
    pub start_containers: Vec<String>,
    pub allow_missing_containers: bool,
    pub stop_timeout: Duration,
    /// `RESTORE_STOP_WAIT_SECONDS`, `None` when unset (the wait then
    /// depends on the restore's order: `restore::containers::StopWait`).
    pub stop_wait: Option<u64>,
    pub start_wait: Duration,
    /// How long starting containers is retried while the engine does not
    /// answer (`RESTORE_START_RETRY_SECONDS`).
    pub start_retry: Duration,
    pub health_timeout: Duration,
    pub safety_backup: bool,
    /// Decrypt `.enc` files; the safety backup encrypts with them too.
    pub keys: Keys,
    pub strategy: Strategy,
    pub keep_previous: usize,
    /// Restore a dump that shares no table with the live database's
    /// non-empty ones (`RESTORE_ALLOW_SCHEMA_CHANGE`).
    pub allow_schema_change: bool,
    pub docker_host: Option<String>,
    /// The bucket one-shot restores read from: the URL's bucket (and no
    /// prefix: the URL names the whole key) for `--file s3://BUCKET/KEY`,
    /// else `AWS_S3_BUCKET` under `AWS_S3_PREFIX`; `None` when neither is
    /// given.
    pub s3: Option<ValidS3Settings>,
    /// `RESTORE_REQUIRE_ENCRYPTED`: only `.enc` files are restored.
    pub require_encrypted: bool,
    /// `HOOK_BEFORE_RESTORE`, `HOOK_AFTER_RESTORE`, `HOOK_RESTORE_FAILED`.
    pub hooks: HookConfig,
}

impl RestoreConfig {
    pub fn from_args(args: &RestoreArgs) -> Result<Self> {
        let database = match resolve_database(&args.database)? {
            // The app's URL path is relative to its working folder; here the
            // file is reached through RESTORE_SQLITE_BASE or RESTORE_SQLITE_PATH.
            Database::Sqlite(target) => Database::Sqlite(SqliteTarget {
                path: match args.sqlite_path.as_deref().filter(|p| !p.is_empty()) {
                    Some(path) => PathBuf::from(path),
                    None => Path::new(&args.sqlite_base).join(&target.path),
                },
            }),
            pg => pg,
        };
        let watch_dir = PathBuf::from(&args.watch_dir);
        let failed_dir = match args.failed_dir.as_deref().filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => watch_dir.parent().unwrap_or(Path::new("/")).join("failed"),
        };
        let strategy = args
            .pg_strategy
            .parse::<Strategy>()
            .map_err(|e| Error::Config(format!("RESTORE_PG_STRATEGY: {e}")))?;
        if args.poll_interval == 0 {
            return Err(Error::Config(
                "RESTORE_POLL_INTERVAL must be at least 1".into(),
            ));
        }
        let paths = Paths::from_args(&args.dir)?;
        // As the old helper did, a key beside the watch folder's parent
        // (`/restore/.encryption_key`) also decrypts.
        let keys = load_keys(&args.encryption, &paths)?.with_decrypt_only_file(
            watch_dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join(KEY_FILE_NAME),
        )?;
        // The status file (the restore writes its `last_restore_*` keys
        // there) is BACKUP_STATUS_FILE, else beside the safety backups:
        // with BACKUP_DIR set that is the backup side's own status file.
        let safety = safety_dir(args.dir.backup_dir.as_deref(), &watch_dir);
        let safety_paths = Paths {
            status_file: match args.dir.status_file.as_deref().filter(|p| !p.is_empty()) {
                Some(file) => PathBuf::from(file),
                None => safety.join("backup-status.json"),
            },
            backup_dir: safety,
        };
        // A malformed s3:// URL is the restore mode's to report, as it
        // reports every other problem with --file.
        let s3 = match args.file.as_deref().map(parse_s3_url) {
            Some(Ok((bucket, _key))) => Some(s3_settings_in(&args.s3, &bucket, "")?),
            _ => s3_settings(&args.s3)?,
        };
        let backup = BackupConfig {
            database: database.clone(),
            keys: keys.clone(),
            // Safety backups stay local: they are a way back from this
            // restore, not part of the offsite series.
            remote: None,
            // Part of the restore, whose hooks run around it.
            hooks: HookConfig::none(),
            paths: safety_paths,
            retention: Policy {
                days: 0,
                keep_min: 0,
            },
            compression_level: args.compression_level,
            timeout: Duration::from_secs(6 * 3600),
        };
        Ok(RestoreConfig {
            database,
            backup,
            watch_dir,
            failed_dir,
            state_file: PathBuf::from(&args.state_file),
            poll_interval: Duration::from_secs(args.poll_interval),
            settle: Duration::from_secs(args.settle_seconds),
            use_notify: args.use_notify,
            stop_containers: names(&args.stop_containers),
            start_containers: names(&args.start_containers),
            allow_missing_containers: args.allow_missing_containers,
            stop_timeout: Duration::from_secs(args.stop_timeout),
            stop_wait: args.stop_wait_seconds.0,
            start_wait: Duration::from_secs(args.start_wait_seconds),
            start_retry: Duration::from_secs(args.start_retry_seconds),
            health_timeout: Duration::from_secs(args.health_timeout),
            safety_backup: args.safety_backup,
            keys,
            strategy,
            keep_previous: usize::try_from(args.keep_previous).unwrap_or(usize::MAX),
            allow_schema_change: args.allow_schema_change,
            docker_host: args.docker_host.clone().filter(|h| !h.is_empty()),
            s3,
            require_encrypted: args.require_encrypted,
            hooks: restore_hooks(&args.hooks)?,
        })
    }

    pub fn uses_containers(&self) -> bool {
        !self.stop_containers.is_empty() || !self.start_containers.is_empty()
    }

    /// Named in RESTORE_STOP_CONTAINERS or RESTORE_START_CONTAINERS: the
    /// only containers backupd ever starts, whatever a state file says.
    pub fn is_configured(&self, name: &str) -> bool {
        self.stop_containers.iter().any(|c| c == name)
            || self.start_containers.iter().any(|c| c == name)
    }
}

/// A comma-separated list of container names.
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Where safety backups go: `BACKUP_DIR` when it is set (to something), else
/// `<parent of the watch folder>/safety`. The app's own db-restore service
/// mounts only `/restore`, so the image's `/backups` is not a volume there and
/// a safety copy written into it would vanish with the container.
fn safety_dir(backup_dir: Option<&str>, watch_dir: &Path) -> PathBuf {
    match backup_dir.filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => watch_dir.parent().unwrap_or(Path::new("/")).join("safety"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(argv: &[&str]) -> crate::cli::Command {
        use clap::Parser;
        let argv = ["backupd"].iter().chain(argv);
        crate::cli::Cli::try_parse_from(argv).unwrap().command
    }

    fn daemon_args(extra: &[&str]) -> DaemonArgs {
        let mut argv = vec!["backup", "--database-url", "sqlite:///app.db"];
        argv.extend_from_slice(extra);
        match command(&argv) {
            crate::cli::Command::Backup(args) => args,
            _ => unreachable!(),
        }
    }

    fn restore_args(extra: &[&str]) -> RestoreArgs {
        let mut argv = vec!["restore", "--database-url", "sqlite:///app.db"];
        argv.extend_from_slice(extra);
        match command(&argv) {
            crate::cli::Command::Restore(args) => args,
            _ => unreachable!(),
        }
    }

    fn drill_config(argv: &[&str]) -> Result<DrillConfig> {
        let mut full = vec!["drill"];
        full.extend_from_slice(argv);
        match command(&full) {
            crate::cli::Command::Drill(args) => DrillConfig::from_args(&args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_drill_server_is_a_postgresql_url_for_a_postgresql_database() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_str().unwrap();
        let pg = [
            "--database-url",
            "postgresql://app:pw@db/appdb",
            "--backup-dir",
            dir,
        ];
        let cfg = drill_config(&pg).unwrap();
        assert_eq!(cfg.which, crate::drill::Which::Latest);
        assert!(cfg.settings.drill_server.is_none());
        let mut with_server = pg.to_vec();
        with_server.extend([
            "--drill-database-url",
            "postgresql://d:pw2@drill/postgres",
            "x.sql.gz",
        ]);
        let cfg = drill_config(&with_server).unwrap();
        assert_eq!(
            cfg.settings.drill_server.unwrap().host.as_deref(),
            Some("drill")
        );
        assert_eq!(cfg.which, crate::drill::Which::File("x.sql.gz".into()));
        let mut sqlite_server = pg.to_vec();
        sqlite_server.extend(["--drill-database-url", "sqlite:///x.db"]);
        let err = drill_config(&sqlite_server).unwrap_err().to_string();
        assert!(
            err.contains("DRILL_DATABASE_URL must be a PostgreSQL URL"),
            "{err}"
        );
        let sqlite = [
            "--database-url",
            "sqlite:///app.db",
            "--backup-dir",
            dir,
            "--drill-database-url",
            "postgresql://d@drill/postgres",
        ];
        let err = drill_config(&sqlite).unwrap_err().to_string();
        assert!(err.contains("the configured database is SQLite"), "{err}");
    }

    fn notify_args(urls: Option<&str>, file: Option<&str>) -> NotifyArgs {
        NotifyArgs {
            notify_urls: urls.map(str::to_string),
            notify_urls_file: file.map(str::to_string),
            notify_level: "error".into(),
            notify_timeout_seconds: 10,
            backup_ping_url: None,
            backup_ping_url_file: None,
        }
    }

    #[test]
    fn notification_urls_come_from_the_variable_or_its_file() {
        let none = NotifyConfig::from_args(&notify_args(None, Some(""))).unwrap();
        assert!(none.destinations.is_empty());

        let direct = NotifyConfig::from_args(&notify_args(
            Some("https://hooks.example/a,ntfy://ntfy.sh/t"),
            None,
        ))
        .unwrap();
        let kinds: Vec<&str> = direct.destinations.iter().map(Destination::kind).collect();
        assert_eq!(kinds, ["webhook", "ntfy"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notify-urls");
        std::fs::write(&file, "gotify://g.example/Tok\ndiscord://t@1\n").unwrap();
        let path = file.to_str().unwrap();
        let from_file = NotifyConfig::from_args(&notify_args(None, Some(path))).unwrap();
        assert_eq!(from_file.destinations.len(), 2);

        std::fs::write(&file, "ntfy://alice:hunter2@ntfy.example/").unwrap();
        let message = NotifyConfig::from_args(&notify_args(None, Some(path)))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "NOTIFY_URLS_FILE ({path}), entry 1: ntfy://alice:***@ntfy.example/:"
            )),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
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

    #[tokio::test]
    async fn bad_s3_settings_are_reported_by_config_and_connect_takes_what_it_built() {
        // Checks that used to wait for `S3Store::connect` now fail here.
        let mut args = s3_args(&[]);
        args.bucket = Some("a/b".into());
        let err = s3_settings(&args).unwrap_err().to_string();
        assert!(err.starts_with("AWS_S3_BUCKET"), "{err}");
        for (extra, variable) in [
            (&["--s3-endpoint-url", "minio:9000"][..], "AWS_ENDPOINT_URL"),
            (&["--s3-storage-class", "cold"][..], "AWS_S3_STORAGE_CLASS"),
            (&["--aws-access-key-id", "AKID"][..], "AWS_ACCESS_KEY_ID"),
        ] {
            let err = s3_settings(&s3_args(extra)).unwrap_err().to_string();
            assert!(err.starts_with(variable), "{extra:?}: {err}");
        }
        // What config returns is already valid: connect has nothing left to
        // refuse (it cannot even be given unchecked settings).
        let settings = s3_settings(&s3_args(&[
            "--s3-endpoint-url",
            "http://127.0.0.1:9",
            "--s3-storage-class",
            "standard_ia",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(settings.storage_class.as_deref(), Some("STANDARD_IA"));
        crate::store::s3::S3Store::connect(settings).await.unwrap();
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

    fn encryption(key: Option<&str>, file: Option<&Path>) -> EncryptionArgs {
        EncryptionArgs {
            encryption_key: key.map(String::from),
            encryption_key_file: file.map(|f| f.display().to_string()),
        }
    }

    #[test]
    fn a_bad_configured_key_fails_at_start_naming_the_source_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            backup_dir: dir.path().to_path_buf(),
            status_file: dir.path().join("status.json"),
        };
        let err = load_keys(&encryption(Some("not-a-key-at-all"), None), &paths).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        let message = err.to_string();
        assert!(message.starts_with("BACKUP_ENCRYPTION_KEY:"), "{message}");
        assert!(!message.contains("not-a-key-at-all"), "{message}");

        let file = dir.path().join("key");
        std::fs::write(&file, "not-a-key-either\n").unwrap();
        let message = load_keys(&encryption(None, Some(&file)), &paths)
            .unwrap_err()
            .to_string();
        let source = format!("BACKUP_ENCRYPTION_KEY_FILE ({}):", file.display());
        assert!(message.starts_with(&source), "{message}");
        assert!(!message.contains("not-a-key-either"), "{message}");
    }

    #[test]
    fn the_configured_key_comes_from_its_value_or_its_file_and_the_value_wins() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            backup_dir: dir.path().to_path_buf(),
            status_file: dir.path().join("status.json"),
        };
        let (direct, in_file) = (
            crate::crypto::fernet::Key::generate().to_base64(),
            crate::crypto::fernet::Key::generate().to_base64(),
        );
        let file = dir.path().join("key");
        std::fs::write(&file, format!("'{in_file}'\r\n")).unwrap();
        let encrypting = |args: &EncryptionArgs| {
            load_keys(args, &paths)
                .unwrap()
                .for_encryption()
                .unwrap()
                .map(|ring| ring.encrypting_key().to_base64())
        };
        assert_eq!(encrypting(&encryption(None, Some(&file))), Some(in_file));
        assert_eq!(
            encrypting(&encryption(Some(&direct), Some(&file))),
            Some(direct)
        );
        assert_eq!(encrypting(&encryption(Some(""), None)), None);

        std::fs::write(&file, "\n").unwrap();
        let message = load_keys(&encryption(None, Some(&file)), &paths)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            format!("BACKUP_ENCRYPTION_KEY_FILE: {} is empty", file.display())
        );
    }

    #[test]
    fn a_database_url_file_names_itself_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let args = DatabaseArgs {
            sqlalchemy_database_uri: None,
            sqlalchemy_database_uri_file: Some(missing.display().to_string()),
            database_url: Some("sqlite:///second.db".into()),
            database_url_file: None,
        };
        let message = resolve_database(&args).unwrap_err().to_string();
        assert!(
            message.starts_with("SQLALCHEMY_DATABASE_URI_FILE: cannot read"),
            "an unreadable file is not skipped: {message}"
        );
        let none = DatabaseArgs {
            sqlalchemy_database_uri: Some(String::new()),
            sqlalchemy_database_uri_file: None,
            database_url: None,
            database_url_file: Some(String::new()),
        };
        assert!(
            resolve_database(&none)
                .unwrap_err()
                .to_string()
                .starts_with("no database configured")
        );
    }

    #[test]
    fn the_status_token_comes_from_its_value_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_str().unwrap();
        let token = |extra: &[&str]| status_token(&daemon_args(extra));
        assert!(token(&[]).unwrap().is_none());
        assert!(token(&["--status-token", "t"]).unwrap().is_some());
        assert!(token(&["--status-token-file", path]).unwrap().is_some());
        assert!(
            token(&["--status-token", "t", "--status-token-file", "/nonexistent"])
                .unwrap()
                .is_some(),
            "the value wins; its file is not read"
        );
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            token(&["--status-token-file", path])
                .unwrap_err()
                .to_string(),
            format!("STATUS_TOKEN_FILE: {path} is empty")
        );
    }

    #[test]
    fn daemon_settings_name_the_variable() {
        let err = |extra: &[&str]| DaemonConfig::from_args(&daemon_args(extra)).unwrap_err();
        assert_eq!(
            err(&["--status-bind", "localhost"]).to_string(),
            "STATUS_BIND 'localhost' is not an IP address"
        );
        assert_eq!(
            err(&["--status-port", "70000"]).to_string(),
            "STATUS_PORT 70000 is not a port number"
        );
        assert_eq!(
            err(&["--interval-seconds", "0"]).to_string(),
            "BACKUP_INTERVAL_SECONDS must be at least 1"
        );
        let cfg = DaemonConfig::from_args(&daemon_args(&["--retry-seconds", "0"])).unwrap();
        assert!(cfg.retry.is_zero());
        assert_eq!(cfg.status_addr.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn a_restore_from_an_s3_url_reads_that_bucket_with_no_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("incoming");
        let watch = watch.to_str().unwrap();
        let configured = ["--s3-bucket", "mine", "--s3-prefix", "app"];
        let cfg = |extra: &[&str]| {
            let mut argv = vec!["--watch-dir", watch];
            argv.extend_from_slice(extra);
            RestoreConfig::from_args(&restore_args(&argv))
        };

        let mut from_url = configured.to_vec();
        from_url.extend(["--file", "s3://other/daily/x.sql.gz"]);
        let s3 = cfg(&from_url).unwrap().s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("other", ""));

        let s3 = cfg(&configured).unwrap().s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("mine", "app/"));

        assert!(cfg(&["--file", "/restore/x.sql.gz"]).unwrap().s3.is_none());

        // Checked at start, also when only the URL names a bucket.
        let message = cfg(&[
            "--file",
            "s3://other/x.sql.gz",
            "--s3-endpoint-url",
            "minio",
        ])
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("AWS_ENDPOINT_URL"), "{message}");
    }

    #[test]
    fn drills_are_off_unless_scheduled_and_a_bad_expression_names_the_variable() {
        let cfg = DaemonConfig::from_args(&daemon_args(&[])).unwrap();
        assert!(cfg.drills.is_none());
        assert_eq!(cfg.health_max_drill_age_seconds, None);
        let cfg = DaemonConfig::from_args(&daemon_args(&[
            "--drill-schedule",
            "0 5 * * 0",
            "--health-max-drill-age-seconds",
            "691200",
        ]))
        .unwrap();
        let drills = cfg.drills.expect("scheduled");
        assert!(drills.schedule.to_string().starts_with("cron '0 5 * * 0'"));
        assert_eq!(drills.settings.backup_dir, cfg.backup.paths.backup_dir);
        assert_eq!(cfg.health_max_drill_age_seconds, Some(691_200));
        let off = DaemonConfig::from_args(&daemon_args(&["--health-max-drill-age-seconds", "0"]));
        assert_eq!(off.unwrap().health_max_drill_age_seconds, None);
        let err = DaemonConfig::from_args(&daemon_args(&["--drill-schedule", "0 5 * *"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("BACKUP_DRILL_SCHEDULE"), "{err}");
        // A drill server for SQLite is refused whether drills are scheduled or not.
        let err = DaemonConfig::from_args(&daemon_args(&[
            "--drill-database-url",
            "postgresql://d@drill/postgres",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("the configured database is SQLite"), "{err}");
    }

    #[test]
    fn each_mode_takes_only_the_hooks_it_runs() {
        let backup = DaemonConfig::from_args(&daemon_args(&[
            "--hook-before-backup",
            "echo 'a' 'b'",
            "--hook-after-backup",
            "\"curl -fsS http://x\"",
        ]))
        .unwrap()
        .backup
        .hooks;
        assert_eq!(
            backup.command(HookPoint::BeforeBackup),
            Some("echo 'a' 'b'")
        );
        assert_eq!(
            backup.command(HookPoint::AfterBackup),
            Some("curl -fsS http://x")
        );
        assert_eq!(backup.command(HookPoint::BackupFailed), None);
        assert_eq!(backup.timeout, Duration::from_secs(300));
        let err = DaemonConfig::from_args(&daemon_args(&["--hook-timeout-seconds", "0"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("HOOK_TIMEOUT_SECONDS must be at least 1"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("incoming");
        let restore = RestoreConfig::from_args(&restore_args(&[
            "--watch-dir",
            watch.to_str().unwrap(),
            "--hook-after-restore",
            "psql -f /fixup.sql",
            "--hook-timeout-seconds",
            "7",
        ]))
        .unwrap();
        assert_eq!(
            restore.hooks.command(HookPoint::AfterRestore),
            Some("psql -f /fixup.sql")
        );
        assert_eq!(restore.hooks.timeout, Duration::from_secs(7));
        assert!(
            restore.backup.hooks.is_empty(),
            "the safety backup runs no hooks"
        );
    }

    #[test]
    fn restore_folders_default_beside_the_watch_folder() {
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("incoming");
        let args = restore_args(&[
            "--watch-dir",
            watch.to_str().unwrap(),
            "--stop-containers",
            " web, worker ,,",
        ]);
        let cfg = RestoreConfig::from_args(&args).unwrap();
        assert_eq!(cfg.failed_dir, dir.path().join("failed"));
        assert_eq!(cfg.backup.paths.backup_dir, dir.path().join("safety"));
        assert_eq!(
            cfg.backup.paths.status_file,
            dir.path().join("safety").join("backup-status.json")
        );
        assert_eq!(cfg.stop_containers, ["web", "worker"]);
        assert!(cfg.is_configured("worker") && !cfg.is_configured("db"));
    }

    #[test]
    fn the_restore_writes_the_backup_side_s_status_file_when_told_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("incoming");
        let status_file = |extra: &[&str]| {
            let mut argv = vec!["--watch-dir", watch.to_str().unwrap()];
            argv.extend_from_slice(extra);
            RestoreConfig::from_args(&restore_args(&argv))
                .unwrap()
                .backup
                .paths
                .status_file
        };
        assert_eq!(
            status_file(&["--backup-dir", "/backups"]),
            PathBuf::from("/backups/backup-status.json")
        );
        assert_eq!(
            status_file(&["--backup-dir", "/backups", "--status-file", "/run/s.json"]),
            PathBuf::from("/run/s.json")
        );
    }

    #[test]
    fn the_stop_wait_is_unset_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("incoming");
        let stop_wait = |extra: &[&str]| {
            let mut argv = vec!["--watch-dir", watch.to_str().unwrap()];
            argv.extend_from_slice(extra);
            RestoreConfig::from_args(&restore_args(&argv))
                .unwrap()
                .stop_wait
        };
        assert_eq!(stop_wait(&[]), None);
        assert_eq!(stop_wait(&["--stop-wait-seconds", ""]), None);
        assert_eq!(stop_wait(&["--stop-wait-seconds", "0"]), Some(0));
        assert_eq!(stop_wait(&["--stop-wait-seconds", "5"]), Some(5));
    }
}
