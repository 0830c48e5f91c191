//! The restore service dies or loses a part mid-restore — kill -9 in each
//! phase, a `docker stop` in flight, the Docker engine gone while starting —
//! and afterwards the app's containers run, no staging database is left,
//! and the history tells what really happened. Also: the engine resolving an
//! all-hex name as another container's id prefix, and a tampered state file,
//! never make backupd stop or start a container the operator did not name.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::docker::{self, EngineLink, TestContainer, require_test_image};
use common::*;

/// The restore service's folders under one work directory.
struct Folders {
    incoming: PathBuf,
    failed: PathBuf,
    state: PathBuf,
}

impl Folders {
    fn under(work: &Path) -> Folders {
        let root = work.join("restore");
        let incoming = root.join("incoming");
        fs::create_dir_all(&incoming).unwrap();
        Folders {
            incoming,
            failed: root.join("failed"),
            state: root.join("state").join("restore-state.json"),
        }
    }

    /// The restore settings of these tests on top of `base`.
    fn service(&self, base: Backupd, stop: &str) -> Backupd {
        base.env("RESTORE_WATCH_DIR", &self.incoming)
            .env("RESTORE_STATE_FILE", &self.state)
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1")
            .env("RESTORE_STOP_CONTAINERS", stop)
            .env("RESTORE_STOP_TIMEOUT", "5")
            .env("RESTORE_STOP_WAIT_SECONDS", "0")
            .env("RESTORE_START_WAIT_SECONDS", "0")
            .env("RESTORE_HEALTH_TIMEOUT", "5")
    }

    fn state_json(&self) -> serde_json::Value {
        fs::read_to_string(&self.state)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn in_progress(&self) -> serde_json::Value {
        self.state_json()["in_progress"].clone()
    }

    /// The newest history entry, once there is one.
    fn newest(&self) -> Option<serde_json::Value> {
        self.state_json()["history"]
            .as_array()
            .and_then(|h| h.first().cloned())
    }

    fn wait_newest(&self, service: &Daemon, give_up: Duration) -> serde_json::Value {
        poll(Duration::from_millis(200), give_up, || self.newest())
            .unwrap_or_else(|| panic!("no restore recorded:\n{}", service.log()))
    }
}

/// A container of the app that stops at once (SIGKILL as stop signal).
fn app_container(image: &str) -> TestContainer {
    TestContainer::run_fast_stop(image, &[])
}

/// A container whose PID 1 (busybox sleep) ignores SIGTERM: `docker stop`
/// takes the whole grace period.
fn slow_stopping_container(image: &str) -> TestContainer {
    TestContainer::run(image, &[], &[])
}

fn wait_running(container: &TestContainer, give_up: Duration) -> bool {
    poll(Duration::from_millis(200), give_up, || {
        container.cli_running().then_some(())
    })
    .is_some()
}

// ---------------------------------------------------------------- SQLite app

struct SqliteStack {
    app: SqliteApp,
    folders: Folders,
}

impl SqliteStack {
    fn new() -> SqliteStack {
        let app = SqliteApp::small(50);
        let folders = Folders::under(app.work.path());
        SqliteStack { app, folders }
    }

    /// A good backup of the current database, dropped into the incoming folder.
    fn drop_backup(&self) -> PathBuf {
        let run = self.app.backupd().once();
        run.assert_code(0);
        let made = PathBuf::from(run.stdout.lines().last().unwrap().trim());
        let dropped = self.folders.incoming.join(file_name(&made));
        fs::copy(&made, &dropped).unwrap();
        dropped
    }

    fn restore(&self, stop: &str) -> Backupd {
        self.folders
            .service(self.app.backupd(), stop)
            .env("RESTORE_SQLITE_PATH", &self.app.db)
    }
}

#[test]
fn a_name_that_is_another_containers_id_prefix_refuses_the_restore_and_stops_nothing() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = SqliteStack::new();
    let victim = app_container(image);
    let started_at = victim.cli_inspect("{{.State.StartedAt}}");
    // No container has this name; the engine alone would resolve it as an
    // id prefix of the victim.
    let hex_name = victim.id[..12].to_string();
    assert!(docker::docker_ok(&["inspect", "--format", "{{.Name}}", &hex_name]).is_ok());
    let dropped = stack.drop_backup();

    let run = stack.restore(&hex_name).run_bounded(
        &["restore", "--file", &dropped.to_string_lossy()],
        Duration::from_secs(60),
    );
    run.assert_code(1);
    run.assert_stderr_mentions(&[&hex_name, "does not exist"]);
    assert!(victim.cli_running(), "the other container was stopped");
    assert_eq!(
        victim.cli_inspect("{{.State.StartedAt}}"),
        started_at,
        "the other container was restarted"
    );
    let entry = stack
        .folders
        .newest()
        .expect("the refusal is in the history");
    assert_eq!(entry["result"], "failed", "{entry}");
    assert!(
        entry["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{entry}"
    );
}

#[test]
fn recovery_starts_only_configured_containers_whatever_the_state_file_says() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = SqliteStack::new();
    let web = app_container(image);
    let bystander = app_container(image);
    web.cli_stop();
    bystander.cli_stop();
    // A state file someone edited: the bystander is not configured.
    fs::create_dir_all(stack.folders.state.parent().unwrap()).unwrap();
    let tampered = serde_json::json!({
        "last_processed": null,
        "in_progress": {
            "file": stack.folders.incoming.join("sqlite-20261201T000000Z.db.gz").display().to_string(),
            "stamp": "20261201T000000Z",
            "started_at": "2026-12-01T00:00:00Z",
            "phase": "loading",
            "containers": [web.name, bystander.name],
            "stopped": [web.name, bystander.name],
            "stopping": [web.name, bystander.name],
            "database": "sqlite",
        },
        "history": [],
    });
    fs::write(&stack.folders.state, tampered.to_string()).unwrap();

    let mut service = stack.restore(&web.name).background(&["restore"]);
    let entry = stack.folders.wait_newest(&service, Duration::from_secs(60));
    assert_eq!(entry["result"], "interrupted", "{entry}");
    assert!(
        entry["error"]
            .as_str()
            .unwrap_or("")
            .contains(&bystander.name),
        "the skipped name is not in the history: {entry}"
    );
    assert!(
        wait_running(&web, Duration::from_secs(30)),
        "web not started"
    );
    assert!(
        service.log().contains(&bystander.name),
        "the skipped name is not logged:\n{}",
        service.log()
    );
    assert!(
        !bystander.cli_running(),
        "an unconfigured container was started"
    );
    assert!(stack.folders.in_progress().is_null());
    let _ = service.terminate(Duration::from_secs(15));
}

#[test]
fn killed_while_a_docker_stop_is_in_flight_the_next_start_brings_the_container_back() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = SqliteStack::new();
    let web = slow_stopping_container(image);
    let first_start = web.cli_inspect("{{.State.StartedAt}}");
    stack.drop_backup();

    let mut service = stack
        .restore(&web.name)
        .env("RESTORE_STOP_TIMEOUT", "8")
        .background(&["restore"]);
    // The intent is on disk and the engine is still waiting out the grace.
    let in_flight = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        let p = stack.folders.in_progress();
        let asked = p["stopping"]
            .as_array()
            .is_some_and(|s| s.iter().any(|n| n == web.name.as_str()));
        (asked && p["stopped"].as_array().is_some_and(|s| s.is_empty())).then_some(())
    });
    assert!(in_flight.is_some(), "no stop in flight:\n{}", service.log());
    std::thread::sleep(Duration::from_millis(500));
    service.signal("KILL");
    let _ = service.wait_exit(Duration::from_secs(10));
    assert!(web.cli_running(), "the stop finished before the kill");

    // Restarted at once, while the engine still stops the container.
    let mut again = stack
        .restore(&web.name)
        .env("RESTORE_STOP_TIMEOUT", "8")
        .background(&["restore"]);
    let entry = stack.folders.wait_newest(&again, Duration::from_secs(90));
    assert_eq!(entry["result"], "interrupted", "{entry}");
    assert!(
        wait_running(&web, Duration::from_secs(30)),
        "the container stayed exited:\n{}",
        again.log()
    );
    // Started again after the in-flight stop ended, not merely found
    // running while the engine was still stopping it.
    assert_ne!(
        web.cli_inspect("{{.State.StartedAt}}"),
        first_start,
        "recovery did not wait for the stop in flight:\n{}",
        again.log()
    );
    assert!(web.cli_running(), "the container died after recovery");
    assert!(stack.folders.in_progress().is_null());
    let _ = again.terminate(Duration::from_secs(15));
}

/// Waits until the state file records `web` as stopped by the restore.
fn wait_recorded_stopped(folders: &Folders, web: &TestContainer, service: &Daemon) {
    let stopped = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        folders.in_progress()["stopped"]
            .as_array()
            .is_some_and(|s| s.iter().any(|n| n == web.name.as_str()))
            .then_some(())
    });
    assert!(stopped.is_some(), "web never stopped:\n{}", service.log());
}

#[test]
fn the_engine_lost_while_starting_and_back_the_retry_starts_the_container() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = SqliteStack::new();
    let web = app_container(image);
    let link = EngineLink::start();
    let dropped = stack.drop_backup();

    let mut service = stack
        .restore(&web.name)
        .env("DOCKER_HOST", link.docker_host())
        .env("RESTORE_STOP_WAIT_SECONDS", "3")
        .background(&["restore"]);
    wait_recorded_stopped(&stack.folders, &web, &service);
    link.cut();
    assert!(
        service.wait_for_log(Duration::from_secs(60), |log| log
            .contains("retrying to start the container")),
        "no retry while the engine was away:\n{}",
        service.log()
    );
    assert!(!web.cli_running());
    link.restore();

    let entry = stack.folders.wait_newest(&service, Duration::from_secs(90));
    assert_eq!(entry["result"], "restored", "{entry}");
    assert!(entry["error"].is_null(), "{entry}");
    assert!(
        wait_running(&web, Duration::from_secs(10)),
        "web not started"
    );
    assert!(stack.folders.in_progress().is_null());
    assert!(!dropped.exists());
    let _ = service.terminate(Duration::from_secs(15));
}

#[test]
fn the_engine_away_longer_than_the_retries_the_next_start_starts_the_container() {
    let Some(image) = require_test_image() else {
        return;
    };
    let stack = SqliteStack::new();
    let web = app_container(image);
    let link = EngineLink::start();
    let dropped = stack.drop_backup();

    let service_cfg = stack
        .restore(&web.name)
        .env("DOCKER_HOST", link.docker_host())
        .env("RESTORE_STOP_WAIT_SECONDS", "3")
        .env("RESTORE_START_RETRY_SECONDS", "3");
    let mut service = service_cfg.background(&["restore"]);
    wait_recorded_stopped(&stack.folders, &web, &service);
    link.cut();
    let entry = stack.folders.wait_newest(&service, Duration::from_secs(90));
    // The database part is done and said so; the containers are pending.
    assert_eq!(entry["result"], "restored", "{entry}");
    let error = entry["error"].as_str().unwrap_or("");
    assert!(error.contains("next start"), "{entry}");
    assert!(!dropped.exists(), "a restored file is not kept");
    assert_eq!(stack.folders.in_progress()["start_pending"], true);
    assert!(!web.cli_running());
    service.signal("KILL");
    let _ = service.wait_exit(Duration::from_secs(10));

    link.restore();
    let mut again = service_cfg.background(&["restore"]);
    let amended = poll(Duration::from_millis(200), Duration::from_secs(60), || {
        let entry = stack.folders.newest()?;
        entry["note"]
            .as_str()
            .is_some_and(|n| n.contains("started by recovery"))
            .then_some(entry)
    });
    let amended = amended.unwrap_or_else(|| panic!("not recovered:\n{}", again.log()));
    assert_eq!(amended["result"], "restored", "{amended}");
    assert!(
        wait_running(&web, Duration::from_secs(10)),
        "web not started"
    );
    assert!(stack.folders.in_progress().is_null());
    assert_eq!(
        stack.folders.state_json()["history"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "one restore, one history entry"
    );
    let _ = again.terminate(Duration::from_secs(15));
}

// ---------------------------------------------------------------- PostgreSQL app

struct PgStack {
    cluster: PgCluster,
    work: tempfile::TempDir,
    folders: Folders,
    backups: PathBuf,
    /// A dump of the database as first loaded (rows the live one lacks later).
    dump: PathBuf,
}

impl PgStack {
    fn new(bin: &Path) -> PgStack {
        let cluster = PgCluster::start_with_app(bin, Some(1));
        cluster.psql("postgres", "ALTER ROLE app CREATEDB");
        let work = temp_dir();
        let backups = work.path().join("backups");
        let made = cluster.backupd(&backups).once();
        made.assert_code(0);
        let dump = PathBuf::from(made.stdout.lines().last().unwrap().trim());
        // The live database moves on after the backup.
        cluster.psql_app("CREATE TABLE after_backup (x int); INSERT INTO after_backup VALUES (1);");
        let folders = Folders::under(work.path());
        PgStack {
            cluster,
            work,
            folders,
            backups,
            dump,
        }
    }

    fn restore(&self, stop: &str) -> Backupd {
        self.folders
            .service(self.cluster.backupd(&self.backups), stop)
    }

    /// Drops `sql` (a plain dump) as a `.sql.gz` into the incoming folder.
    fn drop_sql(&self, name: &str, sql: &str) -> PathBuf {
        let staged = self.work.path().join(name);
        write_gzip(&staged, sql.as_bytes());
        let dropped = self.folders.incoming.join(name);
        fs::rename(&staged, &dropped).unwrap();
        dropped
    }

    fn dump_sql(&self) -> String {
        String::from_utf8(gunzip_bytes(&self.dump)).unwrap()
    }

    fn databases(&self) -> Vec<String> {
        self.cluster
            .psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
            )
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// True when the live database is the restored one (the table added
    /// after the backup is gone).
    fn live_is_restored(&self) -> bool {
        self.cluster
            .psql_app("SELECT count(*) FROM pg_tables WHERE tablename = 'after_backup'")
            .trim()
            == "0"
    }
}

/// Kills `backupd restore` once `ready` says so, starts it again, and
/// returns the history entry recovery wrote. The app container runs after
/// both, and no staging database is left.
fn kill_and_restart(
    stack: &PgStack,
    web: &TestContainer,
    first: Backupd,
    ready: impl Fn(&PgStack, &Daemon) -> bool,
) -> serde_json::Value {
    let mut service = first.background(&["restore"]);
    let reached = poll(Duration::from_millis(100), Duration::from_secs(90), || {
        ready(stack, &service).then_some(())
    });
    assert!(
        reached.is_some(),
        "the phase was never reached:\n{}",
        service.log()
    );
    service.signal("KILL");
    let _ = service.wait_exit(Duration::from_secs(10));
    assert!(
        !stack.folders.in_progress().is_null(),
        "no in_progress left by the kill"
    );

    let mut again = stack.restore(&web.name).background(&["restore"]);
    let entry = stack.folders.wait_newest(&again, Duration::from_secs(90));
    assert!(
        wait_running(web, Duration::from_secs(30)),
        "the app container is not running:\n{}",
        again.log()
    );
    assert!(stack.folders.in_progress().is_null(), "{}", again.log());
    let leftovers: Vec<String> = stack
        .databases()
        .into_iter()
        .filter(|d| d.contains("_restore_") && !d.contains("_pre_restore_"))
        .collect();
    assert!(leftovers.is_empty(), "staging left: {leftovers:?}");
    let _ = again.terminate(Duration::from_secs(15));
    entry
}

fn phase_is(stack: &PgStack, phase: &str) -> bool {
    stack.folders.in_progress()["phase"] == phase
}

#[test]
fn killed_in_the_safety_backup_after_the_start_the_restore_had_finished() {
    let (Some(image), Some(bin)) = (require_test_image(), require_postgres()) else {
        return;
    };
    let stack = PgStack::new(&bin);
    let web = app_container(image);
    let dropped = stack.drop_sql("pg_dump-x.sql.gz", &stack.dump_sql());
    // Staging backs the set-aside database up after the swap and the start.
    let first = stack
        .restore(&web.name)
        .env("BACKUPD_TEST_PAUSE", "safety-backup");
    let entry = kill_and_restart(&stack, &web, first, |s, _| phase_is(s, "safety-backup"));
    assert_eq!(entry["result"], "restored", "{entry}");
    assert!(
        entry["safety_backup_error"]
            .as_str()
            .unwrap_or("")
            .contains("not completed"),
        "{entry}"
    );
    assert!(
        stack.live_is_restored(),
        "the live database is not the restored one"
    );
    assert!(!dropped.exists(), "a restored file is deleted");
    assert!(
        stack
            .databases()
            .iter()
            .any(|d| d.starts_with("appdb_pre_restore_")),
        "the previous database is kept as the way back"
    );
}

#[test]
fn killed_in_the_safety_backup_in_place_the_live_database_stays_and_the_app_runs() {
    let (Some(image), Some(bin)) = (require_test_image(), require_postgres()) else {
        return;
    };
    let stack = PgStack::new(&bin);
    let web = app_container(image);
    let dropped = stack.drop_sql("pg_dump-x.sql.gz", &stack.dump_sql());
    let first = stack
        .restore(&web.name)
        .env("RESTORE_PG_STRATEGY", "inplace")
        .env("BACKUPD_TEST_PAUSE", "safety-backup");
    let entry = kill_and_restart(&stack, &web, first, |s, _| phase_is(s, "safety-backup"));
    assert_eq!(entry["result"], "interrupted", "{entry}");
    assert!(!stack.live_is_restored(), "the live database changed");
    assert!(
        stack.folders.failed.join(file_name(&dropped)).exists(),
        "the interrupted file is kept in failed/"
    );
}

#[test]
fn killed_mid_load_the_staging_database_is_dropped_and_the_app_runs() {
    let (Some(image), Some(bin)) = (require_test_image(), require_postgres()) else {
        return;
    };
    let stack = PgStack::new(&bin);
    let web = app_container(image);
    let (slow, _) = insert_in_middle(&stack.dump_sql(), "SELECT pg_sleep(60);");
    stack.drop_sql("pg_dump-slow.sql.gz", &slow);
    let first = stack.restore(&web.name);
    let entry = kill_and_restart(&stack, &web, first, |s, _| {
        let loading = phase_is(s, "loading")
            && s.databases()
                .iter()
                .any(|d| d.starts_with("appdb_restore_"));
        // The staging load runs while the app does.
        if loading {
            assert!(
                wait_running(&web, Duration::from_secs(1)),
                "the app was stopped for the load"
            );
            assert!(
                s.folders.in_progress()["stopped"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
            );
        }
        loading
    });
    assert_eq!(entry["result"], "interrupted", "{entry}");
    assert!(
        entry["error"]
            .as_str()
            .unwrap_or("")
            .contains("dropped the leftover staging"),
        "{entry}"
    );
    assert!(!stack.live_is_restored(), "the live database changed");
}

#[test]
fn killed_mid_load_in_place_the_history_says_the_database_may_be_partial() {
    let (Some(image), Some(bin)) = (require_test_image(), require_postgres()) else {
        return;
    };
    let stack = PgStack::new(&bin);
    let web = app_container(image);
    let (slow, _) = insert_in_middle(&stack.dump_sql(), "SELECT pg_sleep(60);");
    stack.drop_sql("pg_dump-slow.sql.gz", &slow);
    let first = stack
        .restore(&web.name)
        .env("RESTORE_PG_STRATEGY", "inplace");
    // The live database has been emptied once the load's sleep is running.
    let entry = kill_and_restart(&stack, &web, first, |s, _| {
        phase_is(s, "loading")
            && s.cluster.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'",
            ) == "1"
    });
    assert_eq!(entry["result"], "interrupted", "{entry}");
    let error = entry["error"].as_str().unwrap_or("");
    assert!(
        error.contains("RESTORE_PG_STRATEGY=inplace") && error.contains("may be empty"),
        "{entry}"
    );
    assert!(
        error.contains("safety backup") && error.contains("pre-restore-"),
        "the way back is named: {entry}"
    );
    assert!(!error.contains("is in place"), "{entry}");
}

#[test]
fn killed_right_after_the_swap_the_history_says_restored() {
    let (Some(image), Some(bin)) = (require_test_image(), require_postgres()) else {
        return;
    };
    let stack = PgStack::new(&bin);
    let web = app_container(image);
    let dropped = stack.drop_sql("pg_dump-x.sql.gz", &stack.dump_sql());
    let first = stack
        .restore(&web.name)
        .env("BACKUPD_TEST_PAUSE", "after-swap");
    let entry = kill_and_restart(&stack, &web, first, |_, service| {
        service.log().contains("paused here until killed")
    });
    assert_eq!(entry["result"], "restored", "{entry}");
    assert!(
        entry["note"]
            .as_str()
            .unwrap_or("")
            .contains("completed by recovery"),
        "{entry}"
    );
    assert!(
        stack.live_is_restored(),
        "the live database is not the restored one"
    );
    assert!(!dropped.exists(), "a restored file is deleted");
    assert!(
        !stack.folders.failed.join(file_name(&dropped)).exists(),
        "a finished restore's file went to failed/"
    );
    assert!(
        stack
            .databases()
            .iter()
            .any(|d| d.starts_with("appdb_pre_restore_")),
        "the previous database is kept"
    );
}

#[test]
fn killed_while_swapping_recovery_tells_by_oid_what_happened() {
    let (Some(image), Some(bin)) = (require_test_image(), require_postgres()) else {
        return;
    };
    let stack = PgStack::new(&bin);
    let web = app_container(image);
    stack.drop_sql("pg_dump-x.sql.gz", &stack.dump_sql());
    // Parked with the swap recorded but not done: the live database is the
    // old one, so recovery must not call it restored.
    let first = stack
        .restore(&web.name)
        .env("BACKUPD_TEST_PAUSE", "swapping");
    let entry = kill_and_restart(&stack, &web, first, |s, _| {
        s.folders.in_progress()["swap"]["staging_oid"].is_u64()
    });
    assert_eq!(entry["result"], "interrupted", "{entry}");
    assert!(!stack.live_is_restored(), "the live database changed");
}
