//! What a notification says: a [`Notice`], built from an event, rendered by
//! each destination in its own format. The generic webhook posts
//! [`Notice::webhook_json`], a versioned schema (see README.md,
//! "Notifications").

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::clock::{Clock, SystemClock};
use crate::db::Database;
use crate::events::{
    BackupFailed, BackupFinished, DrillFailed, DrillFinished, Event, FailureKind, HookFailed,
    KeyUnreadable, OffsitePass, Origin, Recovered, RestoreFailed, RestoreFinished, RestoreRefused,
    RestoreStarted, Stale,
};

/// Which `NOTIFY_LEVEL` sends a notice: `error` sends only `Error` notices
/// (failures, stale, recovered, a key that cannot be read), `info` sends all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Error,
}

impl Severity {
    /// The word of `NOTIFY_LEVEL` and of the webhook's `severity` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Error => "error",
        }
    }

    /// Parses `NOTIFY_LEVEL` (empty means the default, `error`).
    pub fn parse_level(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "error" => Ok(Severity::Error),
            "info" => Ok(Severity::Info),
            other => Err(format!("NOTIFY_LEVEL must be error or info, not '{other}'")),
        }
    }
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

impl NoticeContext {
    /// The context of the configured database on this host: the database
    /// name or the SQLite file's name, never the URL (which holds the
    /// password).
    pub fn new(database: &Database) -> Self {
        let database_name = match database {
            Database::Postgres(pg) => pg.dbname.clone().unwrap_or_default(),
            Database::Sqlite(sqlite) => file_name(&sqlite.path),
        };
        NoticeContext {
            host: host_name(),
            database_kind: database.kind(),
            database_name,
        }
    }

    /// This host with no database (`backupd notify-test` without one configured).
    pub fn without_database() -> Self {
        NoticeContext {
            host: host_name(),
            database_kind: "none",
            database_name: String::new(),
        }
    }

    /// "db-backup (postgresql app)"
    fn who(&self) -> String {
        format!(
            "{} ({} {})",
            self.host, self.database_kind, self.database_name
        )
    }
}

/// `/etc/hostname` (a container's name there is its id or `hostname:`),
/// else `HOSTNAME`, else "unknown host".
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown host".into())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
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

/// Seconds rounded to milliseconds, as the status file writes them.
fn seconds(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Notice {
    /// A notice with the context filled in and nothing else.
    fn blank(
        event: &str,
        result: &'static str,
        severity: Severity,
        ctx: &NoticeContext,
        time: DateTime<Utc>,
    ) -> Self {
        Notice {
            event: event.to_string(),
            result,
            severity,
            title: String::new(),
            text: String::new(),
            database_kind: ctx.database_kind,
            database_name: ctx.database_name.clone(),
            file: None,
            size_bytes: None,
            sha256: None,
            duration_seconds: None,
            error: None,
            host: ctx.host.clone(),
            version: crate::VERSION,
            time,
        }
    }

    /// The notice for `event`, or `None` when people are not told about it
    /// (a backup starting, a restore phase, a shutdown, a skipped run, a
    /// clean offsite pass: the notifier turns the first clean pass after a
    /// failed one into [`Notice::offsite_caught_up`]).
    ///
    /// The time is the event's own when it carries one, else now.
    pub fn from_event(event: &Event, ctx: &NoticeContext) -> Option<Notice> {
        let now = || SystemClock.now();
        match event {
            Event::BackupFailed(failed)
                if matches!(
                    failed.error.kind,
                    FailureKind::Cancelled | FailureKind::Busy
                ) =>
            {
                None
            }
            Event::BackupFailed(failed) => Some(Self::backup_failed(failed, ctx)),
            Event::BackupFinished(done) => Some(Self::backup_finished(done, ctx)),
            Event::OffsitePass(pass) => pass
                .error
                .as_ref()
                .map(|error| Self::offsite_failed(pass, error, ctx, now)),
            Event::RestoreStarted(started) => Some(Self::restore_started(started, ctx)),
            Event::RestoreFinished(done) => Some(Self::restore_finished(done, ctx, now())),
            Event::RestoreFailed(failed) => Some(Self::restore_failed(failed, None, ctx, now())),
            Event::RestoreRefused(refused) => Some(Self::restore_refused(refused, ctx, now())),
            Event::Stale(stale) => Some(Self::stale(stale, ctx)),
            Event::Recovered(recovered) => Some(Self::recovered(recovered, ctx)),
            Event::KeyUnreadable(key) => Some(Self::key_unreadable(key, ctx, now())),
            Event::HookFailed(hook) => Some(Self::hook_failed(hook, ctx, now())),
            // A drill stopped by a shutdown says nothing about the backup.
            Event::DrillFailed(failed) if failed.error.is_cancelled() => None,
            Event::DrillFailed(failed) => Some(Self::drill_failed(failed, ctx)),
            Event::DrillFinished(done) => Some(Self::drill_finished(done, ctx)),
            Event::BackupStarted(_) | Event::BackupSkipped(_) | Event::RestorePhase(_) => None,
        }
    }

    fn backup_failed(failed: &BackupFailed, ctx: &NoticeContext) -> Notice {
        let time = failed.started_at
            + chrono::Duration::from_std(failed.duration).unwrap_or(chrono::Duration::zero());
        let mut notice = Self::blank("backup-failed", "failure", Severity::Error, ctx, time);
        notice.title = format!("backup failed on {}", ctx.who());
        notice.duration_seconds = Some(seconds(failed.duration));
        notice.error = Some(failed.error.message.clone());
        let when = if failed.could_not_start {
            "The backup could not start"
        } else {
            "The backup failed"
        };
        notice.text = format!(
            "{when} at {}: {}\nNo new backup was written. The daemon retries (BACKUP_RETRY_SECONDS) and runs again on its schedule; the status file and /healthz show the error.",
            stamp(time),
            failed.error.message
        );
        notice
    }

    fn backup_finished(done: &BackupFinished, ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank(
            "backup-finished",
            "success",
            Severity::Info,
            ctx,
            done.finished_at,
        );
        notice.title = format!("backup finished on {}", ctx.who());
        notice.file = Some(done.file.display().to_string());
        notice.size_bytes = Some(done.size);
        notice.sha256 = Some(done.sha256.clone());
        notice.duration_seconds = Some(seconds(done.duration));
        notice.text = format!(
            "Backup {} ({}) written in {:.1} s.\nsha256 {}",
            done.file.display(),
            crate::values::human_size(done.size),
            done.duration.as_secs_f64(),
            done.sha256
        );
        notice
    }

    fn offsite_failed(
        pass: &OffsitePass,
        error: &str,
        ctx: &NoticeContext,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Notice {
        let time = pass.finished_at.unwrap_or_else(now);
        let mut notice = Self::blank("offsite-failed", "failure", Severity::Error, ctx, time);
        notice.title = format!("offsite copy failed on {}", ctx.who());
        notice.error = Some(error.to_string());
        notice.text = format!(
            "The upload to the bucket did not finish: {error}\n{} uploaded, {} failed in this pass. Local backups are unaffected; every run tries again, and a message says when the bucket has caught up.",
            pass.uploaded.len(),
            pass.failed
        );
        notice
    }

    /// The first clean offsite pass after a failed one: the bucket holds
    /// every backup again. `Error` level, so it reaches everyone who was
    /// told of the failure.
    pub fn offsite_caught_up(pass: &OffsitePass, ctx: &NoticeContext) -> Notice {
        let time = pass.finished_at.unwrap_or_else(|| SystemClock.now());
        let mut notice = Self::blank("offsite-caught-up", "recovered", Severity::Error, ctx, time);
        notice.title = format!("offsite copies caught up on {}", ctx.who());
        notice.file = pass.uploaded.first().map(|sent| sent.name.clone());
        notice.text = format!(
            "The bucket is up to date again ({} uploaded in this pass).",
            pass.uploaded.len()
        );
        notice
    }

    fn restore_started(started: &RestoreStarted, ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank(
            "restore-started",
            "started",
            Severity::Info,
            ctx,
            started.at,
        );
        notice.title = format!("restore started on {}", ctx.who());
        notice.file = Some(started.file.display().to_string());
        notice.text = format!(
            "Restoring {} into the {} database {}. The app's containers are stopped until it ends.",
            started.file.display(),
            ctx.database_kind,
            ctx.database_name
        );
        notice
    }

    fn restore_finished(
        done: &RestoreFinished,
        ctx: &NoticeContext,
        time: DateTime<Utc>,
    ) -> Notice {
        let mut notice = Self::blank("restore-finished", "success", Severity::Info, ctx, time);
        notice.title = format!("restore finished on {}", ctx.who());
        notice.file = Some(done.file.display().to_string());
        notice.size_bytes = Some(done.size);
        notice.sha256 = Some(done.sha256.clone()).filter(|s| !s.is_empty());
        notice.duration_seconds = Some(seconds(done.duration));
        notice.text = format!(
            "Restored {} ({}) in {:.1} s.",
            done.file.display(),
            crate::values::human_size(done.size),
            done.duration.as_secs_f64()
        );
        notice
    }

    /// `origin` is where the file came from, when the caller knows it (the
    /// notifier remembers it from the restore's start): a dropped file is
    /// moved to the failed folder, a given one stays where it is.
    pub fn restore_failed(
        failed: &RestoreFailed,
        origin: Option<Origin>,
        ctx: &NoticeContext,
        time: DateTime<Utc>,
    ) -> Notice {
        let mut notice = Self::blank("restore-failed", "failure", Severity::Error, ctx, time);
        notice.title = format!("restore failed on {}", ctx.who());
        notice.file = Some(failed.file.display().to_string());
        notice.duration_seconds = Some(seconds(failed.duration));
        notice.error = Some(failed.error.message.clone());
        let went = match origin {
            Some(Origin::Dropped) => format!(
                "{} was moved to the failed folder (RESTORE_FAILED_DIR) with a .reason.json beside it.",
                file_name(&failed.file)
            ),
            Some(Origin::Given) => format!("{} was left where it is.", failed.file.display()),
            None => format!(
                "A file dropped into the watch folder is moved to the failed folder (RESTORE_FAILED_DIR); a file given with --file stays at {}.",
                failed.file.display()
            ),
        };
        notice.text = format!(
            "The restore of {} failed while {}: {}\n{went}\nThe restore state file's history says what happened to the database and the containers.",
            file_name(&failed.file),
            failed.phase.as_str(),
            failed.error.message
        );
        notice
    }

    fn restore_refused(
        refused: &RestoreRefused,
        ctx: &NoticeContext,
        time: DateTime<Utc>,
    ) -> Notice {
        let mut notice = Self::blank("restore-refused", "refused", Severity::Error, ctx, time);
        notice.title = format!("restore refused on {}", ctx.who());
        notice.file = Some(refused.file.display().to_string());
        notice.error = Some(refused.reason.clone());
        let went = match &refused.moved_to {
            Some(to) => format!("It was moved to {}.", to.display()),
            None => "It could not be moved to the failed folder and is still there.".into(),
        };
        notice.text = format!(
            "{} was not restored: {}\n{went} Nothing was changed.",
            file_name(&refused.file),
            refused.reason
        );
        notice
    }

    fn stale(stale: &Stale, ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank("stale", "stale", Severity::Error, ctx, stale.at);
        notice.title = format!("no recent backup on {}", ctx.who());
        notice.error = stale.last_error.clone();
        let last = match stale.last_success {
            Some(t) => format!("The last successful backup was at {}", stamp(t)),
            None => "No backup has ever succeeded".into(),
        };
        let why = match &stale.last_error {
            Some(e) => format!("\nThe last failure: {e}"),
            None => String::new(),
        };
        notice.text = format!(
            "{last}, more than HEALTH_MAX_AGE_SECONDS={} ago.{why}\nThis is said once; a message follows when a backup succeeds again.",
            stale.max_age.as_secs()
        );
        notice
    }

    fn recovered(recovered: &Recovered, ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank("recovered", "recovered", Severity::Error, ctx, recovered.at);
        notice.title = format!("backups succeed again on {}", ctx.who());
        notice.file = Some(recovered.file.display().to_string());
        notice.text = format!(
            "Backup {} succeeded; backups had been missing since {}.",
            recovered.file.display(),
            stamp(recovered.stale_since)
        );
        notice
    }

    fn key_unreadable(key: &KeyUnreadable, ctx: &NoticeContext, time: DateTime<Utc>) -> Notice {
        let mut notice = Self::blank("key-unreadable", "failure", Severity::Error, ctx, time);
        notice.title = format!("encryption key unreadable on {}", ctx.who());
        notice.file = Some(key.path.display().to_string());
        notice.error = Some(key.error.clone());
        notice.text = format!(
            "The encryption key file {} cannot be read: {}\nEvery backup fails until it is fixed (never a backup in the clear).",
            key.path.display(),
            key.error
        );
        notice
    }

    fn hook_failed(hook: &HookFailed, ctx: &NoticeContext, time: DateTime<Utc>) -> Notice {
        let mut notice = Self::blank("hook-failed", "failure", Severity::Error, ctx, time);
        notice.title = format!("{} failed on {}", hook.hook.variable(), ctx.who());
        notice.file = hook.file.as_ref().map(|f| f.display().to_string());
        notice.error = Some(hook.error.clone());
        notice.text = format!(
            "The {} hook ({}) failed: {}\nThe {} itself is not undone by this.",
            hook.hook.event(),
            hook.hook.variable(),
            hook.error,
            if matches!(
                hook.hook,
                crate::events::HookPoint::BeforeRestore
                    | crate::events::HookPoint::AfterRestore
                    | crate::events::HookPoint::RestoreFailed
            ) {
                "restore"
            } else {
                "backup"
            }
        );
        notice
    }

    fn drill_failed(failed: &DrillFailed, ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank(
            "drill-failed",
            "failure",
            Severity::Error,
            ctx,
            failed.finished_at,
        );
        notice.title = format!("restore drill failed on {}", ctx.who());
        notice.file = failed.file.as_ref().map(|f| f.display().to_string());
        notice.duration_seconds = Some(seconds(failed.duration));
        notice.error = Some(failed.error.message.clone());
        let which = failed
            .file
            .as_ref()
            .map_or_else(|| "no backup".to_string(), |f| f.display().to_string());
        notice.text = format!(
            "The restore drill of {which} at {} failed: {}\nThis backup may not restore as it is: look into it (backupd verify, the database) before a restore needs it. The scratch copy was removed; the status file (last_drill_error) and the log say more.",
            stamp(failed.finished_at),
            failed.error.message
        );
        notice
    }

    fn drill_finished(done: &DrillFinished, ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank(
            "drill-finished",
            "success",
            Severity::Info,
            ctx,
            done.finished_at,
        );
        notice.title = format!("restore drill passed on {}", ctx.who());
        notice.file = Some(done.file.display().to_string());
        notice.size_bytes = Some(done.size);
        notice.duration_seconds = Some(seconds(done.duration));
        notice.text = format!(
            "Drilled {} ({}) in {:.1} s: it loads, and {}.",
            done.file.display(),
            crate::values::human_size(done.size),
            done.duration.as_secs_f64(),
            done.manifest
        );
        notice
    }

    /// What `backupd notify-test` sends.
    pub fn test(ctx: &NoticeContext) -> Notice {
        let mut notice = Self::blank("test", "test", Severity::Error, ctx, SystemClock.now());
        notice.title = format!("test message from backupd on {}", ctx.who());
        notice.text = "backupd notify-test: if you read this, this destination works.".into();
        notice
    }

    /// The generic webhook's document, schema [`WEBHOOK_SCHEMA_VERSION`].
    /// Every key is always present (`null` when it does not apply).
    pub fn webhook_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema_version": WEBHOOK_SCHEMA_VERSION,
            "event": self.event,
            "result": self.result,
            "severity": self.severity.as_str(),
            "database": {
                "kind": self.database_kind,
                "name": self.database_name,
            },
            "file": self.file,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "duration_seconds": self.duration_seconds,
            "error": self.error,
            "host": self.host,
            "version": self.version,
            "time": stamp(self.time),
            "title": self.title,
            "text": self.text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BackupStarted, Failure, HookPoint, RestorePhase, Uploaded};
    use crate::restore::state::Phase;
    use chrono::TimeZone;
    use std::time::Duration;

    fn ctx() -> NoticeContext {
        NoticeContext {
            host: "db-backup".into(),
            database_kind: "postgresql",
            database_name: "app".into(),
        }
    }

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, h, 0, 0).unwrap()
    }

    fn failed(kind: FailureKind) -> Event {
        BackupFailed {
            database: "postgresql",
            started_at: at(1),
            could_not_start: false,
            duration: Duration::from_millis(2500),
            error: Failure::new(kind, "pg_dump failed: connection refused"),
        }
        .into()
    }

    fn finished() -> Event {
        BackupFinished {
            database: "postgresql",
            started_at: at(1),
            finished_at: at(2),
            file: "/backups/app-20261202T010000Z.sql.gz".into(),
            size: 3 * 1024 * 1024,
            raw_bytes: 9 * 1024 * 1024,
            sha256: "ab".repeat(32),
            duration: Duration::from_millis(1234),
            retention_deleted: vec![],
        }
        .into()
    }

    #[test]
    fn a_failed_drill_is_an_error_naming_the_file_and_a_passed_one_info() {
        let failed = |kind| -> Event {
            DrillFailed {
                file: Some("/backups/pg_dump-20261202T010000Z.sql.gz".into()),
                started_at: at(4),
                finished_at: at(5),
                duration: Duration::from_secs(60),
                error: Failure::new(kind, "the row counts differ from the manifest in 1 of 14 tables: public.users: 20 rows, the manifest says 21"),
            }
            .into()
        };
        let notice = Notice::from_event(&failed(FailureKind::Verify), &ctx()).unwrap();
        assert_eq!(
            (notice.event.as_str(), notice.result, notice.severity),
            ("drill-failed", "failure", Severity::Error)
        );
        assert_eq!(
            notice.title,
            "restore drill failed on db-backup (postgresql app)"
        );
        assert_eq!(
            notice.file.as_deref(),
            Some("/backups/pg_dump-20261202T010000Z.sql.gz")
        );
        assert!(
            notice
                .text
                .contains("public.users: 20 rows, the manifest says 21"),
            "{}",
            notice.text
        );
        assert_eq!(notice.time, at(5));
        assert_eq!(
            Notice::from_event(&failed(FailureKind::Cancelled), &ctx()),
            None
        );
        let passed = DrillFinished {
            file: "/backups/pg_dump-20261202T010000Z.sql.gz".into(),
            size: 2048,
            started_at: at(4),
            finished_at: at(5),
            duration: Duration::from_secs(60),
            manifest: "checked 14 tables against /backups/x.manifest.json".into(),
        };
        let notice = Notice::from_event(&passed.into(), &ctx()).unwrap();
        assert_eq!(
            (notice.event.as_str(), notice.result, notice.severity),
            ("drill-finished", "success", Severity::Info)
        );
        assert!(notice.text.contains("checked 14 tables"), "{}", notice.text);
    }

    #[test]
    fn a_failed_backup_is_an_error_but_a_shutdown_or_a_skip_is_nothing() {
        let notice = Notice::from_event(&failed(FailureKind::Database), &ctx()).unwrap();
        assert_eq!(notice.event, "backup-failed");
        assert_eq!(notice.result, "failure");
        assert_eq!(notice.severity, Severity::Error);
        assert_eq!(notice.title, "backup failed on db-backup (postgresql app)");
        assert_eq!(
            notice.error.as_deref(),
            Some("pg_dump failed: connection refused")
        );
        assert!(
            notice.text.contains("connection refused"),
            "{}",
            notice.text
        );
        assert_eq!(notice.duration_seconds, Some(2.5));
        assert_eq!(notice.time, at(1) + chrono::Duration::milliseconds(2500));
        assert_eq!(
            Notice::from_event(&failed(FailureKind::Cancelled), &ctx()),
            None
        );
        assert_eq!(Notice::from_event(&failed(FailureKind::Busy), &ctx()), None);
    }

    #[test]
    fn a_finished_backup_is_info_with_the_file_and_its_digest() {
        let notice = Notice::from_event(&finished(), &ctx()).unwrap();
        assert_eq!(
            (notice.event.as_str(), notice.result, notice.severity),
            ("backup-finished", "success", Severity::Info)
        );
        assert_eq!(
            notice.file.as_deref(),
            Some("/backups/app-20261202T010000Z.sql.gz")
        );
        assert_eq!(notice.size_bytes, Some(3 * 1024 * 1024));
        assert_eq!(notice.sha256, Some("ab".repeat(32)));
        assert_eq!(notice.time, at(2));
        assert!(notice.text.contains("3.0 MiB"), "{}", notice.text);
    }

    #[test]
    fn events_nobody_is_told_about_give_no_notice() {
        let quiet: [Event; 3] = [
            BackupStarted {
                database: "sqlite",
                at: at(1),
            }
            .into(),
            RestorePhase {
                file: "/restore/incoming/x.sql.gz".into(),
                phase: Phase::Loading,
            }
            .into(),
            OffsitePass::default().into(),
        ];
        for event in quiet {
            assert_eq!(Notice::from_event(&event, &ctx()), None, "{}", event.name());
        }
    }

    #[test]
    fn offsite_failure_and_catch_up_are_errors() {
        let pass = OffsitePass {
            uploaded: vec![],
            failed: 1,
            remote_deleted: vec![],
            error: Some("upload of a.sql.gz to s3://bucket/: SlowDown".into()),
            finished_at: Some(at(3)),
        };
        let notice = Notice::from_event(&pass.clone().into(), &ctx()).unwrap();
        assert_eq!(
            (notice.event.as_str(), notice.severity),
            ("offsite-failed", Severity::Error)
        );
        assert!(notice.text.contains("SlowDown"));
        let clean = OffsitePass {
            uploaded: vec![Uploaded {
                name: "a.sql.gz".into(),
                bytes: 1,
                duration: Duration::ZERO,
            }],
            finished_at: Some(at(4)),
            ..OffsitePass::default()
        };
        let caught_up = Notice::offsite_caught_up(&clean, &ctx());
        assert_eq!(
            (
                caught_up.event.as_str(),
                caught_up.result,
                caught_up.severity
            ),
            ("offsite-caught-up", "recovered", Severity::Error)
        );
        assert_eq!(caught_up.file.as_deref(), Some("a.sql.gz"));
        assert_eq!(caught_up.time, at(4));
    }

    #[test]
    fn restore_notices_say_why_and_where_the_file_went() {
        let file = std::path::PathBuf::from("/restore/incoming/app.sql.gz");
        let started = Notice::from_event(
            &RestoreStarted {
                file: file.clone(),
                origin: Origin::Dropped,
                at: at(5),
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            (started.event.as_str(), started.result, started.severity),
            ("restore-started", "started", Severity::Info)
        );
        let done = Notice::from_event(
            &RestoreFinished {
                file: file.clone(),
                size: 10,
                sha256: "cd".repeat(32),
                duration: Duration::from_secs(3),
                strategy: None,
                downtime: None,
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!((done.result, done.severity), ("success", Severity::Info));

        let failure = RestoreFailed {
            file: file.clone(),
            phase: Phase::Loading,
            duration: Duration::from_secs(1),
            error: Failure::new(FailureKind::Database, "psql: syntax error at line 3"),
            downtime: None,
        };
        let dropped = Notice::restore_failed(&failure, Some(Origin::Dropped), &ctx(), at(6));
        assert_eq!(dropped.severity, Severity::Error);
        assert!(dropped.text.contains("loading"), "{}", dropped.text);
        assert!(dropped.text.contains("syntax error"), "{}", dropped.text);
        assert!(dropped.text.contains("failed folder"), "{}", dropped.text);
        let given = Notice::restore_failed(&failure, Some(Origin::Given), &ctx(), at(6));
        assert!(given.text.contains("left where it is"), "{}", given.text);

        let refused = Notice::from_event(
            &RestoreRefused {
                file,
                reason: "superseded by app-2.sql.gz".into(),
                superseded_by: Some("app-2.sql.gz".into()),
                moved_to: Some("/restore/failed/app.sql.gz".into()),
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            (refused.event.as_str(), refused.result, refused.severity),
            ("restore-refused", "refused", Severity::Error)
        );
        assert_eq!(refused.error.as_deref(), Some("superseded by app-2.sql.gz"));
        assert!(refused.text.contains("/restore/failed/app.sql.gz"));
    }

    #[test]
    fn stale_recovered_key_and_hook_notices_are_errors() {
        let stale = Notice::from_event(
            &Stale {
                database: "postgresql",
                last_success: Some(at(1)),
                max_age: Duration::from_secs(3600),
                at: at(3),
                last_error: Some("connection refused".into()),
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!((stale.result, stale.severity), ("stale", Severity::Error));
        assert!(
            stale.text.contains("2026-12-02T01:00:00Z"),
            "{}",
            stale.text
        );
        assert!(stale.text.contains("HEALTH_MAX_AGE_SECONDS=3600"));
        assert!(stale.text.contains("connection refused"));
        let never = Notice::stale(
            &Stale {
                database: "postgresql",
                last_success: None,
                max_age: Duration::from_secs(60),
                at: at(3),
                last_error: None,
            },
            &ctx(),
        );
        assert!(never.text.starts_with("No backup has ever succeeded"));

        let recovered = Notice::from_event(
            &Recovered {
                database: "postgresql",
                stale_since: at(3),
                at: at(4),
                file: "/backups/x.sql.gz".into(),
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            (recovered.result, recovered.severity),
            ("recovered", Severity::Error)
        );
        let key = Notice::from_event(
            &KeyUnreadable {
                path: "/backups/.encryption_key".into(),
                error: "permission denied".into(),
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            (key.event.as_str(), key.severity),
            ("key-unreadable", Severity::Error)
        );
        let hook = Notice::from_event(
            &HookFailed {
                hook: HookPoint::AfterRestore,
                file: None,
                error: "exited with status 3".into(),
            }
            .into(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(hook.severity, Severity::Error);
        assert!(hook.title.starts_with("HOOK_AFTER_RESTORE failed"));
        assert!(hook.text.contains("restore itself"));
    }

    #[test]
    fn the_webhook_document_has_every_key_of_schema_1() {
        let json = Notice::from_event(&finished(), &ctx())
            .unwrap()
            .webhook_json();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["event"], "backup-finished");
        assert_eq!(json["result"], "success");
        assert_eq!(json["severity"], "info");
        assert_eq!(json["database"]["kind"], "postgresql");
        assert_eq!(json["database"]["name"], "app");
        assert_eq!(json["file"], "/backups/app-20261202T010000Z.sql.gz");
        assert_eq!(json["size_bytes"], 3 * 1024 * 1024);
        assert_eq!(json["sha256"], "ab".repeat(32));
        assert_eq!(json["duration_seconds"], 1.234);
        assert_eq!(json["error"], serde_json::Value::Null);
        assert_eq!(json["host"], "db-backup");
        assert_eq!(json["version"], crate::VERSION);
        assert_eq!(json["time"], "2026-12-02T02:00:00Z");
        assert!(
            json["title"]
                .as_str()
                .unwrap()
                .starts_with("backup finished")
        );
        assert!(json["text"].is_string());
        assert_eq!(json.as_object().unwrap().len(), 15);
    }

    #[test]
    fn the_context_names_the_database_never_its_credentials() {
        let pg = Database::parse("postgresql://app:s3cret@db:5432/shop", "DATABASE_URL").unwrap();
        let ctx = NoticeContext::new(&pg);
        assert_eq!(
            (ctx.database_kind, ctx.database_name.as_str()),
            ("postgresql", "shop")
        );
        assert!(!ctx.host.is_empty());
        let sqlite = Database::parse("sqlite:////data/app.db", "DATABASE_URL").unwrap();
        assert_eq!(NoticeContext::new(&sqlite).database_name, "app.db");
        let test = Notice::test(&ctx);
        assert_eq!((test.event.as_str(), test.result), ("test", "test"));
        assert!(!format!("{test:?}").contains("s3cret"));
    }

    #[test]
    fn notify_level_is_error_or_info() {
        assert_eq!(Severity::parse_level(""), Ok(Severity::Error));
        assert_eq!(Severity::parse_level("Info"), Ok(Severity::Info));
        let e = Severity::parse_level("debug").unwrap_err();
        assert!(e.contains("NOTIFY_LEVEL"), "{e}");
    }
}
