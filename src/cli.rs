//! The command line. Every setting is a flag that also reads its environment
//! variable (the names the old `db-backup` helper used), so `--help` is the
//! reference for both.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{clean_value, compression_level, log_format, retention_days, whole_number};

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
