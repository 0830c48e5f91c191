//! An operator backs up the app's PostgreSQL database with `backupd once`,
//! then restores the dump into a fresh database: every table comes back
//! identical, and the password never shows up anywhere.

use crate::common;

use std::fs;
use std::path::Path;

use common::*;

const APP_PASSWORD: &str = PG_APP_PASSWORD;

/// Gunzips a `.sql.gz` backup into `work/dump.sql` and returns its text.
fn dump_text(backup: &Path, work: &Path) -> String {
    let sql = work.join("dump.sql");
    gunzip_to(backup, &sql);
    fs::read_to_string(&sql).unwrap()
}

#[test]
fn pg_backup_restores_every_table_identically_and_never_shows_the_password() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let Some(_) = require_programs(&["gunzip", "sha256sum"]) else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(2));

    let (work, backup_dir) = temp_backup_dir();
    let wrappers = work.path().join("wrappers");
    let argv_log = work.path().join("argv.log");
    argv_logging_wrappers(&wrappers, &bin, &argv_log);

    let run = Backupd::for_database(cluster.app_url(), &backup_dir)
        .path_prepend(&wrappers)
        .once();
    let backup = run.backup_path();
    run.assert_not_shown(APP_PASSWORD);

    // The file: where and how it is named, sound, with its checksum.
    assert_eq!(backup.parent(), Some(backup_dir.as_path()), "\n{run}");
    let name = file_name(&backup);
    let (kind, _, _) = parse_backup_name(&name)
        .unwrap_or_else(|| panic!("`{name}` is not pg_dump-YYYYMMDDTHHMMSSZ.sql.gz"));
    assert_eq!(kind, Kind::Postgres);
    assert_sound_backup(&backup);
    assert!(
        work_files(&backup_dir).is_empty(),
        "work files left behind: {:?}",
        dir_names(&backup_dir)
    );

    // The restore: a fresh database, every table and sequence the same.
    cluster.createdb("restored", "app");
    cluster.restore_gz(&backup, "restored", "app", APP_PASSWORD);
    let original = cluster.table_checksums("appdb");
    let restored = cluster.table_checksums("restored");
    assert!(
        original.len() >= 14,
        "expected the fixture's tables, got {original:?}"
    );
    assert!(
        original.values().any(|(count, _)| *count > 0),
        "the fixture loaded no rows: {original:?}"
    );
    for (table, sum) in &original {
        assert_eq!(
            restored.get(table),
            Some(sum),
            "table {table} differs after the restore (count, md5)"
        );
    }
    assert_eq!(original, restored);
    assert_eq!(
        cluster.sequences("appdb"),
        cluster.sequences("restored"),
        "sequence positions differ after the restore"
    );

    // The status file.
    let status_path = status_path(&backup_dir);
    let status = read_status(&status_path);
    assert_success_status(&status, &backup, "postgresql");

    // The password: nowhere in the status file, nor in any child's argv.
    let status_text = fs::read_to_string(&status_path).unwrap();
    assert!(
        !status_text.contains(APP_PASSWORD),
        "the status file contains the password:\n{status_text}"
    );
    let argv = fs::read_to_string(&argv_log).unwrap_or_default();
    assert!(
        argv.lines().any(|l| l.contains("pg_dump")),
        "pg_dump was not run through the PATH wrapper; argv log:\n{argv}"
    );
    assert!(
        !argv.contains(APP_PASSWORD),
        "the password is on a child's command line:\n{argv}"
    );
    for line in argv.lines() {
        assert!(
            !line.contains("://"),
            "a child got a connection URL on its command line: {line}"
        );
    }
}

#[test]
fn pg_backup_reads_the_url_from_a_secret_file_with_quotes_and_cr() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let Some(_) = require_program("gunzip") else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    let (work, backup_dir) = temp_backup_dir();

    // A Docker secret written on Windows: quoted, CRLF line end.
    let secret_file = work.path().join("database_url");
    let url = format!(
        "{}?sslmode=disable",
        cluster.url("postgresql+psycopg2", "app", APP_PASSWORD, "appdb")
    );
    fs::write(&secret_file, format!("\"{url}\"\r\n")).unwrap();

    let run = Backupd::new()
        .path_prepend(&bin)
        .env("DATABASE_URL_FILE", &secret_file)
        .env("BACKUP_DIR", &backup_dir)
        .once();
    let backup = run.backup_path();
    run.assert_not_shown(APP_PASSWORD);
    assert!(file_name(&backup).starts_with("pg_dump-"), "\n{run}");
    let sql = dump_text(&backup, work.path());
    assert!(
        sql.contains("CREATE TABLE public.users"),
        "the dump lacks the fixture's users table"
    );
    assert!(sql.contains("-- PostgreSQL database dump complete"));
}

#[test]
fn pg_sqlalchemy_uri_takes_precedence_over_database_url() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app("CREATE TABLE marker (id int PRIMARY KEY); INSERT INTO marker VALUES (42);");
    let (work, backup_dir) = temp_backup_dir();

    // DATABASE_URL points at a database that does not exist; the
    // SQLAlchemy variable (plain postgres:// form) wins.
    let run = Backupd::new()
        .path_prepend(&bin)
        .env(
            "SQLALCHEMY_DATABASE_URI",
            cluster.url("postgres", "app", APP_PASSWORD, "appdb"),
        )
        .env(
            "DATABASE_URL",
            cluster.url("postgresql", "app", APP_PASSWORD, "no_such_db"),
        )
        .env("BACKUP_DIR", &backup_dir)
        .once();
    let backup = run.backup_path();
    run.assert_not_shown(APP_PASSWORD);
    let sql = dump_text(&backup, work.path());
    assert!(
        sql.contains("CREATE TABLE public.marker"),
        "the dump is not of appdb"
    );
}
