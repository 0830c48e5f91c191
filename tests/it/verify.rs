//! `backupd verify FILE` tells a sound backup from a damaged one without
//! restoring it: exit 0 when sound, 1 with the reason on stderr.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn verify(file: &Path) -> RunResult {
    Backupd::new().run(&["verify", file.to_str().unwrap()])
}

fn assert_rejected(file: &Path, what: &str) -> RunResult {
    let run = verify(file);
    eprintln!("verify {what}:\n{run}");
    assert_eq!(run.code, 1, "verify must reject {what}:\n{run}");
    assert!(
        !run.stderr.trim().is_empty(),
        "verify rejected {what} without saying why"
    );
    run
}

fn assert_stderr_mentions_any(run: &RunResult, words: &[&str]) {
    let stderr = run.stderr.to_lowercase();
    assert!(
        words.iter().any(|w| stderr.contains(&w.to_lowercase())),
        "stderr mentions none of {words:?}:\n{run}"
    );
}

/// Copies `src` to `dir/name` (no sidecar) with `edit` applied to the bytes.
fn damaged_copy(src: &Path, dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = fs::read(src).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// The same damage cases for a real backup of either kind.
fn check_damage_is_detected(backup: &Path, work: &Path, kind: Kind) {
    let name = file_name(backup);
    let name = name.as_str();
    let ok = verify(backup);
    assert_eq!(ok.code, 0, "a fresh backup must verify:\n{ok}");

    let damaged = work.join("damaged");
    fs::create_dir_all(&damaged).unwrap();

    // Truncated (as by a full disk or an interrupted copy), no sidecar.
    let truncated = damaged_copy(
        backup,
        &damaged,
        &Kind::name_at(kind, "2026-01-01T00:00:00Z".parse().unwrap()),
        |b| b.truncate(b.len() / 2),
    );
    assert_rejected(&truncated, "a truncated backup");

    // One flipped byte in the middle, no sidecar: the gzip CRC must catch it.
    let flipped_name = Kind::name_at(kind, "2026-01-02T00:00:00Z".parse().unwrap());
    let flipped = damaged_copy(backup, &damaged, &flipped_name, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
    });
    assert_rejected(&flipped, "a backup with a flipped byte");

    // Intact file, but its sidecar records another checksum.
    let mismatch_dir = work.join("mismatch");
    fs::create_dir_all(&mismatch_dir).unwrap();
    let copy = mismatch_dir.join(name);
    fs::copy(backup, &copy).unwrap();
    fs::write(sidecar_path(&copy), format!("{}  {name}\n", "0".repeat(64))).unwrap();
    let run = assert_rejected(&copy, "a backup whose .sha256 does not match");
    assert_stderr_mentions_any(&run, &["sha256", "checksum"]);

    // With the right sidecar the copy is fine again.
    write_sidecar(&copy);
    verify(&copy).assert_code(0);
}

#[test]
fn sqlite_backup_verifies_and_damage_is_detected() {
    let app = SqliteApp::fixture(1, false);
    let run = app.backupd().once();
    let backup = run.backup_path();
    check_damage_is_detected(&backup, app.work.path(), Kind::Sqlite);

    // A sound gzip whose content is not a SQLite database.
    let not_db = app.work.path().join("sqlite-20260103T000000Z.db.gz");
    write_gzip(&not_db, &b"this is not a database\n".repeat(500));
    assert_rejected(&not_db, "a .db.gz that holds no SQLite database");
}

#[test]
fn pg_backup_verifies_and_damage_is_detected() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    let (work, backup_dir) = temp_backup_dir();
    let run = cluster.backupd(&backup_dir).once();
    let backup = run.backup_path();
    check_damage_is_detected(&backup, work.path(), Kind::Postgres);
}

const DUMP_HEAD: &str = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
CREATE TABLE public.t (id integer);\n\nCOPY public.t (id) FROM stdin;\n1\n2\n\\.\n\n";

#[test]
fn sql_dump_without_the_completion_trailer_is_rejected() {
    let work = temp_dir();
    let file = work.path().join("pg_dump-20260101T000000Z.sql.gz");
    write_gzip(&file, DUMP_HEAD.as_bytes());
    let run = assert_rejected(&file, "a dump without pg_dump's completion trailer");
    assert_stderr_mentions_any(&run, &["trailer", "dump complete"]);
}

#[test]
fn sql_dump_with_the_trailer_and_unrestrict_line_is_accepted() {
    let work = temp_dir();
    // pg_dump >= 17.6 / 16.10 / 15.14 ends plain dumps with \unrestrict KEY.
    let file = work.path().join("pg_dump-20260101T000000Z.sql.gz");
    let dump = format!(
        "\\restrict AbCdEf123\n\n{DUMP_HEAD}--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict AbCdEf123\n\n"
    );
    write_gzip(&file, dump.as_bytes());
    write_sidecar(&file);
    verify(&file).assert_code(0);

    // The classic ending, without \unrestrict, is sound too.
    let classic = work.path().join("pg_dump-20260102T000000Z.sql.gz");
    let dump = format!("{DUMP_HEAD}--\n-- PostgreSQL database dump complete\n--\n\n");
    write_gzip(&classic, dump.as_bytes());
    verify(&classic).assert_code(0);
}

#[test]
fn a_custom_format_dump_verifies_as_the_restore_check_accepts_it() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let Some(()) = require_programs(&["pg_restore"]) else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    let out = cluster
        .client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD)
        .args(["--format=custom", "--no-owner", "--no-privileges"])
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump --format=custom failed");
    let work = temp_dir();
    let dump = work.path().join("app-20260101T000000Z.dump");
    fs::write(&dump, &out.stdout).unwrap();
    let ok = verify(&dump);
    ok.assert_code(0);
    assert!(ok.stdout.contains("PostgreSQL custom-format dump"), "{ok}");
    let gzipped = work.path().join("app-20260101T000000Z.dump.gz");
    write_gzip(&gzipped, &out.stdout);
    verify(&gzipped).assert_code(0);

    let truncated = damaged_copy(&dump, work.path(), "app-20260102T000000Z.dump", |b| {
        b.truncate(b.len() / 2)
    });
    let run = assert_rejected(&truncated, "a truncated custom-format dump");
    assert_stderr_mentions_any(&run, &["pg_restore"]);
    let not_a_dump = work.path().join("app-20260103T000000Z.dump");
    fs::write(&not_a_dump, b"this is not a pg_dump archive\n").unwrap();
    assert_rejected(&not_a_dump, "a .dump that is no archive");
}
