//! BACKUP_DIR is shared with the app (its `.encryption_key`, its `logs/`):
//! after a successful backup, retention deletes old backups and their
//! sidecars by the age in their names, keeps the newest few of each kind,
//! and never touches anything else.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use common::*;

const UNRELATED: &[&str] = &[
    ".encryption_key",
    "logs/audit.log",
    "notes.txt",
    "pg_dump-malformed.sql.gz",
];

/// What the app keeps in its files; its key file holds a real key (which
/// also makes these backups encrypted).
fn unrelated_content(name: &str) -> String {
    match name {
        ".encryption_key" => "5t2wGv1mCk9eJ2N2tW6FvJx0yXc2l0jKm6rZbQpU3sA=\n".to_string(),
        _ => format!("not a backup: {name}\n"),
    }
}

struct OldBackups {
    /// (name, days old), every name written with a `.sha256` sidecar.
    sqlite: Vec<(String, i64)>,
    postgres: Vec<(String, i64)>,
}

/// Old backups of both kinds, 10 to 6 days old (the PostgreSQL ones half an
/// hour older than the SQLite ones of the same day, so "newest first" has a
/// single answer), plus the app's own files with old mtimes.
fn populate(dir: &Path, now: DateTime<Utc>) -> OldBackups {
    fs::create_dir_all(dir.join("logs")).unwrap();
    let mut old = OldBackups {
        sqlite: Vec::new(),
        postgres: Vec::new(),
    };
    for days in [10, 9, 8, 7, 6] {
        let sqlite = Kind::Sqlite.name_at(now - chrono::Duration::days(days));
        let postgres = Kind::Postgres
            .name_at(now - chrono::Duration::days(days) - chrono::Duration::minutes(30));
        for name in [&sqlite, &postgres] {
            let path = dir.join(name);
            write_gzip(&path, format!("old backup {name}\n").as_bytes());
            write_sidecar(&path);
        }
        old.sqlite.push((sqlite, days));
        old.postgres.push((postgres, days));
    }
    let a_month_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    for name in UNRELATED {
        let path = dir.join(name);
        fs::write(&path, unrelated_content(name)).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(a_month_ago)
            .unwrap();
    }
    old
}

fn run_backup(app: &SqliteApp, retention_days: &str) -> RunResult {
    app.backupd()
        .env("BACKUP_RETENTION_DAYS", retention_days)
        .env("BACKUP_KEEP_MIN", "3")
        .once()
}

fn assert_unrelated_files_survive(dir: &Path) {
    for name in UNRELATED {
        let path = dir.join(name);
        assert_eq!(
            fs::read_to_string(&path).ok().as_deref(),
            Some(unrelated_content(name).as_str()),
            "retention touched {name}; BACKUP_DIR now holds {:?}",
            dir_names(dir)
        );
    }
}

/// The backup names in the status file, checked to be newest first.
fn status_backups(dir: &Path) -> Vec<String> {
    let status = read_status(&status_path(dir));
    status["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("backups is not an array: {status:#}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn newest_first(mut names: Vec<String>) -> Vec<String> {
    names.sort_by_key(|n| {
        let (_, stamp, suffix) = parse_backup_name(n).unwrap();
        std::cmp::Reverse((stamp, suffix))
    });
    names
}

#[test]
fn old_backups_go_with_their_sidecars_the_newest_three_of_each_kind_stay() {
    let app = SqliteApp::small(50);
    let dir = &app.dir;
    let old = populate(dir, Utc::now());

    let run = run_backup(&app, "2");
    let new = run.backup_path();
    let new_name = file_name(&new);

    // SQLite: the new one plus the two newest old ones (6 and 7 days).
    // PostgreSQL: the three newest old ones (6, 7, 8 days); no new one.
    let mut expected_kept = vec![new_name.clone()];
    for (name, days) in old.sqlite.iter().chain(&old.postgres) {
        let is_pg = name.starts_with("pg_dump-");
        let kept = if is_pg { *days <= 8 } else { *days <= 7 };
        let path = dir.join(name);
        if kept {
            expected_kept.push(name.clone());
            assert!(
                path.exists(),
                "{name} ({days} days old) is among the newest 3 of its kind and must stay; dir: {:?}",
                dir_names(dir)
            );
            assert!(sidecar_path(&path).exists(), "{name}.sha256 was deleted");
        } else {
            assert!(
                !path.exists(),
                "{name} ({days} days old) should have been deleted; dir: {:?}",
                dir_names(dir)
            );
            assert!(
                !sidecar_path(&path).exists(),
                "{name}.sha256 outlived its backup; dir: {:?}",
                dir_names(dir)
            );
        }
    }
    assert_unrelated_files_survive(dir);
    let expected_kept = newest_first(expected_kept);
    assert_eq!(newest_first(backup_files(dir)), expected_kept);

    // No orphan sidecars.
    for name in dir_names(dir) {
        if let Some(base) = name.strip_suffix(".sha256") {
            assert!(dir.join(base).exists(), "orphan sidecar {name}");
        }
    }

    // The status file lists exactly the backups, newest first.
    assert_eq!(
        status_backups(dir),
        expected_kept,
        "status `backups` must list the remaining backup files, newest first"
    );
}

#[test]
fn retention_days_zero_deletes_nothing() {
    let app = SqliteApp::small(50);
    let dir = &app.dir;
    let old = populate(dir, Utc::now());

    let run = run_backup(&app, "0");
    let new = run.backup_path();
    for (name, _) in old.sqlite.iter().chain(&old.postgres) {
        let path = dir.join(name);
        assert!(path.exists(), "{name} deleted with retention off");
        assert!(sidecar_path(&path).exists(), "{name}.sha256 deleted");
    }
    assert_unrelated_files_survive(dir);
    let mut all: Vec<String> = old
        .sqlite
        .iter()
        .chain(&old.postgres)
        .map(|(n, _)| n.clone())
        .collect();
    all.push(file_name(&new));
    let all = newest_first(all);
    assert_eq!(newest_first(backup_files(dir)), all);
    assert_eq!(status_backups(dir), all);
}
