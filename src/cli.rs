//! The command line. Every setting is a flag that also reads its environment
//! variable (the names the old `db-backup` helper used), so `--help` is the
//! reference for both.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    boolean, clean_value, compression_level, log_format, retention_days, whole_number,
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
  LOG_FORMAT                    text or json          [default: text]
  LOG_LEVEL                     error..trace          [default: info; RUST_LOG wins]
Daemon (backupd backup) and healthcheck:
  BACKUP_INTERVAL_SECONDS       between backups       [default: 86400]
  BACKUP_SCHEDULE               cron expression; wins over the interval
  TZ                            zone of the schedule  [default: UTC]
  BACKUP_ON_START               back up at start-up   [default: true]
  BACKUP_RETRY_SECONDS          retry a failure once  [default: 300; 0 = off]
  DB_STARTUP_TIMEOUT            wait for PostgreSQL   [default: 60]
  STATUS_BIND, STATUS_PORT      HTTP server           [default: 0.0.0.0, 9090]
  HEALTH_MAX_AGE_SECONDS        healthy if younger    [default: 172800]
  BACKUP_SHUTDOWN_TIMEOUT       stop grace on SIGTERM [default: 8]

Database URLs: postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB
  (also postgresql+psycopg2://, postgresql://, postgres://; libpq query
  parameters such as ?sslmode=require are passed on),
  sqlite:///relative/path.db or sqlite:////absolute/path.db

Exit codes: 0 success, 1 the job failed, 2 usage or configuration error.";

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

    /// Exit 0 when the status file shows a successful backup younger than
    /// HEALTH_MAX_AGE_SECONDS, 1 otherwise (for Docker's HEALTHCHECK).
    Healthcheck {
        #[command(flatten)]
        dir: DirArgs,

        #[command(flatten)]
        health: HealthArgs,
    },

    /// Check a backup without restoring it: the gzip stream, the .sha256
    /// sidecar, and the content (SQLite integrity_check, pg_dump's trailer).
    Verify {
        /// The backup file to check.
        file: PathBuf,
    },

    /// List the backups in BACKUP_DIR, newest first.
    List {
        #[command(flatten)]
        dir: DirArgs,

        /// Also verify every backup fully (reads every file).
        #[arg(long)]
        verify: bool,
    },

    /// Print the status JSON of the last backup.
    Status {
        #[command(flatten)]
        dir: DirArgs,
    },
}

/// text or json
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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

#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// Directory the backups are written to.
    #[arg(long, env = "BACKUP_DIR", default_value = "/backups", value_parser = clean_value)]
    pub backup_dir: String,

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

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Healthy while the last successful backup is younger than this.
    #[arg(long, env = "HEALTH_MAX_AGE_SECONDS", default_value = "172800", value_parser = whole_number("HEALTH_MAX_AGE_SECONDS", 172_800))]
    pub health_max_age_seconds: u64,
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

    /// Address of the status/health/metrics server.
    #[arg(long, env = "STATUS_BIND", default_value = "0.0.0.0", value_parser = clean_value)]
    pub status_bind: String,

    /// Port of the status/health/metrics server.
    #[arg(long, env = "STATUS_PORT", default_value = "9090", value_parser = whole_number("STATUS_PORT", 9090))]
    pub status_port: u64,

    /// On SIGTERM during a backup, give it this long to stop cleanly.
    #[arg(long, env = "BACKUP_SHUTDOWN_TIMEOUT", default_value = "8", value_parser = whole_number("BACKUP_SHUTDOWN_TIMEOUT", 8))]
    pub shutdown_timeout: u64,
}
