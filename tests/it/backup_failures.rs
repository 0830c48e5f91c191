//! When a backup cannot be taken, the operator gets the right exit code and
//! a clear message, the password stays hidden, and BACKUP_DIR holds nothing
//! that looks like a backup: no final-named file, no `.partial`.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

const APP_PASSWORD: &str = PG_APP_PASSWORD;

/// The status file, when the failed run wrote one, keeps the password out.
fn assert_status_hides(status_file: &Path, password: &str) {
    if let Ok(text) = fs::read_to_string(status_file) {
        assert!(
            !text.contains(password),
            "the status file contains the password:\n{text}"
        );
    }
}

#[test]
fn unknown_scheme_is_a_configuration_error_naming_it() {
    let (_work, backup_dir) = temp_backup_dir();
    let run = Backupd::for_database("mysql://u:hunter2pw@h/db", &backup_dir).once();
    eprintln!("{run}");
    run.assert_code(2)
        .assert_stderr_mentions(&["mysql"])
        .assert_not_shown("hunter2pw");
    assert_no_new_backup(&backup_dir, &[]);
    assert_status_hides(&status_path(&backup_dir), "hunter2pw");
}

#[test]
fn unreachable_server_fails_the_backup() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let (_work, backup_dir) = temp_backup_dir();
    let port = free_port(); // nothing listens there
    let run = Backupd::for_database(
        format!("postgresql+psycopg://app:unreach-pw-77@127.0.0.1:{port}/appdb"),
        &backup_dir,
    )
    .path_prepend(&bin)
    .once();
    eprintln!("{run}");
    run.assert_code(1)
        .assert_stderr_mentions(&["connect", &port.to_string()])
        .assert_not_shown("unreach-pw-77");
    assert_no_new_backup(&backup_dir, &[]);
    let status_file = status_path(&backup_dir);
    assert_status_hides(&status_file, "unreach-pw-77");
    if status_file.exists() {
        let status = read_status(&status_file);
        assert!(
            status["last_error"].is_string(),
            "last_error not set: {status:#}"
        );
        assert!(status["last_backup"].is_null(), "{status:#}");
    }
}

#[test]
fn wrong_password_fails_with_an_authentication_message() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    let (_work, backup_dir) = temp_backup_dir();
    let wrong = "wrong-pass-4711";
    let run = Backupd::for_database(
        cluster.url("postgresql+psycopg", "app", wrong, "appdb"),
        &backup_dir,
    )
    .path_prepend(&bin)
    .once();
    eprintln!("{run}");
    run.assert_code(1)
        .assert_stderr_mentions(&["authentication"])
        .assert_not_shown(wrong)
        .assert_not_shown(APP_PASSWORD);
    assert_no_new_backup(&backup_dir, &[]);
    assert_status_hides(&status_path(&backup_dir), wrong);
}

#[test]
fn missing_sqlite_file_fails_naming_the_path_and_is_not_created() {
    let (work, backup_dir) = temp_backup_dir();
    let db = work.path().join("data").join("app.db");
    fs::create_dir(work.path().join("data")).unwrap();
    let run = Backupd::for_database(sqlite_url(&db), &backup_dir).once();
    eprintln!("{run}");
    assert!(
        run.code == 1 || run.code == 2,
        "a missing database file must fail the run (exit 1 or 2):\n{run}"
    );
    run.assert_stderr_mentions(&[db.to_str().unwrap()]);
    assert!(
        !db.exists(),
        "backupd created the missing database file {}",
        db.display()
    );
    assert_no_new_backup(&backup_dir, &[]);
}

#[test]
fn unwritable_backup_dir_fails_naming_the_directory() {
    let app = SqliteApp::small(100);
    fs::set_permissions(app.work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&app.db, fs::Permissions::from_mode(0o644)).unwrap();
    let backup_dir = &app.dir;
    fs::create_dir(backup_dir).unwrap();

    let mut backupd = app.backupd();
    if is_root() {
        // Root ignores permissions: run as nobody against a root-owned 0755 dir.
        let Some(_) = require_program("setpriv") else {
            return;
        };
        fs::set_permissions(backup_dir, fs::Permissions::from_mode(0o755)).unwrap();
        backupd = backupd.run_as_uid(65534).current_dir("/");
    } else {
        fs::set_permissions(backup_dir, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let run = backupd.once();
    eprintln!("{run}");
    fs::set_permissions(backup_dir, fs::Permissions::from_mode(0o755)).unwrap();

    run.assert_code(1)
        .assert_stderr_mentions(&[backup_dir.to_str().unwrap()]);
    assert_no_new_backup(backup_dir, &[]);
}

#[test]
fn pg_dump_failing_mid_stream_leaves_no_file_and_keeps_the_last_good_status() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app(
        "CREATE TABLE small (id int PRIMARY KEY, note text); \
         INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 100) g;",
    );
    let (_work, backup_dir) = temp_backup_dir();
    let status_file = status_path(&backup_dir);
    let backupd = cluster
        .backupd(&backup_dir)
        .env("BACKUP_COMPRESSION_LEVEL", "9");

    // An earlier good backup.
    let good = backupd.once().backup_path();
    let good_name = file_name(&good);
    let before = read_status(&status_file);
    assert_success_status(&before, &good, "postgresql");

    // A table big enough that pg_dump is still streaming it when we strike:
    // ~400k rows of ~150 bytes.
    cluster.psql_app(
        "CREATE TABLE bulk_rows AS \
         SELECT g AS id, repeat(md5(g::text), 4) || ' row ' || g AS payload \
         FROM generate_series(1, 400000) g;",
    );

    let mut child = backupd.spawn(&["once"]);
    let mut terminated = 0;
    let mut exited_early = false;
    poll(Duration::from_millis(5), Duration::from_secs(300), || {
        if child.try_wait().unwrap().is_some() {
            exited_early = true;
            return Some(());
        }
        let n: i64 = cluster
            .psql(
                "postgres",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = 'appdb' AND state = 'active' AND query LIKE 'COPY %' \
                 AND pid <> pg_backend_pid()",
            )
            .parse()
            .unwrap();
        terminated = n;
        (n > 0).then_some(())
    })
    .expect("pg_dump's COPY never showed up in pg_stat_activity");
    let run = finish(child);
    eprintln!("{run}");
    assert!(
        !exited_early || terminated > 0,
        "backupd finished before pg_dump's COPY could be terminated (make bulk_rows bigger):\n{run}"
    );

    run.assert_code(1)
        .assert_stderr_mentions(&["pg_dump"])
        .assert_not_shown(APP_PASSWORD);
    assert_no_new_backup(&backup_dir, std::slice::from_ref(&good_name));
    assert!(good.is_file(), "the earlier good backup is gone");

    let after = read_status(&status_file);
    let error = after["last_error"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty(),
        "last_error not set after a failed backup: {after:#}"
    );
    assert!(
        !error.contains(APP_PASSWORD),
        "last_error shows the password"
    );
    assert_eq!(
        after["last_backup"], before["last_backup"],
        "last_backup changed"
    );
    assert_eq!(after["last_file"], before["last_file"], "last_file changed");
    assert!(after["last_attempt"].is_string(), "{after:#}");
}

#[test]
fn stale_partial_files_from_a_crash_are_removed_by_the_next_run() {
    let app = SqliteApp::small(100);
    let backup_dir = &app.dir;
    fs::create_dir(backup_dir).unwrap();
    let stale = [
        ".pg_dump-20200101T000000Z.sql.gz.partial",
        ".sqlite-20200101T000000Z.db.gz.partial",
    ];
    for name in stale {
        fs::write(backup_dir.join(name), b"half a backup").unwrap();
    }
    let run = app.backupd().once();
    let backup = run.backup_path();
    for name in stale {
        assert!(
            !backup_dir.join(name).exists(),
            "the stale {name} survived a successful run: {:?}",
            dir_names(backup_dir)
        );
    }
    assert!(work_files(backup_dir).is_empty());
    assert_sha256sum_c(&backup);
}
