//! Scheduled restore drills in the daemon (`BACKUP_DRILL_SCHEDULE`): the
//! newest backup is drilled on the schedule and the status file and
//! `/metrics` say so; a failed drill is told (webhook) and, with
//! `HEALTH_MAX_DRILL_AGE_SECONDS`, `/healthz` and `backupd healthcheck` want
//! a recent passed drill; at start-up the daemon drops what killed drills
//! left, and a SIGTERM mid-drill still drops the scratch database.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use common::receiver::{Behaviour, Receiver};
use common::*;

/// A guard against a hang, never a measure of speed.
const GUARD: Duration = Duration::from_secs(90);

/// Every two seconds (cron with a seconds field).
const EVERY_TWO_SECONDS: &str = "*/2 * * * * *";

/// Once a year, on New Year's Day: in effect never during a test.
const YEARLY: &str = "0 0 1 1 *";

fn status_of(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the status file says a drill ended with `result`.
fn wait_for_drill(status_file: &Path, result: &str, daemon: &Daemon) -> serde_json::Value {
    poll(Duration::from_millis(100), GUARD, || {
        let status = status_of(status_file);
        (status["last_drill_result"] == result).then_some(status)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {result} drill within {GUARD:?}; status {:#}\nlog:\n{}",
            status_of(status_file),
            daemon.log()
        )
    })
}

fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let resp = http_get(port, "/metrics");
    assert_eq!(resp.status, 200, "{resp}");
    metric_value(&parse_metrics(&resp.body), name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", resp.body))
}

/// The manifest beside `backup`, claiming the SQLite database's real counts
/// (or `wrong` more rows in its first table).
fn sqlite_manifest(backup: &Path, db: &Path, wrong: u64) {
    let counts = sqlite_row_counts(&rusqlite::Connection::open(db).unwrap());
    let mut tables: Vec<(&str, u64)> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    tables[0].1 += wrong;
    write_manifest_claiming(backup, "sqlite", &tables);
}

#[test]
fn the_daemon_drills_on_its_schedule_and_the_status_file_and_metrics_say_so() {
    let app = SqliteApp::small(30);
    let tmp = temp_dir();
    let mut daemon = app
        .backupd()
        .env("BACKUP_DRILL_SCHEDULE", EVERY_TWO_SECONDS)
        .env("TMPDIR", tmp.path())
        .daemon();
    daemon.wait_until_serving();
    let status = wait_for_drill(&app.status_file(), "passed", &daemon);
    let backup = status["last_file"].as_str().expect("the start-up backup");
    assert_eq!(status["last_drill_file"], backup, "{status:#}");
    assert!(status["last_drill_error"].is_null(), "{status:#}");
    assert!(
        is_utc_second_timestamp(status["last_drill"].as_str().unwrap_or_default()),
        "{status:#}"
    );
    assert_eq!(status["last_drill_success"], status["last_drill"]);
    assert!(status["last_drill_duration_seconds"].is_number());

    // More drills follow on the schedule; each is counted.
    let counted = poll(Duration::from_millis(200), GUARD, || {
        let n = metric(
            daemon.port,
            "backupd_drills_total",
            &[("result", "success")],
        );
        (n >= 2.0).then_some(n)
    });
    assert!(
        counted.is_some(),
        "fewer than two drills:\n{}",
        daemon.log()
    );
    assert_eq!(
        metric(
            daemon.port,
            "backupd_drills_total",
            &[("result", "failure")]
        ),
        0.0
    );
    let last = metric(
        daemon.port,
        "backupd_last_drill_success_timestamp_seconds",
        &[],
    );
    assert!(
        (last - Utc::now().timestamp() as f64).abs() < 600.0,
        "last drill success at {last}"
    );
    let run = daemon.stop_cleanly();
    assert!(run.stderr.contains("drill passed"), "{run}");
    assert_eq!(dir_names(tmp.path()), Vec::<String>::new(), "{run}");
}

#[test]
fn a_failed_drill_is_told_and_healthz_wants_a_recent_passed_drill() {
    let app = SqliteApp::small(30);
    let backup = app.backupd().once().backup_path();
    sqlite_manifest(&backup, &app.db, 7);
    let receiver = Receiver::start(Behaviour::ok());
    let daemon_cfg = app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_DRILL_SCHEDULE", YEARLY)
        .env("HEALTH_MAX_DRILL_AGE_SECONDS", "3600")
        .env("NOTIFY_URLS", format!("{}/hook", receiver.url()));
    let healthcheck = || {
        app.backupd()
            .env("HEALTH_MAX_DRILL_AGE_SECONDS", "3600")
            .run(&["healthcheck"])
    };

    // No drill has passed within the limit: the daemon drills at once.
    let mut daemon = daemon_cfg.daemon();
    daemon.wait_until_serving();
    let status = wait_for_drill(&app.status_file(), "failed", &daemon);
    let error = status["last_drill_error"].as_str().unwrap_or_default();
    assert!(error.contains("the manifest says"), "{status:#}");
    let notice = poll(Duration::from_millis(100), GUARD, || {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.json()["event"] == "drill-failed")
    })
    .unwrap_or_else(|| panic!("no drill-failed notice:\n{}", daemon.log()))
    .json();
    assert_eq!(notice["severity"], "error");
    assert_eq!(notice["file"], backup.to_str().unwrap());
    assert!(
        notice["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the manifest says"),
        "{notice}"
    );
    let health = http_get(daemon.port, "/healthz");
    assert_eq!(health.status, 503, "{health}");
    let reason = health.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("no restore drill has passed yet")
            && reason.contains("the last drill failed"),
        "{reason}"
    );
    healthcheck()
        .assert_code(1)
        .assert_stderr_mentions(&["no restore drill has passed yet"]);
    assert_eq!(
        metric(
            daemon.port,
            "backupd_drills_total",
            &[("result", "failure")]
        ),
        1.0
    );
    daemon.stop_cleanly();

    // The manifest right: the restarted daemon drills at once again, and passes.
    sqlite_manifest(&backup, &app.db, 0);
    let mut daemon = daemon_cfg.daemon();
    daemon.wait_until_serving();
    wait_for_drill(&app.status_file(), "passed", &daemon);
    let health = http_get(daemon.port, "/healthz");
    assert_eq!(health.status, 200, "{health}");
    assert!(health.json()["last_drill_success"].is_string(), "{health}");
    healthcheck().assert_code(0);
    daemon.stop_cleanly();
    // A pass is info: not sent at NOTIFY_LEVEL=error.
    assert!(
        !receiver
            .requests()
            .iter()
            .any(|r| r.json()["event"] == "drill-finished")
    );
}

// ------------------------------------------------------------ PostgreSQL

fn pg_app() -> Option<(PgCluster, tempfile::TempDir)> {
    let bin = require_postgres()?;
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    Some((cluster, temp_dir()))
}

fn scratch_databases(cluster: &PgCluster) -> Vec<String> {
    cluster
        .databases()
        .into_iter()
        .filter(|d| d.starts_with("appdb_drill_"))
        .collect()
}

#[test]
fn at_start_up_the_daemon_drops_what_killed_drills_left_then_drills_postgres() {
    let Some((cluster, work)) = pg_app() else {
        return;
    };
    let dir = work.path().join("backups");
    let leftover = "appdb_drill_20261201T030000.000000Z";
    cluster.createdb(leftover, PG_APP_USER);
    let mut daemon = cluster
        .backupd(&dir)
        .env("BACKUP_DRILL_SCHEDULE", EVERY_TWO_SECONDS)
        .daemon();
    let status = wait_for_drill(&status_path(&dir), "passed", &daemon);
    assert!(
        daemon.wait_for_log(GUARD, |log| log
            .contains("dropped a scratch database left by an interrupted drill")
            && log.contains(leftover)),
        "{}",
        daemon.log()
    );
    assert_eq!(status["last_drill_file"], status["last_file"], "{status:#}");
    daemon.stop_cleanly();
    assert_eq!(scratch_databases(&cluster), Vec::<String>::new());
}

#[test]
fn a_sigterm_mid_drill_stops_the_daemon_and_drops_the_scratch_database() {
    let Some((cluster, work)) = pg_app() else {
        return;
    };
    let dir = work.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    // The newest backup sleeps half way through its load.
    let mut pg_dump = cluster.client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
    pg_dump.args(["--format=plain", "--no-owner", "--no-privileges"]);
    let (slow, _) = insert_in_middle(&run_ok(&mut pg_dump), "SELECT pg_sleep(60);");
    let name = Kind::Postgres.name_at(Utc::now() - chrono::Duration::minutes(1));
    write_gzip(&dir.join(&name), slow.as_bytes());
    let mut daemon = cluster
        .backupd(&dir)
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_DRILL_SCHEDULE", YEARLY)
        .env("HEALTH_MAX_DRILL_AGE_SECONDS", "3600")
        .daemon();
    let loading = poll(Duration::from_millis(100), GUARD, || {
        let sleeping = cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'appdb\\_drill\\_%' \
             AND query LIKE '%pg_sleep%'",
        );
        (sleeping.trim() != "0").then_some(())
    });
    assert!(
        loading.is_some(),
        "the drill never loaded:\n{}",
        daemon.log()
    );
    let run = daemon.stop_cleanly();
    assert_eq!(
        scratch_databases(&cluster),
        Vec::<String>::new(),
        "a cancelled drill drops its scratch database:\n{run}"
    );
    let status = read_status(&status_path(&dir));
    assert_eq!(
        status["last_drill_error"], "cancelled by shutdown",
        "{status:#}"
    );
    assert!(status["last_drill_success"].is_null());
}
