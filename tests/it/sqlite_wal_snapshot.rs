//! The app keeps its SQLite database in WAL mode and keeps writing while
//! `backupd once` runs: the snapshot holds every committed row, including
//! commits that so far live only in the `-wal` file, and it is consistent.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use rusqlite::Connection;

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// The app's connection: WAL mode, no automatic checkpoints, so committed
/// pages stay in the -wal file.
fn app_writer(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let autocheckpoint: i64 = conn
        .query_row("PRAGMA wal_autocheckpoint = 0", [], |r| r.get(0))
        .unwrap();
    assert_eq!(autocheckpoint, 0);
    conn
}

fn insert_audit(conn: &Connection, seq: u64) {
    conn.execute(
        "INSERT INTO audit_log (action, entity_type, entity_id, message) \
         VALUES ('backup.test', 'marker', ?1, 'written by the test writer')",
        [seq as i64],
    )
    .unwrap();
}

#[test]
fn snapshot_contains_commits_that_live_only_in_the_wal() {
    let Some(_) = require_program("gunzip") else {
        return;
    };
    let app = SqliteApp::new(1);
    let (work, db) = (&app.work, &app.db);

    let writer = app_writer(db);
    writer.execute_batch("BEGIN").unwrap();
    for seq in 0..200 {
        insert_audit(&writer, seq);
    }
    writer.execute_batch("COMMIT").unwrap();
    writer
        .execute(
            "UPDATE users SET display_name = display_name || ' (renamed)' WHERE id % 2 = 0",
            [],
        )
        .unwrap();
    let wal_len = fs::metadata(wal_path(db)).map(|m| m.len()).unwrap_or(0);
    assert!(
        wal_len > 0,
        "the writer's commits should be in the -wal file, which is empty"
    );
    let expected = sqlite_contents(&writer);

    let run = app.backupd().once();
    let backup = run.backup_path();
    let name = file_name(&backup);
    assert_eq!(
        parse_backup_name(&name).map(|(k, _, _)| k),
        Some(Kind::Sqlite),
        "`{name}` is not sqlite-YYYYMMDDTHHMMSSZ.db.gz"
    );
    assert_sha256sum_c(&backup);

    let snapshot = open_sqlite_backup(&backup, &work.path().join("restored.db"));
    let got = sqlite_contents(&snapshot);
    assert_eq!(
        got["audit_log"].len(),
        expected["audit_log"].len(),
        "audit_log rows: the snapshot misses commits that were only in the WAL"
    );
    assert_same_sqlite_contents(&expected, &got);

    // The app's database is untouched and the app can go on writing.
    insert_audit(&writer, 1000);
    let status = read_status(&app.status_file());
    assert_success_status(&status, &backup, "sqlite");
}

#[test]
fn snapshot_taken_while_the_app_keeps_writing_is_consistent() {
    let Some(_) = require_program("gunzip") else {
        return;
    };
    let app = SqliteApp::new(2);
    let (work, db) = (&app.work, &app.db);

    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, committed, stop) = (db.clone(), committed.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = app_writer(&db);
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                insert_audit(&conn, seq);
                conn.execute_batch("COMMIT").unwrap();
                seq += 1;
                committed.store(seq, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
            seq
        })
    };
    // Let the writer get going before the backup starts.
    poll(Duration::from_millis(5), Duration::from_secs(60), || {
        (committed.load(Ordering::SeqCst) >= 50).then_some(())
    })
    .expect("the writer thread commits nothing");
    let before = committed.load(Ordering::SeqCst);

    let run = app.backupd().once();
    stop.store(true, Ordering::SeqCst);
    let total = writer.join().expect("the writer thread panicked");
    let backup = run.backup_path();
    eprintln!(
        "writer: {before} commits before the backup, {} during or after it",
        total - before
    );

    let restored = work.path().join("restored.db");
    let snapshot = open_sqlite_backup(&backup, &restored);
    let mut seqs: Vec<u64> = snapshot
        .prepare("SELECT entity_id FROM audit_log WHERE action = 'backup.test' ORDER BY entity_id")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() as u64)
        .collect();
    seqs.dedup();
    let in_snapshot = seqs.len() as u64;
    assert!(
        in_snapshot >= before,
        "the snapshot has {in_snapshot} of the writer's rows, but {before} were committed before the backup started"
    );
    // One transaction's view: a prefix of the commits, no gaps.
    assert_eq!(
        seqs,
        (0..in_snapshot).collect::<Vec<_>>(),
        "the snapshot's writer rows are not a prefix of the commits"
    );
    // The fixture's own rows are all there too.
    let fixture_users: i64 = snapshot
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fixture_users, 40, "users at scale 2");
}
