//! Prometheus metrics (OpenMetrics text), with the official client crate.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::events::{Event, FailureKind, Observer};
use crate::health::parse_timestamp;
use crate::state::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// `backupd_notifications_total{destination_kind, result}`: `result` is
/// `sent`, `failed` (after every retry) or `dropped` (the queue was full).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub destination_kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub last_success: FloatGauge,
    pub last_attempt: FloatGauge,
    pub last_duration: FloatGauge,
    pub last_size: Gauge,
    pub next_run: FloatGauge,
    pub backups: Family<ResultLabel, Counter>,
    pub retention_deleted: Counter,
    pub uploads: Family<ResultLabel, Counter>,
    pub upload_duration: FloatGauge,
    pub remote_retention_deleted: Counter,
    pub notifications: Family<NotificationLabels, Counter>,
    pub last_drill_success: FloatGauge,
    pub drills: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("backupd");
        let metrics = Metrics {
            last_success: FloatGauge::default(),
            last_attempt: FloatGauge::default(),
            last_duration: FloatGauge::default(),
            last_size: Gauge::default(),
            next_run: FloatGauge::default(),
            backups: Family::default(),
            retention_deleted: Counter::default(),
            uploads: Family::default(),
            upload_duration: FloatGauge::default(),
            remote_retention_deleted: Counter::default(),
            notifications: Family::default(),
            last_drill_success: FloatGauge::default(),
            drills: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful backup",
            metrics.last_success.clone(),
        );
        registry.register(
            "last_attempt_timestamp_seconds",
            "Unix time the last backup attempt started",
            metrics.last_attempt.clone(),
        );
        registry.register(
            "last_duration_seconds",
            "Duration of the last successful backup",
            metrics.last_duration.clone(),
        );
        registry.register(
            "last_size_bytes",
            "Size of the last successful backup file",
            metrics.last_size.clone(),
        );
        registry.register(
            "next_run_timestamp_seconds",
            "Unix time of the next scheduled backup",
            metrics.next_run.clone(),
        );
        // The client appends `_total` to counters.
        registry.register(
            "backups",
            "Backups attempted, by result",
            metrics.backups.clone(),
        );
        registry.register(
            "retention_deleted",
            "Backups deleted by retention",
            metrics.retention_deleted.clone(),
        );
        registry.register(
            "uploads",
            "Backups uploaded to S3, by result",
            metrics.uploads.clone(),
        );
        registry.register(
            "upload_duration_seconds",
            "Duration of the last upload of a backup to S3",
            metrics.upload_duration.clone(),
        );
        registry.register(
            "remote_retention_deleted",
            "Backups deleted from S3 by remote retention",
            metrics.remote_retention_deleted.clone(),
        );
        registry.register(
            "notifications",
            "Notifications and pings, by destination kind and result (sent, failed, dropped)",
            metrics.notifications.clone(),
        );
        registry.register(
            "last_drill_success_timestamp_seconds",
            "Unix time of the last restore drill that passed",
            metrics.last_drill_success.clone(),
        );
        registry.register(
            "drills",
            "Restore drills, by result",
            metrics.drills.clone(),
        );
        // Touch both results so a fresh daemon already exports zeros.
        for result in ["success", "failure"] {
            let _ = metrics.backups.get_or_create(&ResultLabel { result });
            let _ = metrics.uploads.get_or_create(&ResultLabel { result });
            let _ = metrics.drills.get_or_create(&ResultLabel { result });
        }
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: crate::VERSION,
            })
            .set(1);
        registry.register("build_info", "backupd build information", build_info);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Seeds the gauges from an existing status file after a restart.
    pub fn load_status(&self, status: &Status) {
        if let Some(t) = status.last_backup.as_deref().and_then(parse_timestamp) {
            self.last_success.set(t.timestamp() as f64);
        }
        if let Some(t) = status.last_attempt.as_deref().and_then(parse_timestamp) {
            self.last_attempt.set(t.timestamp() as f64);
        }
        if let Some(d) = status.last_duration_seconds {
            self.last_duration.set(d);
        }
        if let Some(size) = status.last_size_bytes {
            self.last_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        if let Some(t) = status
            .last_drill_success
            .as_deref()
            .and_then(parse_timestamp)
        {
            self.last_drill_success.set(t.timestamp() as f64);
        }
    }

    /// Counts one notification (or ping) to a destination of `destination_kind`.
    pub fn count_notification(&self, destination_kind: &'static str, result: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                destination_kind,
                result,
            })
            .inc();
    }

    /// Exports zeros for a configured destination kind before anything is sent.
    pub fn expect_notifications(&self, destination_kind: &'static str) {
        for result in ["sent", "failed", "dropped"] {
            let _ = self.notifications.get_or_create(&NotificationLabels {
                destination_kind,
                result,
            });
        }
    }

    pub fn encode(&self) -> String {
        self.encode_with_status(None)
    }

    /// The daemon's metrics plus those read from the status file at this
    /// scrape: what another process recorded there (`backupd restore`'s
    /// `last_restore_downtime_seconds`), which no event of this process
    /// tells. A metric with no value on record is left out, never NaN.
    pub fn encode_with_status(&self, status: Option<&Status>) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        use prometheus_client::metrics::gauge::ConstGauge;

        let mut recorded = Registry::with_prefix("backupd");
        if let Some(downtime) = status
            .and_then(|s| s.last_restore_downtime_seconds)
            .filter(|d| d.is_finite())
        {
            recorded.register(
                "last_restore_downtime_seconds",
                "Outage of the last restore that stopped containers: first stop to last start (from the status file)",
                ConstGauge::new(downtime),
            );
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &recorded);
        let _ = encode_eof(&mut out);
        out
    }
}

/// The daemon's counters and gauges follow the backup run's events.
impl Observer for Metrics {
    fn observe(&self, event: &Event) {
        match event {
            Event::BackupStarted(started) => {
                self.last_attempt.set(started.at.timestamp() as f64);
            }
            Event::BackupFinished(done) => {
                self.backups
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                self.last_success.set(done.finished_at.timestamp() as f64);
                self.last_duration.set(done.duration.as_secs_f64());
                self.last_size
                    .set(i64::try_from(done.size).unwrap_or(i64::MAX));
                self.retention_deleted
                    .inc_by(done.retention_deleted.len() as u64);
            }
            // A shutdown is not a failed backup.
            Event::BackupFailed(failed)
                if matches!(
                    failed.error.kind,
                    FailureKind::Cancelled | FailureKind::Busy
                ) => {}
            Event::BackupFailed(_) => {
                self.backups
                    .get_or_create(&ResultLabel { result: "failure" })
                    .inc();
            }
            Event::OffsitePass(pass) => {
                for sent in &pass.uploaded {
                    self.uploads
                        .get_or_create(&ResultLabel { result: "success" })
                        .inc();
                    self.upload_duration.set(sent.duration.as_secs_f64());
                }
                if pass.failed > 0 {
                    self.uploads
                        .get_or_create(&ResultLabel { result: "failure" })
                        .inc_by(pass.failed as u64);
                }
                self.remote_retention_deleted
                    .inc_by(pass.remote_deleted.len() as u64);
            }
            Event::DrillFinished(done) => {
                self.drills
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                self.last_drill_success
                    .set(done.finished_at.timestamp() as f64);
            }
            // A drill stopped by a shutdown says nothing about the backup.
            Event::DrillFailed(failed) if failed.error.is_cancelled() => {}
            Event::DrillFailed(_) => {
                self.drills
                    .get_or_create(&ResultLabel { result: "failure" })
                    .inc();
            }
            _ => {}
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{
        BackupFailed, BackupFinished, BackupStarted, Failure, OffsitePass, Uploaded,
    };
    use chrono::{DateTime, Utc};
    use std::time::Duration;

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    }

    fn failed(error: &crate::Error) -> Event {
        BackupFailed {
            database: "sqlite",
            started_at: DateTime::UNIX_EPOCH,
            could_not_start: false,
            duration: Duration::from_secs(1),
            error: Failure::from(error),
        }
        .into()
    }

    #[test]
    fn the_counters_and_gauges_follow_the_events() {
        let metrics = Metrics::new();
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        metrics.observe(
            &BackupStarted {
                database: "sqlite",
                at: at(1_000),
            }
            .into(),
        );
        metrics.observe(
            &BackupFinished {
                database: "sqlite",
                started_at: at(1_000),
                finished_at: at(1_002),
                file: "/backups/a.sqlite3.gz".into(),
                size: 4096,
                raw_bytes: 8192,
                sha256: "0".repeat(64),
                duration: Duration::from_millis(1500),
                retention_deleted: vec!["/backups/old.sqlite3.gz".into()],
            }
            .into(),
        );
        metrics.observe(&failed(&crate::Error::database("sqlite:/db", "locked")));
        // Neither a shutdown nor a skipped run counts as a failed backup.
        metrics.observe(&failed(&crate::Error::Cancelled));
        metrics.observe(&failed(&crate::Error::Busy));
        metrics.observe(
            &OffsitePass {
                uploaded: vec![Uploaded {
                    name: "a.sqlite3.gz".into(),
                    bytes: 4096,
                    duration: Duration::from_millis(250),
                }],
                failed: 1,
                remote_deleted: vec!["x".into(), "y".into()],
                error: Some("cannot upload".into()),
                finished_at: Some(at(1_003)),
            }
            .into(),
        );
        let text = metrics.encode();
        for (name, value) in [
            ("backupd_last_attempt_timestamp_seconds ", "1000.0"),
            ("backupd_last_success_timestamp_seconds ", "1002.0"),
            ("backupd_last_duration_seconds ", "1.5"),
            ("backupd_last_size_bytes ", "4096"),
            ("backupd_backups_total{result=\"success\"}", "1"),
            ("backupd_backups_total{result=\"failure\"}", "1"),
            ("backupd_retention_deleted_total ", "1"),
            ("backupd_uploads_total{result=\"success\"}", "1"),
            ("backupd_uploads_total{result=\"failure\"}", "1"),
            ("backupd_upload_duration_seconds ", "0.25"),
            ("backupd_remote_retention_deleted_total ", "2"),
        ] {
            let line = line(&text, name);
            assert_eq!(line[name.len()..].trim(), value, "{line}");
        }
    }

    #[test]
    fn drills_are_counted_by_result_and_a_pass_is_timed() {
        use crate::events::{DrillFailed, DrillFinished, FailureKind};
        let metrics = Metrics::new();
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        metrics.load_status(&Status {
            last_drill_success: Some("1970-01-01T00:16:40Z".into()),
            ..Status::default()
        });
        assert!(
            metrics
                .encode()
                .contains("backupd_last_drill_success_timestamp_seconds 1000.0")
        );
        metrics.observe(
            &DrillFinished {
                file: "/backups/a.db.gz".into(),
                size: 10,
                started_at: at(2_000),
                finished_at: at(2_005),
                duration: Duration::from_secs(5),
                manifest: "checked 1 table against /m".into(),
            }
            .into(),
        );
        let failure = |kind| -> Event {
            DrillFailed {
                file: None,
                started_at: at(3_000),
                finished_at: at(3_001),
                duration: Duration::from_secs(1),
                error: Failure::new(kind, "x"),
            }
            .into()
        };
        metrics.observe(&failure(FailureKind::Verify));
        metrics.observe(&failure(FailureKind::Cancelled));
        let text = metrics.encode();
        for (name, value) in [
            ("backupd_last_drill_success_timestamp_seconds ", "2005.0"),
            ("backupd_drills_total{result=\"success\"}", "1"),
            ("backupd_drills_total{result=\"failure\"}", "1"),
        ] {
            let line = line(&text, name);
            assert_eq!(line[name.len()..].trim(), value, "{line}");
        }
    }

    #[test]
    fn the_restore_downtime_comes_from_the_status_file_and_only_when_recorded() {
        let metrics = Metrics::new();
        let name = "backupd_last_restore_downtime_seconds";
        let never = metrics.encode_with_status(None);
        assert!(!never.contains(name), "{never}");
        let nothing_stopped = Status {
            last_restore_result: Some("success".into()),
            ..Status::default()
        };
        let text = metrics.encode_with_status(Some(&nothing_stopped));
        assert!(!text.contains(name), "{text}");
        assert!(!text.contains("NaN"), "{text}");

        let restored = Status {
            last_restore_downtime_seconds: Some(2.125),
            ..Status::default()
        };
        let text = metrics.encode_with_status(Some(&restored));
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{text}");
        assert_eq!(
            line(&text, &format!("{name} "))[name.len()..].trim(),
            "2.125"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }

    #[test]
    fn every_documented_metric_is_exported() {
        let metrics = Metrics::new();
        metrics
            .backups
            .get_or_create(&ResultLabel { result: "success" })
            .inc();
        metrics.expect_notifications("ntfy");
        metrics.count_notification("ntfy", "sent");
        let text = metrics.encode();
        for name in [
            "backupd_last_success_timestamp_seconds",
            "backupd_last_attempt_timestamp_seconds",
            "backupd_last_duration_seconds",
            "backupd_last_size_bytes",
            "backupd_backups_total{result=\"success\"} 1",
            "backupd_backups_total{result=\"failure\"} 0",
            "backupd_retention_deleted_total",
            "backupd_uploads_total{result=\"success\"} 0",
            "backupd_uploads_total{result=\"failure\"} 0",
            "backupd_upload_duration_seconds",
            "backupd_remote_retention_deleted_total",
            "backupd_next_run_timestamp_seconds",
            "backupd_build_info{version=",
            "backupd_notifications_total{destination_kind=\"ntfy\",result=\"sent\"} 1",
            "backupd_notifications_total{destination_kind=\"ntfy\",result=\"dropped\"} 0",
            "backupd_last_drill_success_timestamp_seconds",
            "backupd_drills_total{result=\"success\"} 0",
            "backupd_drills_total{result=\"failure\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
