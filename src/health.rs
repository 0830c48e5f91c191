//! Is the last successful backup recent enough, and could the last run
//! start at all? Shared by `/healthz` and `backupd healthcheck`, so both give
//! the same answer for the same file.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::state::Status;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub healthy: bool,
    pub reason: String,
    pub last_backup: Option<String>,
    pub age_seconds: Option<i64>,
    pub max_age_seconds: u64,
}

pub fn evaluate(status: Option<&Status>, now: DateTime<Utc>, max_age_seconds: u64) -> Health {
    let unhealthy = |reason: String, last_backup: Option<String>, age: Option<i64>| Health {
        healthy: false,
        reason,
        last_backup,
        age_seconds: age,
        max_age_seconds,
    };
    let Some(status) = status else {
        return unhealthy("no status file yet: no backup has run".into(), None, None);
    };
    // A run that failed in the middle (the database was down) is retried and
    // only matters once the last success grows stale; a run that could not
    // even start (no descriptor for the lock or the backup file, an
    // unreadable key) is a problem of backupd's own that will not heal by
    // itself, so it is unhealthy at once.
    if let Some(e) = &status.start_error {
        let at = status.last_attempt.as_deref().unwrap_or("unknown time");
        return unhealthy(
            format!("the last backup (at {at}) could not start: {e}"),
            status.last_backup.clone(),
            status
                .last_backup
                .as_deref()
                .and_then(parse_timestamp)
                .map(|t| now.signed_duration_since(t).num_seconds()),
        );
    }
    let Some(last) = status.last_backup.clone() else {
        let why = match &status.last_error {
            Some(e) => format!("no backup has succeeded yet; last error: {e}"),
            None => "no backup has succeeded yet".into(),
        };
        return unhealthy(why, None, None);
    };
    let Some(at) = parse_timestamp(&last) else {
        return unhealthy(
            format!("last_backup '{last}' is not a UTC timestamp"),
            Some(last),
            None,
        );
    };
    let age = now.signed_duration_since(at).num_seconds();
    if age > i64::try_from(max_age_seconds).unwrap_or(i64::MAX) {
        let mut reason = format!(
            "the last successful backup is {age}s old, older than HEALTH_MAX_AGE_SECONDS={max_age_seconds}"
        );
        if let Some(e) = &status.last_error {
            reason.push_str(&format!("; last error: {e}"));
        }
        return unhealthy(reason, Some(last), Some(age));
    }
    Health {
        healthy: true,
        reason: format!("the last successful backup is {age}s old"),
        last_backup: Some(last),
        age_seconds: Some(age),
        max_age_seconds,
    }
}

/// [`evaluate`], and with `max_drill_age_seconds` (`HEALTH_MAX_DRILL_AGE_SECONDS`,
/// `None` or 0 = off) also unhealthy when no restore drill has passed within
/// that age (`last_drill_success`). A failed drill alone does not make it
/// unhealthy (a notice says so); only the lack of a recent pass does.
pub fn evaluate_with_drills(
    status: Option<&Status>,
    now: DateTime<Utc>,
    max_age_seconds: u64,
    max_drill_age_seconds: Option<u64>,
) -> Health {
    let health = evaluate(status, now, max_age_seconds);
    let (Some(max), Some(status)) = (max_drill_age_seconds.filter(|&m| m > 0), status) else {
        return health;
    };
    if !health.healthy {
        return health;
    }
    match drill_problem(status, now, max) {
        None => health,
        Some(reason) => Health {
            healthy: false,
            reason,
            ..health
        },
    }
}

/// Why the drills make it unhealthy, if they do.
fn drill_problem(status: &Status, now: DateTime<Utc>, max: u64) -> Option<String> {
    let last_failure = match (&status.last_drill_result, &status.last_drill_error) {
        (Some(result), Some(e)) if result == "failed" => format!("; the last drill failed: {e}"),
        _ => String::new(),
    };
    let Some(at) = status
        .last_drill_success
        .as_deref()
        .and_then(parse_timestamp)
    else {
        return Some(format!(
            "no restore drill has passed yet (HEALTH_MAX_DRILL_AGE_SECONDS={max}){last_failure}"
        ));
    };
    let age = now.signed_duration_since(at).num_seconds();
    (age > i64::try_from(max).unwrap_or(i64::MAX)).then(|| {
        format!(
            "the last restore drill that passed is {age}s old, older than HEALTH_MAX_DRILL_AGE_SECONDS={max}{last_failure}"
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (the status file's format), or any RFC 3339 time.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ")
                .ok()
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn status(last_backup: Option<&str>, last_error: Option<&str>) -> Status {
        Status {
            last_backup: last_backup.map(String::from),
            last_error: last_error.map(String::from),
            ..Status::default()
        }
    }

    #[test]
    fn a_drill_age_limit_wants_a_recent_passed_drill() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        let fresh = status(Some("2026-01-09T23:00:00Z"), None);
        let week = Some(7 * 86_400);
        assert!(evaluate_with_drills(Some(&fresh), now, 172_800, None).healthy);
        assert!(evaluate_with_drills(Some(&fresh), now, 172_800, Some(0)).healthy);
        let none = evaluate_with_drills(Some(&fresh), now, 172_800, week);
        assert!(!none.healthy);
        assert!(
            none.reason.starts_with("no restore drill has passed yet"),
            "{}",
            none.reason
        );
        let passed = Status {
            last_drill_success: Some("2026-01-05T00:00:00Z".into()),
            ..fresh.clone()
        };
        assert!(evaluate_with_drills(Some(&passed), now, 172_800, week).healthy);
        // A failure since then does not undo the recent pass.
        let failed_since = Status {
            last_drill_result: Some("failed".into()),
            last_drill_error: Some("public.users: 1 rows, the manifest says 2".into()),
            ..passed.clone()
        };
        assert!(evaluate_with_drills(Some(&failed_since), now, 172_800, week).healthy);
        let old = evaluate_with_drills(Some(&failed_since), now, 172_800, Some(86_400));
        assert!(!old.healthy);
        assert!(
            old.reason
                .contains("432000s old, older than HEALTH_MAX_DRILL_AGE_SECONDS=86400")
                && old
                    .reason
                    .ends_with("the last drill failed: public.users: 1 rows, the manifest says 2"),
            "{}",
            old.reason
        );
        // The backups' own verdict comes first.
        let stale = status(Some("2026-01-01T00:00:00Z"), None);
        let verdict = evaluate_with_drills(Some(&stale), now, 172_800, week);
        assert!(
            verdict.reason.contains("HEALTH_MAX_AGE_SECONDS"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn fresh_stale_and_missing() {
        let now = Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap();
        assert!(
            evaluate(
                Some(&status(Some("2026-01-02T12:00:00Z"), None)),
                now,
                172_800
            )
            .healthy
        );
        let stale = evaluate(
            Some(&status(Some("2025-12-30T00:00:00Z"), Some("boom"))),
            now,
            172_800,
        );
        assert!(!stale.healthy && stale.reason.contains("boom"), "{stale:?}");
        assert!(!evaluate(None, now, 172_800).healthy);
        let never = evaluate(Some(&status(None, Some("cannot connect"))), now, 172_800);
        assert!(!never.healthy && never.reason.contains("cannot connect"));
    }

    #[test]
    fn a_run_that_could_not_start_is_unhealthy_even_after_a_fresh_success() {
        let now = Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap();
        let mut fresh = status(Some("2026-01-02T23:00:00Z"), Some("Too many open files"));
        fresh.start_error = Some("Too many open files".into());
        let health = evaluate(Some(&fresh), now, 172_800);
        assert!(
            !health.healthy && health.reason.contains("could not start"),
            "{health:?}"
        );
        assert_eq!(health.age_seconds, Some(3600));
    }
}
