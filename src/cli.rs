//! The command line. Every setting is a flag that also reads its environment
//! variable (the names the old `db-backup` helper used), so `--help` is the
//! reference for both.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::values::{
    LogFormat, OptionalNumber, boolean, clean_value, compression_level, file_mode, log_format,
    optional_whole_number, retention_days, shell_command, whole_number,
};

/// Every environment variable backupd reads, with its default; shown by `--help`.
pub const ENVIRONMENT_HELP: &str = "\
Environment variables (each also a flag; quotes and a trailing \\r are stripped;
an empty value counts as unset):
  SQLALCHEMY_DATABASE_URI       database URL, used first
  SQLALCHEMY_DATABASE_URI_FILE  file holding it (Docker secret)
  DATABASE_URL                  database URL when the above is unset
  DATABASE_URL_FILE             file holding it (Docker secret)
  BACKUP_DIR                    backup folder         [default: /backups]
  BACKUP_STATUS_FILE            status JSON  [default: $BACKUP_DIR/backup-status.json]
  BACKUP_RETENTION_DAYS         delete older; 0 = off [default: 2]
  BACKUP_KEEP_MIN               newest kept per kind  [default: 3]
  BACKUP_COMPRESSION_LEVEL      gzip level 0-9        [default: 6]
  BACKUP_TIMEOUT_SECONDS        stop a longer backup  [default: 21600; 0 = none]
  BACKUP_FILE_MODE              mode of files written [default: 0640; never o+r]
  BACKUP_ENCRYPTION_KEY         Fernet key(s), comma-separated; first encrypts
                                [default: $BACKUP_DIR/.encryption_key if present]
  BACKUP_ENCRYPTION_KEY_FILE    file holding it (Docker secret)
  AWS_S3_BUCKET                 copy every backup here (empty: no uploads)
  AWS_S3_PREFIX                 key prefix (folder) in the bucket
  AWS_REGION                    region [default: SDK chain; us-east-1 w/ endpoint]
  AWS_ACCESS_KEY_ID(_FILE)      credentials [default: the standard AWS chain:
  AWS_SECRET_ACCESS_KEY(_FILE)    environment, profile, web identity, instance role]
  AWS_SESSION_TOKEN(_FILE)      with temporary keys (STS) given as the two above
  AWS_ENDPOINT_URL              S3-compatible server (MinIO, Garage, Ceph)
  AWS_S3_FORCE_PATH_STYLE       http://host/bucket/key URLs [default: false]
  AWS_S3_STORAGE_CLASS          e.g. STANDARD_IA      [default: the bucket's]
  AWS_S3_SSE                    AES256 or aws:kms (+ AWS_S3_SSE_KMS_KEY_ID)
  AWS_S3_CHECKSUM_WHEN_REQUIRED [default: true with AWS_ENDPOINT_URL, else false]
  BACKUP_S3_RETENTION_DAYS      remote retention; 0 = off [default: local days]
  LOG_FORMAT                    text or json          [default: text]
  LOG_LEVEL                     error..trace, backupd's own logs [default: info];
                                other crates log warnings only, unless RUST_LOG
                                names them (RUST_LOG wins: debug,bollard=debug)
Daemon (backupd backup) and healthcheck:
  BACKUP_INTERVAL_SECONDS       between backups       [default: 86400]
  BACKUP_SCHEDULE               cron expression; wins over the interval
  TZ                            zone of the schedule  [default: UTC]
  BACKUP_ON_START               back up at start-up   [default: true]
  BACKUP_RETRY_SECONDS          retry a failure once  [default: 300; 0 = off]
  DB_STARTUP_TIMEOUT            wait for PostgreSQL   [default: 60]
  STATUS_BIND, STATUS_PORT      HTTP server [default: 127.0.0.1, 9090; image: 0.0.0.0]
  STATUS_TOKEN(_FILE)           bearer token for /status, /, /metrics (not /healthz)
  HEALTH_MAX_AGE_SECONDS        healthy if younger    [default: 172800]
  BACKUP_DRILL_SCHEDULE         cron of restore drills of the newest backup [default: off]
  DRILL_DATABASE_URL(_FILE)     PostgreSQL server drills load into [default: the database's]
  HEALTH_MAX_DRILL_AGE_SECONDS  unhealthy if no drill passed within [default: off]
  BACKUP_SHUTDOWN_TIMEOUT       stop grace on SIGTERM [default: 8]
Hooks (backupd backup and once; run by /bin/sh -c with BACKUPD_* context):
  HOOK_BEFORE_BACKUP            before each backup; a failure fails the run
  HOOK_AFTER_BACKUP             after each successful backup
  HOOK_BACKUP_FAILED            after a failed backup (BACKUPD_ERROR)
  HOOK_TIMEOUT_SECONDS          kill a hook and its children [default: 300]
Notifications (see docker/README.md for the URL forms):
  NOTIFY_URLS(_FILE)            destinations, comma-separated: https://…, ntfy://,
                                gotify://, discord://, slack://, telegram://, smtp://
  NOTIFY_LEVEL                  error or info (also successes) [default: error]
  NOTIFY_TIMEOUT_SECONDS        per attempt; the wait in all of once, restore --file
                                and a stopping restore service [default: 10]
  BACKUP_PING_URL(_FILE)        dead-man's switch: URL/start, URL, URL/fail
  (restore, notify-test: the same NOTIFY_* variables; backupd notify-test checks them)

Database URLs: postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB
  (also postgresql+psycopg2://, postgresql://, postgres://; libpq query
  parameters such as ?sslmode=require are passed on),
  sqlite:///relative/path.db or sqlite:////absolute/path.db

Exit codes: 0 success, 1 the job failed, 2 usage or configuration error.";

/// `backupd drill`'s environment variables.
pub const DRILL_HELP: &str = "\
Drill environment variables (besides the database URL variables, see backupd --help):
  BACKUP_DIR                    where `latest` is looked for; the manifests [default: /backups]
  BACKUP_STATUS_FILE            last_drill* go here [default: $BACKUP_DIR/backup-status.json]
  DRILL_DATABASE_URL(_FILE)     PostgreSQL server to drill on (role with CREATEDB)
                                [default: the database's own server]
  BACKUP_ENCRYPTION_KEY(_FILE)  decrypts .enc backups, as does $BACKUP_DIR/.encryption_key
  TMPDIR                        the private folder of a drill (a copy of the file)
  NOTIFY_URLS(_FILE), NOTIFY_LEVEL, NOTIFY_TIMEOUT_SECONDS
                                a failed drill is told (error), a passed one at info";

/// The restore service's environment variables, with defaults.
pub const RESTORE_HELP: &str = "\
Restore environment variables (besides the database URL variables above):
  RESTORE_WATCH_DIR             folder to watch       [default: /restore/incoming]
  RESTORE_STATE_FILE            state JSON   [default: /restore/state/restore-state.json]
  RESTORE_POLL_INTERVAL         sweep every N s       [default: 30]
  RESTORE_USE_NOTIFY            inotify wake-ups      [default: true]
  RESTORE_SETTLE_SECONDS        unchanged this long   [default: 5]
  RESTORE_FAILED_DIR            refused files go here [default: <watch dir>/../failed]
  RESTORE_STOP_CONTAINERS       names to stop, comma-separated
  RESTORE_START_CONTAINERS      extra names to start afterwards
  RESTORE_ALLOW_MISSING_CONTAINERS  go on if one is missing [default: false]
  RESTORE_STOP_TIMEOUT          docker stop grace     [default: 30]
  RESTORE_STOP_WAIT_SECONDS     wait after stopping   [default: 5 inplace/SQLite, 0 staging]
  RESTORE_START_WAIT_SECONDS    wait after starting   [default: 5]
  RESTORE_HEALTH_TIMEOUT        wait for healthy      [default: 120]
  RESTORE_SAFETY_BACKUP         back up before restoring [default: true]
  RESTORE_REQUIRE_ENCRYPTED     refuse plain (non-.enc) files [default: false]
  RESTORE_PG_STRATEGY           staging or inplace    [default: staging]
  RESTORE_KEEP_PREVIOUS         previous databases kept [default: 1]
  RESTORE_ALLOW_SCHEMA_CHANGE   restore a dump sharing no table with the live
                                database's non-empty ones [default: false]
  RESTORE_SQLITE_PATH           SQLite file to replace [default: BASE + URL path]
  RESTORE_SQLITE_BASE           base for the URL path  [default: /app]
  DOCKER_HOST                   Docker socket [default: unix:///var/run/docker.sock]
  BACKUP_ENCRYPTION_KEY(_FILE)  decrypts .enc files, as do $BACKUP_DIR/.encryption_key
                                and <parent of RESTORE_WATCH_DIR>/.encryption_key
  AWS_S3_BUCKET, AWS_*          for --file s3://BUCKET/KEY and --from-s3 (see backupd --help)
  BACKUP_DIR                    safety backups go here, when set
                                [default: <parent of RESTORE_WATCH_DIR>/safety]
  HOOK_BEFORE_RESTORE           after the check, before any stop; a failure refuses
  HOOK_AFTER_RESTORE            after the swap, before the containers start
  HOOK_RESTORE_FAILED           after a failed restore (BACKUPD_ERROR)
  HOOK_TIMEOUT_SECONDS          kill a hook and its children [default: 300]";

#[derive(Debug, Parser)]
#[command(
    name = "backupd",
    version,
    about = "Backs up the database of a Docker Compose web stack (PostgreSQL or SQLite)"
)]
#[command(after_help = ENVIRONMENT_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub files: FileArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take one backup now, apply retention, update the status file and exit.
    /// The last line on stdout is the path of the new backup.
    #[command(after_help = ENVIRONMENT_HELP)]
    Once(BackupArgs),

    /// Run as a daemon: a backup at start-up and then on the schedule, with
    /// status, health and metrics over HTTP, until SIGTERM or SIGINT.
    #[command(after_help = ENVIRONMENT_HELP)]
    Backup(DaemonArgs),

    /// Watch RESTORE_WATCH_DIR and restore dropped backups (the db-restore
    /// service); with --file, restore one file and exit.
    #[command(after_help = RESTORE_HELP)]
    Restore(RestoreArgs),

    /// Exit 0 when the status file shows a successful backup younger than
    /// HEALTH_MAX_AGE_SECONDS, 1 otherwise (for Docker's HEALTHCHECK).
    Healthcheck {
        #[command(flatten)]
        dir: DirArgs,

        #[command(flatten)]
        health: HealthArgs,
    },

    /// Check a backup without restoring it: the .sha256 sidecar, the
    /// Fernet token (.enc), the gzip stream, and the content (SQLite
    /// integrity_check, pg_dump's trailer).
    Verify {
        /// The backup file to check.
        file: PathBuf,

        #[command(flatten)]
        dir: DirArgs,

        #[command(flatten)]
        encryption: EncryptionArgs,
    },

    /// Prove that a backup restores: load it into a scratch database
    /// (`<db>_drill_<stamp>` on DRILL_DATABASE_URL or the database's own
    /// server; SQLite: a private copy), compare every table's row count with
    /// its manifest, drop the copy, record the result in the status file.
    /// Exit 0 when the drill passes, 1 with the reason otherwise.
    #[command(after_help = DRILL_HELP)]
    Drill(DrillArgs),

    /// List the backups in BACKUP_DIR (or, with --remote, in the bucket), newest first.
    List {
        #[command(flatten)]
        dir: DirArgs,

        #[command(flatten)]
        encryption: EncryptionArgs,

        #[command(flatten)]
        s3: S3Args,

        /// List the backups under AWS_S3_BUCKET/AWS_S3_PREFIX instead.
        #[arg(long, conflicts_with = "verify")]
        remote: bool,

        /// Also verify every backup fully (reads every file).
        #[arg(long)]
        verify: bool,
    },

    /// Print a new Fernet key (the format of BACKUP_ENCRYPTION_KEY and
    /// .encryption_key, as Python's Fernet.generate_key() writes it).
    Keygen,

    /// Print the status JSON of the last backup.
    Status {
        #[command(flatten)]
        dir: DirArgs,
    },

    /// Send a test message to every NOTIFY_URLS destination and the
    /// BACKUP_PING_URL, and print how each went (exit 1 if any failed,
    /// 2 if none is configured).
    NotifyTest {
        #[command(flatten)]
        notify: NotifyArgs,

        /// Names the database in the message, when set (never its credentials).
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// `backupd drill`: the backup to drill and where.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// The backup to drill: a file, or `latest` (the newest backup backupd wrote in
    /// BACKUP_DIR for the configured database; `./latest` for a file of that name).
    #[arg(default_value = "latest", value_name = "FILE|latest")]
    pub file: String,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub dir: DirArgs,

    #[command(flatten)]
    pub encryption: EncryptionArgs,

    #[command(flatten)]
    pub server: DrillServerArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Where PostgreSQL backups are drilled.
#[derive(Debug, Clone, Args)]
pub struct DrillServerArgs {
    /// PostgreSQL server to load drills into (its role needs CREATEDB) [default: the
    /// database's own server].
    #[arg(long, env = "DRILL_DATABASE_URL", hide_env_values = true, value_parser = clean_value)]
    pub drill_database_url: Option<String>,

    /// File holding DRILL_DATABASE_URL (Docker secret).
    #[arg(long, env = "DRILL_DATABASE_URL_FILE", value_parser = clean_value)]
    pub drill_database_url_file: Option<String>,
}

/// A flag whose value is a secret, and the ways to give it that `ps` cannot show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretFlag {
    /// The clap argument id (the field name).
    id: &'static str,
    pub flag: &'static str,
    pub alternative: &'static str,
}

const SECRET_FLAGS: &[SecretFlag] = &[
    SecretFlag {
        id: "sqlalchemy_database_uri",
        flag: "--sqlalchemy-database-uri",
        alternative: "SQLALCHEMY_DATABASE_URI or SQLALCHEMY_DATABASE_URI_FILE",
    },
    SecretFlag {
        id: "database_url",
        flag: "--database-url",
        alternative: "DATABASE_URL or DATABASE_URL_FILE",
    },
    SecretFlag {
        id: "drill_database_url",
        flag: "--drill-database-url",
        alternative: "DRILL_DATABASE_URL or DRILL_DATABASE_URL_FILE",
    },
    SecretFlag {
        id: "encryption_key",
        flag: "--encryption-key",
        alternative: "BACKUP_ENCRYPTION_KEY or BACKUP_ENCRYPTION_KEY_FILE",
    },
    SecretFlag {
        id: "secret_access_key",
        flag: "--aws-secret-access-key",
        alternative: "AWS_SECRET_ACCESS_KEY or AWS_SECRET_ACCESS_KEY_FILE",
    },
    SecretFlag {
        id: "session_token",
        flag: "--aws-session-token",
        alternative: "AWS_SESSION_TOKEN or AWS_SESSION_TOKEN_FILE",
    },
    SecretFlag {
        id: "notify_urls",
        flag: "--notify-urls",
        alternative: "NOTIFY_URLS or NOTIFY_URLS_FILE",
    },
    SecretFlag {
        id: "backup_ping_url",
        flag: "--backup-ping-url",
        alternative: "BACKUP_PING_URL or BACKUP_PING_URL_FILE",
    },
];

impl Cli {
    /// Parses the command line (exiting on a usage error, as
    /// `Cli::parse`) and names the secrets that were given as flags rather
    /// than through the environment or a file.
    pub fn parse_checked() -> (Cli, Vec<SecretFlag>) {
        let matches = Cli::command().get_matches();
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        (cli, secret_flags_given(&matches))
    }
}

/// The secret flags whose value came from the command line, where every
/// local user can read it (`ps`, `/proc/PID/cmdline`).
pub fn secret_flags_given(matches: &ArgMatches) -> Vec<SecretFlag> {
    let mut found = Vec::new();
    let mut level = Some(matches);
    while let Some(m) = level {
        for secret in SECRET_FLAGS {
            // value_source panics on ids this (sub)command does not have.
            if m.ids().any(|id| id.as_str() == secret.id)
                && m.value_source(secret.id) == Some(ValueSource::CommandLine)
            {
                found.push(*secret);
            }
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    found
}

/// One warning per secret given as a flag (call once logging is set up).
pub fn warn_about_secret_flags(flags: &[SecretFlag]) {
    for secret in flags {
        tracing::warn!(
            flag = secret.flag,
            "{} was given on the command line, where every local user can read it (ps, /proc/PID/cmdline); use {} instead",
            secret.flag,
            secret.alternative
        );
    }
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text", value_parser = log_format)]
    pub log_format: LogFormat,

    /// Log level (RUST_LOG, when set, takes precedence and allows per-module filters).
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info", value_parser = clean_value)]
    pub log_level: String,
}

#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// Mode (octal) of the backups and every other file backupd writes; no bits for
    /// other users are allowed.
    #[arg(long, global = true, env = "BACKUP_FILE_MODE", default_value = "0640", value_parser = file_mode)]
    pub file_mode: u32,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL (SQLAlchemy form); takes precedence over DATABASE_URL.
    #[arg(long, env = "SQLALCHEMY_DATABASE_URI", hide_env_values = true, value_parser = clean_value)]
    pub sqlalchemy_database_uri: Option<String>,

    /// File holding SQLALCHEMY_DATABASE_URI (Docker secret).
    #[arg(long, env = "SQLALCHEMY_DATABASE_URI_FILE", value_parser = clean_value)]
    pub sqlalchemy_database_uri_file: Option<String>,

    /// Database URL, used when SQLALCHEMY_DATABASE_URI is not set.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = clean_value)]
    pub database_url: Option<String>,

    /// File holding DATABASE_URL (Docker secret).
    #[arg(long, env = "DATABASE_URL_FILE", value_parser = clean_value)]
    pub database_url_file: Option<String>,
}

/// Offsite copies in S3 or an S3-compatible server; off while AWS_S3_BUCKET is empty.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Bucket every new backup is copied to (empty: no uploads).
    #[arg(long = "s3-bucket", env = "AWS_S3_BUCKET", value_parser = clean_value)]
    pub bucket: Option<String>,

    /// Key prefix (folder) in the bucket.
    #[arg(long = "s3-prefix", env = "AWS_S3_PREFIX", default_value = "", value_parser = clean_value)]
    pub prefix: String,

    /// Region [default: the SDK's chain; us-east-1 with AWS_ENDPOINT_URL].
    #[arg(long = "aws-region", env = "AWS_REGION", value_parser = clean_value)]
    pub region: Option<String>,

    /// Access key id [default: the standard credential chain].
    #[arg(long = "aws-access-key-id", env = "AWS_ACCESS_KEY_ID", hide_env_values = true, value_parser = clean_value)]
    pub access_key_id: Option<String>,

    /// File holding AWS_ACCESS_KEY_ID (Docker secret).
    #[arg(long = "aws-access-key-id-file", env = "AWS_ACCESS_KEY_ID_FILE", value_parser = clean_value)]
    pub access_key_id_file: Option<String>,

    /// Secret access key.
    #[arg(long = "aws-secret-access-key", env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true, value_parser = clean_value)]
    pub secret_access_key: Option<String>,

    /// File holding AWS_SECRET_ACCESS_KEY (Docker secret).
    #[arg(long = "aws-secret-access-key-file", env = "AWS_SECRET_ACCESS_KEY_FILE", value_parser = clean_value)]
    pub secret_access_key_file: Option<String>,

    /// Session token of temporary credentials (STS), sent with the access key above.
    #[arg(long = "aws-session-token", env = "AWS_SESSION_TOKEN", hide_env_values = true, value_parser = clean_value)]
    pub session_token: Option<String>,

    /// File holding AWS_SESSION_TOKEN (Docker secret).
    #[arg(long = "aws-session-token-file", env = "AWS_SESSION_TOKEN_FILE", value_parser = clean_value)]
    pub session_token_file: Option<String>,

    /// URL of an S3-compatible server (MinIO, Garage, Ceph).
    #[arg(long = "s3-endpoint-url", env = "AWS_ENDPOINT_URL", value_parser = clean_value)]
    pub endpoint_url: Option<String>,

    /// Path-style URLs (http://host/bucket/key), which most self-hosted servers need.
    #[arg(long = "s3-force-path-style", env = "AWS_S3_FORCE_PATH_STYLE", default_value = "false", value_parser = boolean("AWS_S3_FORCE_PATH_STYLE", false))]
    pub force_path_style: bool,

    /// Storage class of uploaded objects (STANDARD, STANDARD_IA, GLACIER_IR, …).
    #[arg(long = "s3-storage-class", env = "AWS_S3_STORAGE_CLASS", default_value = "", value_parser = clean_value)]
    pub storage_class: String,

    /// Server-side encryption: AES256 or aws:kms.
    #[arg(long = "s3-sse", env = "AWS_S3_SSE", default_value = "", value_parser = clean_value)]
    pub sse: String,

    /// KMS key for AWS_S3_SSE=aws:kms [default: the bucket's].
    #[arg(long = "s3-sse-kms-key-id", env = "AWS_S3_SSE_KMS_KEY_ID", value_parser = clean_value)]
    pub sse_kms_key_id: Option<String>,

    /// Send checksums only where S3 requires them, as plain headers [default: true with AWS_ENDPOINT_URL, else false].
    #[arg(long = "s3-checksum-when-required", env = "AWS_S3_CHECKSUM_WHEN_REQUIRED", default_value = "", value_parser = clean_value)]
    pub checksum_when_required: String,

    /// Delete remote backups older than this many days; 0 = never [default: BACKUP_RETENTION_DAYS].
    #[arg(long = "s3-retention-days", env = "BACKUP_S3_RETENTION_DAYS", default_value = "", value_parser = clean_value)]
    pub s3_retention_days: String,
}

#[derive(Debug, Clone, Args)]
pub struct EncryptionArgs {
    /// Fernet key(s), comma-separated: the first encrypts new backups, every one decrypts
    /// [default: the key in $BACKUP_DIR/.encryption_key, if that file exists].
    #[arg(long, env = "BACKUP_ENCRYPTION_KEY", hide_env_values = true, value_parser = clean_value)]
    pub encryption_key: Option<String>,

    /// File holding BACKUP_ENCRYPTION_KEY (Docker secret).
    #[arg(long, env = "BACKUP_ENCRYPTION_KEY_FILE", value_parser = clean_value)]
    pub encryption_key_file: Option<String>,
}

/// Where notifications go. The URLs hold tokens and passwords: a secret,
/// given directly or as a file.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Notification destinations, comma-separated (webhook https://…, ntfy://, gotify://,
    /// discord://, slack://, telegram://, smtp://; see docker/README.md).
    #[arg(long = "notify-urls", env = "NOTIFY_URLS", hide_env_values = true, value_parser = clean_value)]
    pub notify_urls: Option<String>,

    /// File holding NOTIFY_URLS (Docker secret); commas or one URL per line.
    #[arg(long = "notify-urls-file", env = "NOTIFY_URLS_FILE", value_parser = clean_value)]
    pub notify_urls_file: Option<String>,

    /// `error` (failures, stale, recovered, a key it cannot read) or `info` (also
    /// every success, restore started/finished).
    #[arg(long, env = "NOTIFY_LEVEL", default_value = "error", value_parser = clean_value)]
    pub notify_level: String,

    /// Seconds per delivery attempt; also what `once` and `restore --file` wait in all
    /// for their notifications before they exit, and a stopping restore service too.
    #[arg(long, env = "NOTIFY_TIMEOUT_SECONDS", default_value = "10", value_parser = whole_number("NOTIFY_TIMEOUT_SECONDS", 10))]
    pub notify_timeout_seconds: u64,

    /// Dead-man's switch ping URL (healthchecks.io style): GET URL/start when a backup
    /// begins, GET URL on success, POST URL/fail with the error on failure.
    #[arg(long, env = "BACKUP_PING_URL", hide_env_values = true, value_parser = clean_value)]
    pub backup_ping_url: Option<String>,

    /// File holding BACKUP_PING_URL (Docker secret).
    #[arg(long, env = "BACKUP_PING_URL_FILE", value_parser = clean_value)]
    pub backup_ping_url_file: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// Directory the backups are written to [default: /backups; for `restore`, where
    /// safety backups go, default <parent of RESTORE_WATCH_DIR>/safety].
    // No clap default: `restore` must tell "set explicitly" from "unset"
    // (Paths::from_args applies /backups; an empty value counts as unset).
    #[arg(long, env = "BACKUP_DIR", value_parser = clean_value)]
    pub backup_dir: Option<String>,

    /// Status JSON file [default: $BACKUP_DIR/backup-status.json].
    #[arg(long, env = "BACKUP_STATUS_FILE", value_parser = clean_value)]
    pub status_file: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub dir: DirArgs,

    #[command(flatten)]
    pub encryption: EncryptionArgs,

    #[command(flatten)]
    pub s3: S3Args,

    #[command(flatten)]
    pub hooks: BackupHookArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    /// Delete backups older than this many days (0 turns retention off; non-digits are ignored).
    #[arg(long, env = "BACKUP_RETENTION_DAYS", default_value = "2", value_parser = retention_days)]
    pub retention_days: u32,

    /// The newest N backups of each kind are never deleted by age.
    #[arg(long, env = "BACKUP_KEEP_MIN", default_value = "3", value_parser = whole_number("BACKUP_KEEP_MIN", 3))]
    pub keep_min: u64,

    /// gzip compression level, 0 (none) to 9 (smallest).
    #[arg(long, env = "BACKUP_COMPRESSION_LEVEL", default_value = "6", value_parser = compression_level)]
    pub compression_level: u32,

    /// A backup still running after this many seconds is stopped and counts as failed.
    #[arg(long, env = "BACKUP_TIMEOUT_SECONDS", default_value = "21600", value_parser = whole_number("BACKUP_TIMEOUT_SECONDS", 21600))]
    pub timeout_seconds: u64,
}

/// Commands run (`/bin/sh -c`) around each backup, with `BACKUPD_*` context.
#[derive(Debug, Clone, Args)]
pub struct BackupHookArgs {
    /// Run before each backup (after the folder lock); a failure fails the run.
    #[arg(long, env = "HOOK_BEFORE_BACKUP", hide_env_values = true, value_parser = shell_command)]
    pub hook_before_backup: Option<String>,

    /// Run after each successful backup; a failure is logged and reported, the backup stays.
    #[arg(long, env = "HOOK_AFTER_BACKUP", hide_env_values = true, value_parser = shell_command)]
    pub hook_after_backup: Option<String>,

    /// Run after a failed backup, with BACKUPD_ERROR.
    #[arg(long, env = "HOOK_BACKUP_FAILED", hide_env_values = true, value_parser = shell_command)]
    pub hook_backup_failed: Option<String>,

    #[command(flatten)]
    pub timeout: HookTimeoutArgs,
}

/// Commands run (`/bin/sh -c`) around each restore, with `BACKUPD_*` context.
#[derive(Debug, Clone, Args)]
pub struct RestoreHookArgs {
    /// Run after the file was checked, before anything is stopped; a failure refuses the restore.
    #[arg(long, env = "HOOK_BEFORE_RESTORE", hide_env_values = true, value_parser = shell_command)]
    pub hook_before_restore: Option<String>,

    /// Run after the swap, before the containers start (a fix-up of the restored database).
    #[arg(long, env = "HOOK_AFTER_RESTORE", hide_env_values = true, value_parser = shell_command)]
    pub hook_after_restore: Option<String>,

    /// Run after a failed restore, with BACKUPD_ERROR.
    #[arg(long, env = "HOOK_RESTORE_FAILED", hide_env_values = true, value_parser = shell_command)]
    pub hook_restore_failed: Option<String>,

    #[command(flatten)]
    pub timeout: HookTimeoutArgs,
}

#[derive(Debug, Clone, Args)]
pub struct HookTimeoutArgs {
    /// A hook still running after this many seconds is killed with every process it started.
    #[arg(long, env = "HOOK_TIMEOUT_SECONDS", default_value = "300", value_parser = whole_number("HOOK_TIMEOUT_SECONDS", 300))]
    pub hook_timeout_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Healthy while the last successful backup is younger than this.
    #[arg(long, env = "HEALTH_MAX_AGE_SECONDS", default_value = "172800", value_parser = whole_number("HEALTH_MAX_AGE_SECONDS", 172_800))]
    pub health_max_age_seconds: u64,

    /// Unhealthy when no restore drill has passed within this many seconds (off when unset or 0).
    #[arg(long, env = "HEALTH_MAX_DRILL_AGE_SECONDS", value_parser = whole_number("HEALTH_MAX_DRILL_AGE_SECONDS", 0))]
    pub health_max_drill_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub backup: BackupArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    /// Seconds between backups [default: 86400]; ignored when BACKUP_SCHEDULE is set.
    #[arg(long, env = "BACKUP_INTERVAL_SECONDS", value_parser = whole_number("BACKUP_INTERVAL_SECONDS", 86_400))]
    pub interval_seconds: Option<u64>,

    /// Cron expression (5 fields, or 6/7 with seconds; @hourly, @daily, @weekly); wins over the interval.
    #[arg(long, env = "BACKUP_SCHEDULE", value_parser = clean_value)]
    pub schedule: Option<String>,

    /// Cron expression of restore drills of the newest backup (off when unset; weekly is a good
    /// start, e.g. `0 5 * * 0`), in the zone of TZ.
    #[arg(long, env = "BACKUP_DRILL_SCHEDULE", value_parser = clean_value)]
    pub drill_schedule: Option<String>,

    #[command(flatten)]
    pub drill: DrillServerArgs,

    /// Time zone of BACKUP_SCHEDULE (IANA name).
    #[arg(long = "time-zone", env = "TZ", default_value = "UTC", value_parser = clean_value)]
    pub tz: String,

    /// Take a backup at start-up.
    #[arg(long, env = "BACKUP_ON_START", default_value = "true", value_parser = boolean("BACKUP_ON_START", true))]
    pub on_start: bool,

    /// Retry a failed run once after this many seconds (0 = no retry).
    #[arg(long, env = "BACKUP_RETRY_SECONDS", default_value = "300", value_parser = whole_number("BACKUP_RETRY_SECONDS", 300))]
    pub retry_seconds: u64,

    /// At start-up, wait this long for PostgreSQL to accept connections.
    #[arg(long, env = "DB_STARTUP_TIMEOUT", default_value = "60", value_parser = whole_number("DB_STARTUP_TIMEOUT", 60))]
    pub db_startup_timeout: u64,

    /// Address of the status/health/metrics server (the image sets 0.0.0.0).
    #[arg(long, env = "STATUS_BIND", default_value = "127.0.0.1", value_parser = clean_value)]
    pub status_bind: String,

    /// Bearer token that /status, / and /metrics require (/healthz stays open).
    #[arg(long, env = "STATUS_TOKEN", hide_env_values = true, value_parser = clean_value)]
    pub status_token: Option<String>,

    /// File holding STATUS_TOKEN (Docker secret).
    #[arg(long, env = "STATUS_TOKEN_FILE", value_parser = clean_value)]
    pub status_token_file: Option<String>,

    /// Port of the status/health/metrics server.
    #[arg(long, env = "STATUS_PORT", default_value = "9090", value_parser = whole_number("STATUS_PORT", 9090))]
    pub status_port: u64,

    /// On SIGTERM during a backup, give it this long to stop cleanly.
    #[arg(long, env = "BACKUP_SHUTDOWN_TIMEOUT", default_value = "8", value_parser = whole_number("BACKUP_SHUTDOWN_TIMEOUT", 8))]
    pub shutdown_timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub dir: DirArgs,

    #[command(flatten)]
    pub encryption: EncryptionArgs,

    #[command(flatten)]
    pub s3: S3Args,

    #[command(flatten)]
    pub hooks: RestoreHookArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    /// Restore this one file and exit (0 restored, 1 failed) instead of watching;
    /// `s3://BUCKET/KEY` downloads it first.
    #[arg(long, conflicts_with = "from_s3")]
    pub file: Option<String>,

    /// Restore from the bucket and exit: `latest` (the newest backup of the configured
    /// database's kind under AWS_S3_PREFIX) or a backup's name.
    #[arg(long = "from-s3", value_name = "latest|NAME")]
    pub from_s3: Option<String>,

    /// With --file or --from-s3: print the plan (containers, target, strategy) and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Folder watched for backups to restore.
    #[arg(long, env = "RESTORE_WATCH_DIR", default_value = "/restore/incoming", value_parser = clean_value)]
    pub watch_dir: String,

    /// Restore state JSON.
    #[arg(long, env = "RESTORE_STATE_FILE", default_value = "/restore/state/restore-state.json", value_parser = clean_value)]
    pub state_file: String,

    /// Seconds between sweeps of the watch folder.
    #[arg(long, env = "RESTORE_POLL_INTERVAL", default_value = "30", value_parser = whole_number("RESTORE_POLL_INTERVAL", 30))]
    pub poll_interval: u64,

    /// Wake up on inotify events as well as the sweep (off for polling only).
    #[arg(long, env = "RESTORE_USE_NOTIFY", default_value = "true", value_parser = boolean("RESTORE_USE_NOTIFY", true))]
    pub use_notify: bool,

    /// A file counts once its size and mtime are unchanged this long.
    #[arg(long, env = "RESTORE_SETTLE_SECONDS", default_value = "5", value_parser = whole_number("RESTORE_SETTLE_SECONDS", 5))]
    pub settle_seconds: u64,

    /// Where refused and superseded files go [default: <parent of watch dir>/failed].
    #[arg(long, env = "RESTORE_FAILED_DIR", value_parser = clean_value)]
    pub failed_dir: Option<String>,

    /// Containers to stop during a restore, comma-separated.
    #[arg(long, env = "RESTORE_STOP_CONTAINERS", default_value = "", value_parser = clean_value)]
    pub stop_containers: String,

    /// Containers to start after a restore besides those stopped, comma-separated.
    #[arg(long, env = "RESTORE_START_CONTAINERS", default_value = "", value_parser = clean_value)]
    pub start_containers: String,

    /// Go on when a named container does not exist.
    #[arg(long, env = "RESTORE_ALLOW_MISSING_CONTAINERS", default_value = "false", value_parser = boolean("RESTORE_ALLOW_MISSING_CONTAINERS", false))]
    pub allow_missing_containers: bool,

    /// Grace period of `docker stop`, seconds.
    #[arg(long, env = "RESTORE_STOP_TIMEOUT", default_value = "30", value_parser = whole_number("RESTORE_STOP_TIMEOUT", 30))]
    pub stop_timeout: u64,

    /// Seconds to wait after stopping the containers [default: 5 before an inplace or SQLite restore, 0 before a staging swap]; a value set applies to both.
    #[arg(long, env = "RESTORE_STOP_WAIT_SECONDS", default_value = "", hide_default_value = true, value_parser = optional_whole_number("RESTORE_STOP_WAIT_SECONDS"))]
    pub stop_wait_seconds: OptionalNumber,

    /// Seconds to wait after starting.
    #[arg(long, env = "RESTORE_START_WAIT_SECONDS", default_value = "5", value_parser = whole_number("RESTORE_START_WAIT_SECONDS", 5))]
    pub start_wait_seconds: u64,

    /// Seconds to keep retrying to start containers while the Docker engine does not answer.
    #[arg(long, env = "RESTORE_START_RETRY_SECONDS", default_value = "180", value_parser = whole_number("RESTORE_START_RETRY_SECONDS", 180))]
    pub start_retry_seconds: u64,

    /// Seconds to wait for containers with a healthcheck to become healthy.
    #[arg(long, env = "RESTORE_HEALTH_TIMEOUT", default_value = "120", value_parser = whole_number("RESTORE_HEALTH_TIMEOUT", 120))]
    pub health_timeout: u64,

    /// Take a backup of the current database before restoring (name prefix pre-restore-).
    #[arg(long, env = "RESTORE_SAFETY_BACKUP", default_value = "true", value_parser = boolean("RESTORE_SAFETY_BACKUP", true))]
    pub safety_backup: bool,

    /// Restore only Fernet-encrypted (.enc) files; plain ones are refused.
    #[arg(long, env = "RESTORE_REQUIRE_ENCRYPTED", default_value = "false", value_parser = boolean("RESTORE_REQUIRE_ENCRYPTED", false))]
    pub require_encrypted: bool,

    /// PostgreSQL: `staging` (load into a new database, then swap) or `inplace` (drop, create, load).
    #[arg(long, env = "RESTORE_PG_STRATEGY", default_value = "staging", value_parser = clean_value)]
    pub pg_strategy: String,

    /// PostgreSQL: previous databases kept after a staging restore.
    #[arg(long, env = "RESTORE_KEEP_PREVIOUS", default_value = "1", value_parser = whole_number("RESTORE_KEEP_PREVIOUS", 1))]
    pub keep_previous: u64,

    /// PostgreSQL: restore a dump that shares no table with the live
    /// database's non-empty tables (a dump of another application).
    #[arg(long, env = "RESTORE_ALLOW_SCHEMA_CHANGE", default_value = "false", value_parser = boolean("RESTORE_ALLOW_SCHEMA_CHANGE", false))]
    pub allow_schema_change: bool,

    /// SQLite file to replace (overrides RESTORE_SQLITE_BASE + the URL's path).
    #[arg(long, env = "RESTORE_SQLITE_PATH", value_parser = clean_value)]
    pub sqlite_path: Option<String>,

    /// Base folder the SQLite URL's relative path is taken from.
    #[arg(long, env = "RESTORE_SQLITE_BASE", default_value = "/app", value_parser = clean_value)]
    pub sqlite_base: String,

    /// Docker socket.
    #[arg(long, env = "DOCKER_HOST", value_parser = clean_value)]
    pub docker_host: Option<String>,

    /// gzip level of the safety backup.
    #[arg(long, env = "BACKUP_COMPRESSION_LEVEL", default_value = "6", value_parser = compression_level)]
    pub compression_level: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_given_as_flags_are_named_and_environment_values_are_not() {
        let matches = Cli::command()
            .try_get_matches_from([
                "backupd",
                "once",
                "--database-url",
                "postgresql://app:pw@db/app",
                "--encryption-key",
                "k",
                "--aws-session-token",
                "t",
                "--backup-dir",
                "/tmp",
            ])
            .unwrap();
        let flags: Vec<&str> = secret_flags_given(&matches)
            .iter()
            .map(|f| f.flag)
            .collect();
        assert_eq!(
            flags,
            ["--database-url", "--encryption-key", "--aws-session-token"]
        );
        let matches = Cli::command()
            .try_get_matches_from(["backupd", "list", "--backup-dir", "/tmp"])
            .unwrap();
        assert!(secret_flags_given(&matches).is_empty());
        let matches = Cli::command()
            .try_get_matches_from(["backupd", "keygen"])
            .unwrap();
        assert!(secret_flags_given(&matches).is_empty());
    }
}
