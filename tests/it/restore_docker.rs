//! The operator drops a backup; backupd stops the app's containers through
//! the real Docker engine, restores, and starts them again — and refuses
//! before stopping anything when a named container does not exist, and
//! brings the app back after being killed mid-restore.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::docker::{TestContainer, require_test_image};
use common::*;

struct Stack {
    app: SqliteApp,
    incoming: PathBuf,
    failed: PathBuf,
    state: PathBuf,
}

impl Stack {
    fn new() -> Stack {
        let app = SqliteApp::small(50);
        let root = app.work.path().join("restore");
        let incoming = root.join("incoming");
        fs::create_dir_all(&incoming).unwrap();
        Stack {
            failed: root.join("failed"),
            state: root.join("state").join("restore-state.json"),
            incoming,
            app,
        }
    }

    /// A good backup of the current database, dropped into the incoming folder.
    fn drop_backup(&self) -> PathBuf {
        let run = self.app.backupd().once();
        run.assert_code(0);
        let made = PathBuf::from(run.stdout.lines().last().unwrap().trim());
        let dropped = self.incoming.join(file_name(&made));
        fs::copy(&made, &dropped).unwrap();
        dropped
    }

    fn restore(&self, stop: &str, stop_wait: &str) -> Backupd {
        self.app
            .backupd()
            .env("RESTORE_SQLITE_PATH", &self.app.db)
            .env("RESTORE_WATCH_DIR", &self.incoming)
            .env("RESTORE_STATE_FILE", &self.state)
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1")
            .env("RESTORE_STOP_CONTAINERS", stop)
            .env("RESTORE_STOP_TIMEOUT", "5")
            .env("RESTORE_STOP_WAIT_SECONDS", stop_wait)
            .env("RESTORE_START_WAIT_SECONDS", "0")
            .env("RESTORE_HEALTH_TIMEOUT", "20")
    }

    fn state_json(&self) -> serde_json::Value {
        fs::read_to_string(&self.state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn history_results(&self) -> Vec<String> {
        self.state_json()["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| e["result"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn web_container(image: &str) -> TestContainer {
    TestContainer::run_fast_stop(
        image,
        &[
            "--health-cmd",
            "/bin/busybox true",
            "--health-interval",
            "1s",
        ],
    )
}

fn rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn containers_are_stopped_during_the_restore_and_running_after() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = Stack::new();
    let web = web_container(image);
    let dropped = stack.drop_backup();
    let before = rows(&stack.app.db);

    let mut service = stack.restore(&web.name, "3").background(&["restore"]);
    let seen_stopped = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        (!web.cli_running()).then_some(())
    });
    assert!(
        seen_stopped.is_some(),
        "the web container was never seen stopped:\n{}",
        service.log()
    );
    let restored = poll(Duration::from_millis(200), Duration::from_secs(60), || {
        stack
            .history_results()
            .first()
            .filter(|r| *r == "restored")
            .cloned()
    });
    assert!(
        restored.is_some(),
        "no restore recorded:\n{}",
        service.log()
    );
    assert!(
        web.cli_running(),
        "web is not running again after the restore"
    );
    let health = web.cli_inspect("{{.State.Health.Status}}");
    assert!(
        health == "healthy" || health == "starting",
        "health after restore: {health}"
    );
    let entry = &stack.state_json()["history"][0];
    assert_eq!(
        entry["containers_stopped"][0].as_str(),
        Some(web.name.as_str())
    );
    assert!(stack.state_json()["in_progress"].is_null());
    assert!(!dropped.exists(), "the restored file was not deleted");
    assert_eq!(rows(&stack.app.db), before);
    let done = service.terminate(Duration::from_secs(15));
    assert_eq!(done.code, 0, "{done}");
}

#[test]
fn a_missing_container_refuses_the_restore_with_nothing_stopped() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = Stack::new();
    let web = web_container(image);
    let started_at = web.cli_inspect("{{.State.StartedAt}}");
    let dropped = stack.drop_backup();

    let mut service = stack
        .restore(&format!("{},backupd-no-such-container", web.name), "0")
        .background(&["restore"]);
    let reason = poll(Duration::from_millis(200), Duration::from_secs(30), || {
        let file = stack
            .failed
            .join(format!("{}.reason.json", file_name(&dropped)));
        fs::read_to_string(file).ok()
    });
    let reason = reason.unwrap_or_else(|| panic!("the file was not refused:\n{}", service.log()));
    assert!(reason.contains("backupd-no-such-container"), "{reason}");
    assert!(web.cli_running());
    assert_eq!(
        web.cli_inspect("{{.State.StartedAt}}"),
        started_at,
        "the web container was restarted"
    );
    let _ = service.terminate(Duration::from_secs(15));
}

#[test]
fn after_kill_9_mid_restore_the_next_start_brings_the_app_back() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = Stack::new();
    let web = web_container(image);
    stack.drop_backup();
    let before = rows(&stack.app.db);

    // A long wait after stopping leaves backupd sitting with the app down.
    let mut service = stack.restore(&web.name, "60").background(&["restore"]);
    let stopped = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        (!web.cli_running()).then_some(())
    });
    assert!(stopped.is_some(), "web never stopped:\n{}", service.log());
    service.signal("KILL");
    let _ = service.wait_exit(Duration::from_secs(10));
    assert!(
        !web.cli_running(),
        "web should still be down after the crash"
    );
    assert!(
        !stack.state_json()["in_progress"].is_null(),
        "the intent was not recorded before stopping"
    );

    let mut again = stack.restore(&web.name, "0").background(&["restore"]);
    let recovered = poll(Duration::from_millis(200), Duration::from_secs(60), || {
        (web.cli_running() && stack.history_results().iter().any(|r| r == "interrupted"))
            .then_some(())
    });
    assert!(recovered.is_some(), "not recovered:\n{}", again.log());
    assert!(stack.state_json()["in_progress"].is_null());
    assert_eq!(rows(&stack.app.db), before, "the database is not intact");
    let _ = again.terminate(Duration::from_secs(15));
}

#[test]
fn a_postgres_dump_failing_half_way_leaves_the_live_rows_and_never_stops_the_app() {
    let Some(image) = require_test_image() else {
        return;
    };
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    let work = temp_dir();
    let backups = work.path().join("backups");
    let made = cluster.backupd(&backups).once();
    made.assert_code(0);
    let good = PathBuf::from(made.stdout.lines().last().unwrap().trim());
    let (broken, _) = insert_in_middle(
        &String::from_utf8(gunzip_bytes(&good)).unwrap(),
        "SELECT * FROM no_such_table;",
    );
    let incoming = work.path().join("restore").join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let staged = work.path().join("pg_dump-broken.sql.gz");
    write_gzip(&staged, broken.as_bytes());
    let live = cluster.table_checksums("appdb");
    let web = web_container(image);

    let mut service = cluster
        .backupd(&backups)
        .env("RESTORE_WATCH_DIR", &incoming)
        .env(
            "RESTORE_STATE_FILE",
            work.path().join("restore/state/restore-state.json"),
        )
        .env("RESTORE_SETTLE_SECONDS", "1")
        .env("RESTORE_POLL_INTERVAL", "1")
        .env("RESTORE_STOP_CONTAINERS", &web.name)
        .env("RESTORE_STOP_WAIT_SECONDS", "1")
        .env("RESTORE_START_WAIT_SECONDS", "0")
        .background(&["restore"]);
    fs::rename(&staged, incoming.join("pg_dump-broken.sql.gz")).unwrap();
    // The staging load runs while the app does: a failed load stops nothing.
    let reason = poll(Duration::from_millis(200), Duration::from_secs(60), || {
        fs::read_to_string(
            work.path()
                .join("restore/failed/pg_dump-broken.sql.gz.reason.json"),
        )
        .ok()
    })
    .unwrap_or_else(|| panic!("the broken dump was not failed:\n{}", service.log()));
    assert!(reason.contains("no_such_table"), "{reason}");
    assert!(web.cli_running(), "web is not running after the failure");
    let state: serde_json::Value = serde_json::from_slice(
        &fs::read(work.path().join("restore/state/restore-state.json")).unwrap(),
    )
    .unwrap();
    let entry = &state["history"][0];
    assert_eq!(entry["phase"], "loading", "{entry}");
    assert_eq!(
        entry["containers_stopped"],
        serde_json::json!([]),
        "{entry}"
    );
    assert!(entry["downtime_seconds"].is_null(), "{entry}");
    assert_eq!(
        cluster.table_checksums("appdb"),
        live,
        "the live rows changed"
    );
    let _ = service.terminate(Duration::from_secs(15));
}

/// The app's restore outage, as the backup side shows it: `backupd restore
/// --file` writes `last_restore_*` into BACKUP_DIR's status file beside the
/// backup keys, and the daemon on that folder exports the downtime at the
/// next scrape (and no sample once a restore stopped nothing).
#[test]
fn the_status_file_and_the_daemon_s_metrics_tell_the_last_restore_s_outage() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = Stack::new();
    let web = web_container(image);
    let made = stack.drop_backup();
    let name = file_name(&made);
    let status_file = stack.app.status_file();
    let last_backup = read_status(&status_file)["last_backup"].clone();

    let run = stack
        .restore(&web.name, "0")
        .run(&["restore", "--file", made.to_str().unwrap()]);
    run.assert_code(0);
    assert!(web.cli_running(), "web is not running after the restore");
    let status = read_status(&status_file);
    assert_eq!(status["last_restore_result"], "success", "{status:#}");
    assert_eq!(status["last_restore_file"], name.as_str(), "{status:#}");
    let at = status["last_restore_at"].as_str().unwrap_or_default();
    assert!(is_utc_second_timestamp(at), "{status:#}");
    let downtime = status["last_restore_downtime_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no downtime recorded though web was stopped: {status:#}"));
    assert!(downtime > 0.0, "{status:#}");
    assert_eq!(
        stack.state_json()["history"][0]["downtime_seconds"].as_f64(),
        Some(downtime),
        "the status file and the history disagree"
    );
    assert_eq!(
        status["last_backup"], last_backup,
        "the backup keys were lost"
    );

    let mut daemon = stack
        .app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "86400")
        .daemon();
    daemon.wait_until_serving();
    let metric = "backupd_last_restore_downtime_seconds";
    let scrape = || parse_metrics(&http_get(daemon.port, "/metrics").body);
    assert_eq!(metric_value(&scrape(), metric, &[]), Some(downtime));

    // A file that is no backup fails at the check: nothing stopped, no
    // downtime, no sample; the daemon's own writes keep the restore's keys.
    let bad = stack.app.work.path().join("app-20261201T000000Z.db.gz");
    write_gzip(&bad, b"not a database");
    let run = stack
        .restore(&web.name, "0")
        .run(&["restore", "--file", bad.to_str().unwrap()]);
    run.assert_code(1);
    let status = read_status(&status_file);
    assert_eq!(status["last_restore_result"], "failed", "{status:#}");
    assert_eq!(status["last_restore_file"], "app-20261201T000000Z.db.gz");
    assert!(
        status["last_restore_downtime_seconds"].is_null(),
        "{status:#}"
    );
    assert_eq!(metric_value(&scrape(), metric, &[]), None);
    daemon.stop_cleanly();
}
