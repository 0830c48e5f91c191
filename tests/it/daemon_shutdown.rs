//! `docker stop` sends SIGTERM and kills after a grace period: the daemon
//! exits 0 promptly when idle, and during a backup it stops pg_dump,
//! removes the partial file and records why, within BACKUP_SHUTDOWN_TIMEOUT.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

/// The grace period the tests configure (the default, made explicit).
const SHUTDOWN_TIMEOUT: u64 = 8;

/// A bound for an idle shutdown (a guard against hanging, not a timing test).
const IDLE_BOUND: Duration = Duration::from_secs(SHUTDOWN_TIMEOUT + 2);

fn sqlite_daemon(app: &SqliteApp, on_start: bool) -> Daemon {
    let daemon = app
        .backupd()
        .env("BACKUP_ON_START", if on_start { "true" } else { "false" })
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .env("BACKUP_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT.to_string())
        .daemon();
    daemon.wait_until_serving();
    daemon
}

fn idle_signal_exits_0(signal: &str) {
    let app = SqliteApp::small(100);
    let dir = &app.dir;
    let mut daemon = sqlite_daemon(&app, false);
    daemon.signal(signal);
    let Some(run) = daemon.wait_exit(IDLE_BOUND) else {
        panic!(
            "an idle daemon still runs {IDLE_BOUND:?} after SIG{signal}:\n{}",
            daemon.log()
        );
    };
    eprintln!("{run}");
    run.assert_code(0);
    assert!(backup_files(dir).is_empty(), "{:?}", dir_names(dir));
}

#[test]
fn sigterm_while_idle_exits_0_promptly() {
    idle_signal_exits_0("TERM");
}

#[test]
fn sigint_while_idle_exits_0_promptly() {
    idle_signal_exits_0("INT");
}

#[test]
fn sigterm_after_a_backup_exits_0_and_keeps_the_good_status() {
    let app = SqliteApp::small(100);
    let dir = &app.dir;
    let mut daemon = sqlite_daemon(&app, true);
    assert!(
        daemon.wait_for_log(Duration::from_secs(20), |l| l.contains("backup finished")),
        "the start-up backup did not finish:\n{}",
        daemon.log()
    );
    let run = daemon.terminate(IDLE_BOUND);
    eprintln!("{run}");
    run.assert_code(0);
    let backups = backup_files(dir);
    assert_eq!(backups.len(), 1, "{:?}", dir_names(dir));
    let status = read_status(&app.status_file());
    assert_success_status(&status, &dir.join(&backups[0]), "sqlite");
}

#[test]
fn sigterm_during_a_long_pg_dump_stops_it_and_records_the_cancellation() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    // ~400k rows of ~140 bytes of poorly compressible text: at gzip level 9
    // the COPY lasts long enough to be caught in the act.
    cluster.create_big_table(400_000);
    let (_work, dir) = temp_backup_dir();
    let mut daemon = cluster
        .backupd(&dir)
        .env("BACKUP_COMPRESSION_LEVEL", "9")
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .env("BACKUP_RETRY_SECONDS", "0")
        .env("BACKUP_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT.to_string())
        .daemon();

    // Wait until pg_dump's COPY is running.
    let caught = poll(Duration::from_millis(20), Duration::from_secs(60), || {
        if !daemon.is_running() || daemon.log().contains("backup finished") {
            return Some(false);
        }
        (!cluster.active_copies(PG_APP_DB).is_empty()).then_some(true)
    });
    match caught {
        Some(true) => {}
        Some(false) => panic!(
            "the backup ended (or the daemon exited) before pg_dump's COPY was seen; \
             the table is too small for this machine:\n{}",
            daemon.log()
        ),
        None => panic!(
            "pg_dump's COPY never showed in pg_stat_activity:\n{}\nserver log:\n{}",
            daemon.log(),
            cluster.server_log()
        ),
    }
    let children = daemon.children();
    let pg_dump = children
        .iter()
        .find(|(_, comm)| comm == "pg_dump")
        .map(|(pid, _)| *pid)
        .unwrap_or_else(|| {
            panic!(
                "no pg_dump among backupd's children {children:?} while its COPY runs:\n{}",
                daemon.log()
            )
        });

    let signalled = Instant::now();
    daemon.signal("TERM");
    let bound = Duration::from_secs(SHUTDOWN_TIMEOUT + 2);
    let Some(run) = daemon.wait_exit(bound) else {
        panic!(
            "backupd still runs {bound:?} after SIGTERM during pg_dump \
             (BACKUP_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}); children now: {:?}\nlog:\n{}",
            daemon.children(),
            daemon.log()
        );
    };
    eprintln!("exited {:?} after SIGTERM\n{run}", signalled.elapsed());
    run.assert_code(0).assert_not_shown(PG_APP_PASSWORD);

    // No process backupd started outlives it (an unreaped zombie has exited).
    for (pid, comm) in &children {
        assert!(
            !process_alive(*pid),
            "backupd exited, but its child {comm} (pid {pid}) still runs: {:?}\n{run}",
            proc_stat(*pid)
        );
    }
    assert!(
        !process_alive(pg_dump),
        "pg_dump (pid {pg_dump}) still runs after backupd exited\n{run}"
    );
    // And the server sees the session end.
    let ended = poll(Duration::from_millis(100), Duration::from_secs(10), || {
        cluster.active_copies(PG_APP_DB).is_empty().then_some(())
    });
    assert!(
        ended.is_some(),
        "pg_dump's COPY still runs on the server after backupd exited"
    );

    // Nothing of the interrupted backup is left.
    assert!(
        work_files(&dir).is_empty(),
        "the partial file of the cancelled backup is still there: {:?}",
        dir_names(&dir)
    );
    assert!(
        backup_files(&dir).is_empty(),
        "the cancelled backup left a file under a final name: {:?}",
        dir_names(&dir)
    );
    let status = read_status(&status_path(&dir));
    assert_eq!(
        status["last_error"].as_str(),
        Some("cancelled by shutdown"),
        "status after a cancelled backup: {status:#}"
    );
    assert!(status["last_backup"].is_null(), "{status:#}");
}
