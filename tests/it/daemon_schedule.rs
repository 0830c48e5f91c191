//! `backupd backup` runs as a daemon: a backup at start-up, then one every
//! BACKUP_INTERVAL_SECONDS (or on the BACKUP_SCHEDULE cron expression),
//! retention after each, until SIGTERM.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use common::*;

/// How long a poll for backups may take before the test gives up.
const GIVE_UP: Duration = Duration::from_secs(20);

/// Two old backups of `kind` (10 and 9 days old) with `.sha256` sidecars.
fn old_backups(dir: &Path, kind: Kind) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    [10, 9]
        .iter()
        .map(|days| {
            let name = kind.name_at(Utc::now() - chrono::Duration::days(*days));
            let path = dir.join(&name);
            write_gzip(&path, format!("old backup {name}\n").as_bytes());
            write_sidecar(&path);
            name
        })
        .collect()
}

/// The backups in `dir` not in `old`.
fn new_backups(dir: &Path, old: &[String]) -> Vec<String> {
    backup_files(dir)
        .into_iter()
        .filter(|n| !old.contains(n))
        .collect()
}

fn finished_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("backup finished"))
        .collect()
}

/// Waits until at least `count` new backups exist and as many `backup
/// finished` lines are logged (so the daemon is idle again), then SIGTERMs
/// it; asserts exit 0 and returns the run and the new backups.
fn run_until_backups(daemon: &mut Daemon, dir: &Path, old: &[String], count: usize) -> RunResult {
    let got = poll(Duration::from_millis(100), GIVE_UP, || {
        let new = new_backups(dir, old);
        let log = daemon.log();
        (new.len() >= count && finished_lines(&log).len() >= count).then_some(())
    });
    if got.is_none() {
        panic!(
            "fewer than {count} backups after {GIVE_UP:?} with BACKUP_INTERVAL_SECONDS=2; \
             BACKUP_DIR: {:?}\nlog:\n{}",
            dir_names(dir),
            daemon.log()
        );
    }
    daemon.stop_cleanly()
}

/// Every new backup is complete, has its sidecar and is listed in the
/// status; the old ones went with their sidecars; no work files remain.
fn assert_backups_and_retention(dir: &Path, old: &[String], run: &RunResult, count: usize) {
    let new = new_backups(dir, old);
    assert!(
        new.len() >= count,
        "expected at least {count} new backups, BACKUP_DIR holds {:?}",
        dir_names(dir)
    );
    for name in &new {
        assert_sound_backup(&dir.join(name));
    }
    for name in old {
        let path = dir.join(name);
        assert!(
            !path.exists() && !sidecar_path(&path).exists(),
            "{name} (older than BACKUP_RETENTION_DAYS=1) or its sidecar survived; \
             BACKUP_DIR: {:?}\n{run}",
            dir_names(dir)
        );
    }
    assert!(
        work_files(dir).is_empty(),
        "work files left: {:?}",
        dir_names(dir)
    );
    let status = read_status(&status_path(dir));
    let listed: Vec<&str> = status["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("backups is not an array: {status:#}"))
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for name in &new {
        assert!(
            listed.contains(&name.as_str()),
            "status `backups` lacks {name}: {status:#}"
        );
    }
    assert!(
        status["last_error"].is_null(),
        "the daemon was stopped while idle, last_error must stay null: {status:#}"
    );
    let newest = newest(&new);
    assert_eq!(
        status["last_file"].as_str(),
        Some(dir.join(&newest).to_str().unwrap()),
        "last_file is not the newest backup: {status:#}"
    );

    // One `backup finished` line per backup, with its result, file, size and duration.
    let lines = finished_lines(&run.stderr);
    assert!(
        lines.len() >= new.len(),
        "{} backups but {} `backup finished` lines:\n{run}",
        new.len(),
        lines.len()
    );
    for line in &lines {
        let lower = line.to_lowercase();
        for word in ["success", "file", "bytes", "duration"] {
            assert!(
                lower.contains(word),
                "`backup finished` line does not mention `{word}`: {line}"
            );
        }
    }
    for name in &new {
        assert!(
            lines.iter().any(|l| l.contains(name.as_str())),
            "no `backup finished` line names {name}:\n{run}"
        );
    }
}

fn newest(names: &[String]) -> String {
    names
        .iter()
        .max_by_key(|n| {
            let (_, stamp, suffix) = parse_backup_name(n).unwrap();
            (stamp, suffix)
        })
        .unwrap()
        .clone()
}

#[test]
fn sqlite_daemon_backs_up_every_interval_applies_retention_and_stops_on_sigterm() {
    let app = SqliteApp::new(1);
    let old = old_backups(&app.dir, Kind::Sqlite);
    // The app keeps the database open in WAL mode while backupd runs.
    let writer = rusqlite::Connection::open(&app.db).unwrap();
    writer
        .execute_batch("CREATE TABLE IF NOT EXISTS daemon_probe (n INTEGER); INSERT INTO daemon_probe VALUES (1);")
        .unwrap();

    let mut daemon = app
        .backupd()
        .env("BACKUP_INTERVAL_SECONDS", "2")
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_KEEP_MIN", "2")
        .daemon();
    let run = run_until_backups(&mut daemon, &app.dir, &old, 3);
    assert_backups_and_retention(&app.dir, &old, &run, 3);
    drop(writer);
}

#[test]
fn postgres_daemon_backs_up_every_interval_applies_retention_and_stops_on_sigterm() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let Some(_) = require_programs(&["gunzip", "sha256sum"]) else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    let (_work, dir) = temp_backup_dir();
    let old = old_backups(&dir, Kind::Postgres);

    let mut daemon = cluster
        .backupd(&dir)
        .env("BACKUP_INTERVAL_SECONDS", "2")
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_KEEP_MIN", "2")
        .daemon();
    let run = run_until_backups(&mut daemon, &dir, &old, 2);
    assert_backups_and_retention(&dir, &old, &run, 2);
    run.assert_not_shown(PG_APP_PASSWORD);
    for name in new_backups(&dir, &old) {
        assert_eq!(parse_backup_name(&name).map(|p| p.0), Some(Kind::Postgres));
    }
}

/// The RFC 3339 timestamps after the word `next` on the first log line that
/// has at least three of them.
fn next_run_times(log: &str) -> Option<Vec<DateTime<FixedOffset>>> {
    log.lines().find_map(|line| {
        let at = line.to_lowercase().find("next")?;
        let times: Vec<DateTime<FixedOffset>> = line[at..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-:+.".contains(c)))
            .filter_map(|token| DateTime::parse_from_rfc3339(token).ok())
            .collect();
        (times.len() >= 3).then_some(times)
    })
}

fn schedule_daemon(schedule: &str, tz: Option<&str>) -> (Vec<DateTime<FixedOffset>>, RunResult) {
    let app = SqliteApp::new(1);
    let mut cfg = app
        .backupd()
        .env("BACKUP_SCHEDULE", schedule)
        .env("BACKUP_ON_START", "false");
    if let Some(tz) = tz {
        cfg = cfg.env("TZ", tz);
    }
    let started = Utc::now();
    let mut daemon = cfg.daemon();
    let found = daemon.wait_for_log(Duration::from_secs(15), |log| next_run_times(log).is_some());
    let run = daemon.terminate(Duration::from_secs(15));
    eprintln!("{run}");
    assert!(
        found,
        "no start-up log line with `next` and three RFC 3339 run times for \
         BACKUP_SCHEDULE={schedule}:\n{run}"
    );
    run.assert_code(0);
    let times = next_run_times(&run.stderr).unwrap();
    assert!(
        times[0].with_timezone(&Utc) > started - chrono::Duration::seconds(1),
        "the first run time {} is in the past (started {started}):\n{run}",
        times[0]
    );
    assert!(
        backup_files(&app.dir).is_empty(),
        "BACKUP_ON_START=false, yet a backup was taken:\n{run}"
    );
    (times, run)
}

#[test]
fn schedule_every_minute_logs_the_next_three_run_times_at_start_up() {
    let (times, run) = schedule_daemon("*/1 * * * *", None);
    let now = Utc::now();
    for t in &times[..3] {
        assert_eq!(
            t.timestamp() % 60,
            0,
            "`*/1 * * * *` runs on the minute, not at {t}:\n{run}"
        );
    }
    assert!(
        times[0].with_timezone(&Utc) <= now + chrono::Duration::seconds(61),
        "the first run of `*/1 * * * *` is more than a minute away: {}\n{run}",
        times[0]
    );
    for pair in times[..3].windows(2) {
        assert_eq!(
            pair[1].timestamp() - pair[0].timestamp(),
            60,
            "consecutive runs of `*/1 * * * *` are not a minute apart: {} then {}\n{run}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn schedule_is_read_in_the_tz_time_zone() {
    // 03:00 every day in New York: whatever offset the log prints them with,
    // the three run times are 03:00 local time on consecutive days.
    let (times, run) = schedule_daemon("0 3 * * *", Some("America/New_York"));
    let zone: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let mut days = Vec::new();
    for t in &times[..3] {
        let local = t.with_timezone(&zone);
        assert_eq!(
            local.format("%H:%M:%S").to_string(),
            "03:00:00",
            "`0 3 * * *` with TZ=America/New_York must run at 03:00 New York time, \
             not {t} ({local}):\n{run}"
        );
        days.push(local.date_naive());
    }
    for pair in days.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_days(),
            1,
            "runs on {days:?}:\n{run}"
        );
    }
}

/// Waits for a daemon with a configuration error (`what`) to exit at
/// start-up; asserts exit code 2 and returns the run.
fn exits_at_start_up(mut daemon: Daemon, what: &str) -> RunResult {
    let Some(run) = daemon.wait_exit(Duration::from_secs(15)) else {
        panic!(
            "{what} must stop the daemon at start-up; still running:\n{}",
            daemon.log()
        );
    };
    eprintln!("{run}");
    run.assert_code(2);
    run
}

#[test]
fn invalid_schedule_exits_2_naming_the_variable_and_the_field() {
    let app = SqliteApp::new(1);
    let daemon = app.backupd().env("BACKUP_SCHEDULE", "0 25 * * *").daemon();
    let run = exits_at_start_up(daemon, "an invalid BACKUP_SCHEDULE");
    run.assert_stderr_mentions(&["BACKUP_SCHEDULE", "hour"]);
    assert!(
        backup_files(&app.dir).is_empty(),
        "a backup was taken despite the configuration error:\n{run}"
    );
}

#[test]
fn on_start_false_takes_no_backup_at_start_up() {
    let app = SqliteApp::new(1);
    let mut daemon = app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .daemon();
    daemon.wait_until_serving();
    // An observation window, not a timing assertion: nothing may happen in it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.is_running(), "the daemon exited:\n{}", daemon.log());
    assert!(
        backup_files(&app.dir).is_empty() && work_files(&app.dir).is_empty(),
        "BACKUP_ON_START=false, yet BACKUP_DIR holds {:?}:\n{}",
        dir_names(&app.dir),
        daemon.log()
    );
    assert!(
        !daemon.log().contains("backup finished"),
        "a backup ran:\n{}",
        daemon.log()
    );
    let run = daemon.stop_cleanly();
    assert!(backup_files(&app.dir).is_empty(), "{run}");
}

fn failed_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("backup failed")).count()
}

/// A daemon on the SQLite database `db` (which may not exist) backing up
/// into `dir`: an interval of an hour, BACKUP_RETRY_SECONDS=`retry`.
fn retrying_daemon(db: &Path, dir: &Path, retry: &str) -> Daemon {
    Backupd::for_database(sqlite_url(db), dir)
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .env("BACKUP_RETRY_SECONDS", retry)
        .daemon()
}

#[test]
fn a_failed_run_is_retried_once_after_retry_seconds() {
    // The database file does not exist yet: the start-up run fails; it is
    // there by the time of the retry, which succeeds.
    let (work, dir) = temp_backup_dir();
    let db = work.path().join("app.db");
    let mut daemon = retrying_daemon(&db, &dir, "2");
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| failed_lines(log) >= 1),
        "the start-up run on a missing database did not fail:\n{}",
        daemon.log()
    );
    assert!(
        daemon.is_running(),
        "a failed run must not stop the daemon:\n{}",
        daemon.log()
    );
    sqlite_small(&db, 20);
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| log.contains("backup finished")),
        "the failed run was not retried (BACKUP_RETRY_SECONDS=2, interval 3600):\n{}",
        daemon.log()
    );
    let run = daemon.stop_cleanly();
    assert_eq!(failed_lines(&run.stderr), 1, "{run}");
    assert_eq!(backup_files(&dir).len(), 1, "{:?}", dir_names(&dir));
    let status = read_status(&status_path(&dir));
    assert!(status["last_error"].is_null(), "{status:#}");
}

#[test]
fn a_failed_retry_is_not_retried_again() {
    let (work, dir) = temp_backup_dir();
    let db = work.path().join("missing.db");
    let mut daemon = retrying_daemon(&db, &dir, "1");
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| failed_lines(log) >= 2),
        "no retry after the failed start-up run (BACKUP_RETRY_SECONDS=1):\n{}",
        daemon.log()
    );
    // An observation window of three retry periods: no third attempt.
    std::thread::sleep(Duration::from_secs(3));
    let run = daemon.stop_cleanly();
    assert_eq!(
        failed_lines(&run.stderr),
        2,
        "a failed run is retried once, then waits for the schedule:\n{run}"
    );
    let status = read_status(&status_path(&dir));
    assert!(status["last_error"].is_string(), "{status:#}");
    assert!(status["last_backup"].is_null(), "{status:#}");
}

#[test]
fn daemon_waits_for_postgresql_at_start_up() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let mut cluster = PgCluster::start_with_app(&bin, Some(1));
    cluster.stop();
    let (_work, dir) = temp_backup_dir();
    let mut daemon = cluster
        .backupd(&dir)
        .env("DB_STARTUP_TIMEOUT", "60")
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .env("BACKUP_RETRY_SECONDS", "0")
        .daemon();
    daemon.wait_until_serving();
    // The database comes up a little after backupd (as in `docker compose up`).
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        backup_files(&dir).is_empty() && failed_lines(&daemon.log()) == 0,
        "backupd did not wait for PostgreSQL (DB_STARTUP_TIMEOUT=60):\n{}",
        daemon.log()
    );
    cluster.start_again();
    assert!(
        daemon.wait_for_log(Duration::from_secs(60), |log| {
            log.contains("backup finished") || failed_lines(log) > 0
        }),
        "no start-up backup after PostgreSQL came up:\n{}",
        daemon.log()
    );
    let run = daemon.stop_cleanly();
    run.assert_not_shown(PG_APP_PASSWORD);
    assert_eq!(
        failed_lines(&run.stderr),
        0,
        "the start-up backup failed instead of waiting for PostgreSQL:\n{run}"
    );
    assert_eq!(backup_files(&dir).len(), 1, "{:?}", dir_names(&dir));
}

#[test]
fn daemon_goes_on_after_db_startup_timeout() {
    let Some(bin) = require_postgres() else {
        return;
    };
    // Nothing listens: after DB_STARTUP_TIMEOUT the daemon stops waiting,
    // the run fails, and the daemon keeps running (and serving /healthz).
    let (_work, dir) = temp_backup_dir();
    let port = free_port();
    let mut daemon = Backupd::for_database(
        format!("postgresql://app:pw-8812@127.0.0.1:{port}/appdb"),
        &dir,
    )
    .path_prepend(&bin)
    .env("DB_STARTUP_TIMEOUT", "2")
    .env("BACKUP_INTERVAL_SECONDS", "3600")
    .env("BACKUP_RETRY_SECONDS", "0")
    .daemon();
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| failed_lines(log) >= 1),
        "no failed run after DB_STARTUP_TIMEOUT=2 with no server:\n{}",
        daemon.log()
    );
    assert!(daemon.is_running(), "{}", daemon.log());
    assert_eq!(http_get(daemon.port, "/healthz").status, 503);
    daemon.stop_cleanly().assert_not_shown("pw-8812");
}

/// Asserts the first three run times of `schedule` are `step` seconds apart,
/// `check` (`what`) holds for each (in UTC), and the first is within a period.
fn assert_runs(schedule: &str, step: i64, check: impl Fn(&DateTime<Utc>) -> bool, what: &str) {
    let (times, run) = schedule_daemon(schedule, None);
    let times: Vec<DateTime<Utc>> = times[..3].iter().map(|t| t.with_timezone(&Utc)).collect();
    for t in &times {
        assert!(
            check(t),
            "BACKUP_SCHEDULE={schedule}: {t} is not {what}:\n{run}"
        );
    }
    for pair in times.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            step,
            "BACKUP_SCHEDULE={schedule}: {} then {}:\n{run}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        times[0] <= Utc::now() + chrono::Duration::seconds(step + 1),
        "BACKUP_SCHEDULE={schedule}: the first run {} is more than one period away:\n{run}",
        times[0]
    );
}

#[test]
fn macros_and_six_and_seven_field_schedules_are_understood() {
    use chrono::{Datelike, Timelike};
    let midnight = |t: &DateTime<Utc>| t.num_seconds_from_midnight() == 0;
    assert_runs(
        "@hourly",
        3600,
        |t| t.minute() == 0 && t.second() == 0,
        "on the hour",
    );
    assert_runs("@daily", 86_400, midnight, "at midnight");
    assert_runs(
        "@weekly",
        7 * 86_400,
        |t| midnight(t) && t.weekday() == chrono::Weekday::Sun,
        "Sunday midnight",
    );
    let at_noon_30s = |t: &DateTime<Utc>| t.num_seconds_from_midnight() == 12 * 3600 + 30;
    assert_runs(
        "30 0 12 * * *",
        86_400,
        at_noon_30s,
        "12:00:30 (seconds first)",
    );
    assert_runs(
        "30 0 12 * * * *",
        86_400,
        at_noon_30s,
        "12:00:30 (seconds first, any year)",
    );
}

#[test]
fn day_of_month_and_day_of_week_both_restricted_means_either_as_in_crontab() {
    use chrono::Datelike;
    // Vixie cron: `0 0 1 * 1` runs on the 1st of the month AND on Mondays.
    let (times, run) = schedule_daemon("0 0 1 * 1", None);
    let now = Utc::now();
    let mut expected = Vec::new();
    let mut day = now.date_naive();
    while expected.len() < 3 {
        let t = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
        if t > now && (day.day() == 1 || day.weekday() == chrono::Weekday::Mon) {
            expected.push(t);
        }
        day = day.succ_opt().unwrap();
    }
    let got: Vec<DateTime<Utc>> = times[..3].iter().map(|t| t.with_timezone(&Utc)).collect();
    assert_eq!(
        got, expected,
        "`0 0 1 * 1` must run on the 1st and on Mondays:\n{run}"
    );
}

#[test]
fn invalid_time_zone_exits_2_naming_tz() {
    let app = SqliteApp::new(1);
    let daemon = app
        .backupd()
        .env("BACKUP_SCHEDULE", "0 3 * * *")
        .env("TZ", "Mars/Olympus_Mons")
        .daemon();
    exits_at_start_up(daemon, "an unknown TZ").assert_stderr_mentions(&["TZ", "Mars/Olympus_Mons"]);
}
