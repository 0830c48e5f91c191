//! What a notification says: a [`Notice`], built from an event, rendered by
//! each destination in its own format. The generic webhook posts
//! [`Notice::webhook_json`], a versioned schema (see docker/README.md).

use chrono::{DateTime, Utc};

/// Which `NOTIFY_LEVEL` sends a notice: `error` sends only `Error` notices
/// (failures, stale, recovered, a key that cannot be read), `info` sends all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Error,
}

/// The version of the webhook JSON schema; a change to a key's meaning
/// or a removed key bumps it, a new key does not.
pub const WEBHOOK_SCHEMA_VERSION: u32 = 1;

/// Who is speaking: filled in from the configuration, never from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeContext {
    /// The container's or machine's host name.
    pub host: String,
    /// `postgresql` or `sqlite`.
    pub database_kind: &'static str,
    /// The database name (PostgreSQL) or file name (SQLite); no credentials.
    pub database_name: String,
}

/// One notification, as every destination renders it. All text is masked
/// already (events carry no secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The event's kebab-case name: `backup-failed`, `stale`, `test`, …
    pub event: String,
    /// `success`, `failure`, `stale`, `recovered`, `started`, `refused`, `test`.
    pub result: &'static str,
    pub severity: Severity,
    /// One line: "backup failed on db-backup (postgresql app)".
    pub title: String,
    /// A few plain lines for people: what happened, which file, what to do.
    pub text: String,
    pub database_kind: &'static str,
    pub database_name: String,
    pub file: Option<String>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    pub host: String,
    pub version: &'static str,
    pub time: DateTime<Utc>,
}
