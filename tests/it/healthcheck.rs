//! `backupd healthcheck` is Docker's HEALTHCHECK: exit 0 when the status file
//! shows a successful backup younger than HEALTH_MAX_AGE_SECONDS, 1 with the
//! reason on stderr otherwise.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::*;

fn healthcheck(cfg: Backupd) -> RunResult {
    let run = cfg.run_bounded(&["healthcheck"], Duration::from_secs(30));
    eprintln!("{run}");
    run
}

fn in_dir(dir: &Path) -> Backupd {
    Backupd::new().env("BACKUP_DIR", dir)
}

fn assert_reason(run: &RunResult, any_of: &[&str]) {
    let stderr = run.stderr.to_lowercase();
    assert!(
        any_of.iter().any(|w| stderr.contains(&w.to_lowercase())),
        "stderr gives no reason (expected one of {any_of:?}):\n{run}"
    );
}

#[test]
fn fresh_backup_is_healthy() {
    let (_work, dir) = temp_backup_dir();
    write_status_file(&status_path(&dir), Some(Utc::now()), None);
    healthcheck(in_dir(&dir)).assert_code(0);
}

#[test]
fn backup_three_days_old_is_stale_with_the_default_max_age() {
    let (_work, dir) = temp_backup_dir();
    let when = Utc::now() - chrono::Duration::days(3);
    write_status_file(&status_path(&dir), Some(when), None);
    let run = healthcheck(in_dir(&dir));
    run.assert_code(1);
    assert_reason(
        &run,
        &[
            "stale",
            "old",
            "ago",
            "age",
            &status_timestamp(when),
            "172800",
        ],
    );
}

#[test]
fn missing_status_file_is_unhealthy() {
    let (work, dir) = temp_backup_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let run = healthcheck(in_dir(&dir));
    run.assert_code(1);
    assert_reason(
        &run,
        &[
            "backup-status.json",
            "status file",
            "no status",
            "no backup",
            "never",
        ],
    );

    // Nor does it need BACKUP_DIR to exist.
    let run = healthcheck(in_dir(&work.path().join("nowhere")));
    run.assert_code(1);
}

#[test]
fn never_succeeded_is_unhealthy_and_says_why() {
    let (_work, dir) = temp_backup_dir();
    let error = "pg_dump: connection to 127.0.0.1:5432 refused (err-5521)";
    write_status_file(&status_path(&dir), None, Some(error));
    let run = healthcheck(in_dir(&dir));
    run.assert_code(1);
    assert!(
        run.stderr.contains("err-5521"),
        "stderr does not mention the last error `{error}`:\n{run}"
    );
}

#[test]
fn max_age_and_status_file_location_come_from_the_environment() {
    let (work, dir) = temp_backup_dir();
    let elsewhere = work.path().join("state").join("status.json");
    let ten_minutes_ago = Utc::now() - chrono::Duration::minutes(10);
    write_status_file(&elsewhere, Some(ten_minutes_ago), None);

    // BACKUP_STATUS_FILE is read, not BACKUP_DIR/backup-status.json.
    let cfg = in_dir(&dir).env("BACKUP_STATUS_FILE", &elsewhere);
    healthcheck(cfg.clone()).assert_code(0);
    // Ten minutes is too old for a max age of five.
    let run = healthcheck(cfg.clone().env("HEALTH_MAX_AGE_SECONDS", "300"));
    run.assert_code(1);
    // … and young enough for an hour.
    healthcheck(cfg.env("HEALTH_MAX_AGE_SECONDS", "3600")).assert_code(0);
    // Without BACKUP_STATUS_FILE there is no status file in BACKUP_DIR.
    healthcheck(in_dir(&dir)).assert_code(1);
}

#[test]
fn a_later_failure_does_not_hide_a_recent_success() {
    // A failed run keeps the last good values: still healthy while the last
    // success is young enough.
    let (_work, dir) = temp_backup_dir();
    write_status_file(
        &status_path(&dir),
        Some(Utc::now() - chrono::Duration::hours(1)),
        Some("pg_dump failed"),
    );
    healthcheck(in_dir(&dir)).assert_code(0);
}

#[test]
fn unreadable_status_is_unhealthy() {
    let (_work, dir) = temp_backup_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(status_path(&dir), "{ not json").unwrap();
    healthcheck(in_dir(&dir)).assert_code(1);
}
