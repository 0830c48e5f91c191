//! The app's own stack keeps working with backupd: its admin page finds its
//! manual backups in `backup-status.json`, its key file (empty, or written
//! as root 0600) never crash-loops the daemon, and a SQLite restore under
//! the running app is seen at once by the app's open connection.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use common::*;

/// The status file's `backups`, in order.
fn status_backups(dir: &Path) -> Vec<String> {
    let status = read_status(&status_path(dir));
    status["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("backups is not an array: {status:#}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn set_mtime(path: &Path, time: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

#[test]
fn the_apps_manual_backups_and_safety_copies_are_listed_and_survive_retention() {
    let app = SqliteApp::small(20);
    let dir = &app.dir;
    fs::create_dir_all(dir).unwrap();
    let days_ago = |days: i64| Utc::now() - chrono::Duration::days(days);
    let stamp = |days: i64| days_ago(days).format("%Y%m%dT%H%M%SZ").to_string();
    // What the app's admin page writes, 20 and 30 days old, with and without
    // encryption; a safety backup of a restore 25 days ago; an old backup of
    // ours, which retention deletes.
    let manual_sqlite = format!("sqlite-manual-{}.db.gz", stamp(20));
    let manual_pg = format!("pg_dump-manual-{}.sql.gz.enc", stamp(30));
    let safety = format!("pre-restore-sqlite-{}.db.gz", stamp(25));
    let ours_old = Kind::Sqlite.name_at(days_ago(40));
    for name in [&manual_sqlite, &manual_pg, &safety, &ours_old] {
        let path = dir.join(name);
        write_gzip(&path, format!("a backup: {name}\n").as_bytes());
        set_mtime(&path, SystemTime::now() - Duration::from_secs(40 * 86_400));
    }
    // A manual backup whose name holds no time the listing can read: its
    // mtime (35 days ago) orders it.
    let manual_odd = "sqlite-manual-before-upgrade.db.gz".to_string();
    write_gzip(&dir.join(&manual_odd), b"odd\n");
    set_mtime(
        &dir.join(&manual_odd),
        SystemTime::now() - Duration::from_secs(35 * 86_400),
    );
    // Never listed: sidecars, partials, a link, a folder.
    write_sidecar(&dir.join(&manual_sqlite));
    fs::write(dir.join(".sqlite-manual-x.db.gz.partial"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("sqlite-manual-link.db")).unwrap();
    fs::create_dir(dir.join("pg_dump-manual-folder.sql.gz")).unwrap();

    let run = app
        .backupd()
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_KEEP_MIN", "1")
        .once();
    run.assert_code(0);
    let new = file_name(&run.backup_path());

    // Retention deletes only backupd's own names.
    assert!(!dir.join(&ours_old).exists(), "{:?}", dir_names(dir));
    for name in [&manual_sqlite, &manual_pg, &safety, &manual_odd] {
        assert!(
            dir.join(name).is_file(),
            "retention deleted {name}: {:?}",
            dir_names(dir)
        );
    }
    assert_eq!(
        status_backups(dir),
        [&new, &manual_sqlite, &safety, &manual_pg, &manual_odd].map(String::as_str),
        "backups must list every backup file, newest first"
    );

    let list = app.backupd().run(&["list"]);
    list.assert_code(0);
    for (name, origin) in [
        (&new, "scheduled"),
        (&manual_sqlite, "manual"),
        (&manual_pg, "manual"),
        (&manual_odd, "manual"),
        (&safety, "safety"),
    ] {
        let line = list
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("`backupd list` does not show {name}:\n{list}"));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(origin),
            "{name} should be marked {origin}:\n{list}"
        );
    }
    for hidden in [".sha256", ".partial", "link", "folder"] {
        assert!(
            !list.stdout.contains(hidden),
            "`backupd list` shows {hidden}:\n{list}"
        );
    }
}
