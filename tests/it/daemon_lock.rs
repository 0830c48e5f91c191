//! `backupd once` (from cron) and the daemon share BACKUP_DIR: both take an
//! flock on `BACKUP_DIR/.backupd.lock` around each backup, so two backups
//! never run at once. The daemon skips a run while the lock is held; `once`
//! waits for it.

use crate::common;

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use common::*;

const GIVE_UP: Duration = Duration::from_secs(20);

/// Takes the lock backupd takes, as another backupd would.
fn hold_lock(dir: &Path) -> File {
    std::fs::create_dir_all(dir).unwrap();
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".backupd.lock"))
        .unwrap();
    lock.lock().expect("flock BACKUP_DIR/.backupd.lock");
    lock
}

fn skip_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.to_lowercase().contains("skip"))
        .count()
}

#[test]
fn daemon_skips_runs_while_the_lock_is_held_and_backs_up_after_release() {
    let app = SqliteApp::new(1);
    let dir = app.dir.clone();
    let lock = hold_lock(&dir);

    let mut daemon = app
        .backupd()
        .env("BACKUP_INTERVAL_SECONDS", "1")
        .env("BACKUP_RETRY_SECONDS", "0")
        .daemon();
    // Two skipped runs: the start-up one and at least one on the interval.
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| skip_lines(log) >= 2),
        "the daemon did not log two skipped runs while the lock was held:\n{}",
        daemon.log()
    );
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(
        backup_files(&dir).is_empty() && work_files(&dir).is_empty(),
        "a backup ran while another held the lock: {:?}\n{}",
        dir_names(&dir),
        daemon.log()
    );
    assert!(
        !daemon.log().contains("backup finished"),
        "{}",
        daemon.log()
    );

    lock.unlock().unwrap();
    drop(lock);
    let appeared = poll(Duration::from_millis(100), GIVE_UP, || {
        let files = backup_files(&dir);
        (!files.is_empty()).then_some(files)
    });
    let Some(files) = appeared else {
        panic!(
            "no backup within {GIVE_UP:?} of releasing the lock:\n{}",
            daemon.log()
        );
    };
    assert!(
        daemon.wait_for_log(GIVE_UP, |l| l.contains("backup finished")),
        "{}",
        daemon.log()
    );
    daemon.stop_cleanly();
    assert_sha256sum_c(&dir.join(&files[0]));
}

#[test]
fn once_waits_for_the_lock_and_finishes_after_release() {
    let app = SqliteApp::new(1);
    let dir = app.dir.clone();
    let lock = hold_lock(&dir);

    let mut once = app.backupd().background(&["once"]);
    // An observation window: `once` must still be waiting at its end.
    std::thread::sleep(Duration::from_secs(1));
    if let Some(run) = once.wait_exit(Duration::ZERO) {
        panic!("`once` did not wait for the lock held by another backup:\n{run}");
    }
    assert!(
        backup_files(&dir).is_empty() && work_files(&dir).is_empty(),
        "`once` wrote while another held the lock: {:?}",
        dir_names(&dir)
    );

    lock.unlock().unwrap();
    drop(lock);
    let Some(run) = once.wait_exit(Duration::from_secs(60)) else {
        panic!(
            "`once` did not finish after the lock was released:\n{}",
            once.log()
        );
    };
    eprintln!("{run}");
    let backup = run.backup_path();
    assert_eq!(backup.parent(), Some(dir.as_path()));
    assert_sha256sum_c(&backup);
}

#[test]
fn once_started_during_the_daemons_backup_waits_for_it_then_backs_up() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    cluster.create_big_table(150_000);
    let (_work, dir) = temp_backup_dir();
    let cfg = cluster
        .backupd(&dir)
        .env("BACKUP_COMPRESSION_LEVEL", "9")
        .env("BACKUP_INTERVAL_SECONDS", "3600");
    let mut daemon = cfg.daemon();

    // The daemon's start-up backup is dumping …
    let dumping = poll(Duration::from_millis(20), Duration::from_secs(60), || {
        if daemon.log().contains("backup finished") {
            return Some(false);
        }
        daemon
            .children()
            .iter()
            .any(|(_, comm)| comm == "pg_dump")
            .then_some(true)
    });
    assert_eq!(
        dumping,
        Some(true),
        "the daemon's pg_dump was never seen running:\n{}",
        daemon.log()
    );
    // … when `once` starts: it must not dump until the daemon is done.
    let mut once = cfg.background(&["once"]);
    let mut overlaps = Vec::new();
    let daemon_done = poll(Duration::from_millis(20), Duration::from_secs(120), || {
        let daemon_dumps = daemon.children().iter().any(|(_, c)| c == "pg_dump");
        let once_dumps = children_of(once.pid()).iter().any(|(_, c)| c == "pg_dump");
        if daemon_dumps && once_dumps {
            overlaps.push(daemon.log());
        }
        daemon.log().contains("backup finished").then_some(())
    });
    assert!(
        daemon_done.is_some(),
        "the daemon's backup did not finish:\n{}",
        daemon.log()
    );
    assert!(
        overlaps.is_empty(),
        "`once` ran pg_dump while the daemon's pg_dump was running ({} samples)",
        overlaps.len()
    );
    let Some(run) = once.wait_exit(Duration::from_secs(120)) else {
        panic!(
            "`once` did not finish after the daemon's backup:\n{}",
            once.log()
        );
    };
    eprintln!("{run}");
    let from_once = run.backup_path();

    daemon.stop_cleanly();
    let files = backup_files(&dir);
    assert_eq!(files.len(), 2, "{:?}", dir_names(&dir));
    let once_name = file_name(&from_once);
    assert!(files.contains(&once_name), "{files:?}");
    for name in &files {
        assert_sound_backup(&dir.join(name));
    }
}
