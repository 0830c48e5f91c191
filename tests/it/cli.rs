//! The command line an operator meets: `--help` documents every environment
//! variable, bad values are configuration errors (exit 2) naming the
//! variable, `status` and `list` show what `once` did, and two backups in
//! the same second get two files.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;

const ENV_VARS: &[&str] = &[
    "DATABASE_URL",
    "SQLALCHEMY_DATABASE_URI",
    "DATABASE_URL_FILE",
    "SQLALCHEMY_DATABASE_URI_FILE",
    "BACKUP_DIR",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_KEEP_MIN",
    "BACKUP_COMPRESSION_LEVEL",
    "BACKUP_STATUS_FILE",
];

#[test]
fn help_mentions_every_environment_variable() {
    for args in [&["--help"][..], &["once", "--help"][..]] {
        let run = Backupd::new().run(args);
        run.assert_code(0);
        for var in ENV_VARS {
            assert!(
                run.stdout.contains(var),
                "`backupd {}` does not mention {var}:\n{run}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn help_does_not_print_a_password_from_the_environment() {
    let run = Backupd::new()
        .env("DATABASE_URL", "postgresql://app:help-pw-999@db/app")
        .run(&["once", "--help"]);
    run.assert_code(0).assert_not_shown("help-pw-999");
}

#[test]
fn compression_level_out_of_range_is_a_configuration_error() {
    let app = SqliteApp::small(10);
    let run = app.backupd().env("BACKUP_COMPRESSION_LEVEL", "12").once();
    run.assert_code(2)
        .assert_stderr_mentions(&["BACKUP_COMPRESSION_LEVEL"]);
    assert_no_new_backup(&app.dir, &[]);
}

#[test]
fn status_and_list_show_the_backup() {
    let app = SqliteApp::small(100);
    let backupd = app.backupd();

    // Before any backup there is no status to show.
    std::fs::create_dir(&app.dir).unwrap();
    let none = backupd.run(&["status"]);
    none.assert_code(1);
    assert!(
        !none.stderr.trim().is_empty(),
        "status without a status file must say why:\n{none}"
    );

    let backup = backupd.once().backup_path();
    let name = file_name(&backup);

    let status = backupd.run(&["status"]);
    status.assert_code(0);
    let printed: serde_json::Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("`backupd status` did not print JSON ({e}):\n{status}"));
    assert_success_status(&printed, &backup, "sqlite");
    assert_eq!(
        printed,
        read_status(&app.status_file()),
        "`backupd status` differs from the status file"
    );

    let list = backupd.run(&["list"]);
    list.assert_code(0);
    assert!(
        list.stdout.contains(&name),
        "`backupd list` does not show {name}:\n{list}"
    );
    assert!(
        !list.stdout.contains(".sha256"),
        "`backupd list` shows sidecars:\n{list}"
    );
}

#[test]
fn two_backups_in_the_same_second_get_distinct_files() {
    let app = SqliteApp::small(100);
    let backupd = app.backupd().env("BACKUP_KEEP_MIN", "100");

    // Back to back until two land in the same second (a few tries at most).
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut same_second = None;
    for _ in 0..10 {
        let path = backupd.once().backup_path();
        let name = file_name(&path);
        let (_, stamp, suffix) =
            parse_backup_name(&name).unwrap_or_else(|| panic!("`{name}` is not a backup name"));
        if let Some(prev) = paths.last() {
            let prev_name = file_name(prev);
            let (_, prev_stamp, prev_suffix) = parse_backup_name(&prev_name).unwrap();
            if prev_stamp == stamp {
                assert_eq!(
                    suffix,
                    Some(prev_suffix.map_or(1, |n| n + 1)),
                    "second backup in one second: {prev_name} then {name}"
                );
                same_second = Some((prev_name, name.clone()));
            }
        }
        paths.push(path);
        if same_second.is_some() {
            break;
        }
    }
    if let Some((a, b)) = &same_second {
        eprintln!("same second: {a} and {b}");
    } else {
        eprintln!("no two backups landed in the same second; checked distinct names only");
    }

    let names: BTreeSet<_> = paths.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(names.len(), paths.len(), "two runs wrote the same file");
    for path in &paths {
        assert!(path.is_file(), "{} is gone", path.display());
        assert_sha256sum_c(path);
        Backupd::new()
            .run(&["verify", path.to_str().unwrap()])
            .assert_code(0);
    }
}
