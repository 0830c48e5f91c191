//! Every backup carries its manifest: `NAME.manifest.json` beside it, with
//! the row count of every table as the backup itself holds it (PostgreSQL:
//! from pg_dump's COPY blocks; SQLite: from the snapshot, in WAL mode with
//! a writer open), the file's size and SHA-256 (and the gzip inside an
//! encrypted one), and never a credential. `backupd verify` reports it and
//! refuses a manifest that disagrees with the file; retention deletes it
//! with its backup.

use crate::common;
use crate::manifest_counts::SCHEMA;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use backupd::crypto::fernet::{KeyRing, decrypt_file};
use backupd::manifest::manifest_path;
use common::*;

#[test]
fn a_postgres_backups_manifest_holds_the_servers_row_count_of_every_table() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app(SCHEMA);
    let expected = cluster.row_counts(PG_APP_DB);
    let work = temp_dir();
    let run = cluster.backupd(work.path()).once();
    run.assert_code(0);
    let backup = run.backup_path();

    let at = manifest_path(&backup);
    let text = fs::read_to_string(&at).unwrap();
    assert!(!text.contains(PG_APP_PASSWORD), "a credential in {text}");
    let mode = fs::metadata(&at).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "the manifest is world-readable: {mode:o}");
    let manifest = read_manifest(&backup);
    assert_eq!(
        manifest.tables, expected,
        "the manifest's counts are count(*)'s"
    );
    assert_eq!(manifest.backup, file_name(&backup));
    assert_eq!(manifest.database.kind, "postgresql");
    assert_eq!(manifest.database.name, PG_APP_DB);
    assert!(manifest.server_version.is_some() && manifest.pg_dump_version.is_some());
    assert_eq!(manifest.file.sha256, sha256_file(&backup));
    assert_eq!(manifest.file.size, fs::metadata(&backup).unwrap().len());
    assert_eq!(manifest.gzip, None);
    assert_eq!(
        manifest.uncompressed_bytes,
        gunzip_bytes(&backup).len() as u64
    );
    assert!(manifest.started_at <= manifest.finished_at);
    assert_eq!(
        dir_names(work.path())
            .iter()
            .filter(|n| n.ends_with(".manifest.json"))
            .count(),
        1
    );
    let status = read_status(&status_path(work.path()));
    assert_eq!(
        status["backups"],
        serde_json::json!([file_name(&backup)]),
        "a manifest is not a backup"
    );

    // verify reads the file's own stream and agrees with the manifest.
    let verified = cluster
        .backupd(work.path())
        .run(&["verify", backup.to_str().unwrap()]);
    verified.assert_code(0);
    assert!(
        verified
            .stdout
            .contains(&format!("row counts of {} tables match", expected.len())),
        "{verified}"
    );
    edit_manifest_count(&backup, "public.notes", 3);
    let refused = cluster
        .backupd(work.path())
        .run(&["verify", backup.to_str().unwrap()]);
    refused.assert_code(1);
    refused.assert_stderr_mentions(&["public.notes", "504 rows", "the manifest says 3"]);
}

#[test]
fn an_encrypted_backups_manifest_is_found_by_the_copy_the_app_decrypted() {
    let app = SqliteApp::small(25);
    let key = backupd::crypto::fernet::Key::generate().to_base64();
    let run = app.backupd().env("BACKUP_ENCRYPTION_KEY", &key).once();
    run.assert_code(0);
    let backup = run.backup_path();
    let manifest = read_manifest(&backup);
    assert_eq!(manifest.file.sha256, sha256_file(&backup));

    // The app's restore page decrypts NAME.enc into its own folder as NAME.
    let elsewhere = temp_dir();
    let name = file_name(&backup);
    let copy = elsewhere.path().join(name.strip_suffix(".enc").unwrap());
    let mut gzip = Vec::new();
    decrypt_file(&KeyRing::parse(&key).unwrap(), &backup, &mut gzip).unwrap();
    fs::write(&copy, &gzip).unwrap();
    let inner = manifest.gzip.clone().expect("the gzip inside is described");
    assert_eq!(inner.sha256, sha256_file(&copy));
    assert_eq!(inner.size, gzip.len() as u64);

    let verified = app.backupd().run(&["verify", copy.to_str().unwrap()]);
    verified.assert_code(0);
    assert!(
        verified
            .stdout
            .contains(&format!("match {}", manifest_path(&backup).display())),
        "found in BACKUP_DIR under NAME.enc.manifest.json: {verified}"
    );
}

#[test]
fn a_sqlite_backups_manifest_counts_the_committed_rows_with_a_writer_open() {
    let app = SqliteApp::new(1);
    let writer = rusqlite::Connection::open(&app.db).unwrap();
    writer.busy_timeout(Duration::from_secs(30)).unwrap();
    let _: i64 = writer
        .query_row("PRAGMA wal_autocheckpoint = 0", [], |r| r.get(0))
        .unwrap();
    writer
        .execute_batch("CREATE TABLE \"odd \"\"name\"\"\" (v); INSERT INTO \"odd \"\"name\"\"\" VALUES (1), (2);")
        .unwrap();
    writer
        .execute_batch("BEGIN; INSERT INTO \"odd \"\"name\"\"\" VALUES (3);")
        .unwrap();
    let committed = sqlite_row_counts(&writer);

    let run = app.backupd().once();
    run.assert_code(0);
    writer.execute_batch("COMMIT").unwrap();
    let manifest = read_manifest(&run.backup_path());
    let mut expected = committed;
    // The open transaction's own row is not committed: the snapshot lacks it.
    *expected.get_mut("odd \"name\"").unwrap() -= 1;
    assert_eq!(manifest.tables, expected);
    assert_eq!(manifest.database.kind, "sqlite");
    assert_eq!(manifest.database.name, file_name(&app.db));
    assert_eq!(manifest.pg_dump_version, None);
}

#[test]
fn retention_deletes_a_manifest_with_its_backup_and_never_lists_it() {
    let app = SqliteApp::small(5);
    let first = app.backupd().once();
    first.assert_code(0);
    // An old backup of ours, as backupd left it in 2020.
    let old = app.dir.join("sqlite-20200101T000000Z.db.gz");
    fs::copy(first.backup_path(), &old).unwrap();
    write_sidecar(&old);
    let old_manifest = write_manifest_claiming(&old, "sqlite", &[("users", 5)]);

    let run = app
        .backupd()
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_KEEP_MIN", "1")
        .once();
    run.assert_code(0);
    assert!(!old.exists(), "retention deletes the 2020 backup");
    assert!(
        !old_manifest.exists() && !sidecar_path(&old).exists(),
        "and its manifest and checksum with it: {:?}",
        dir_names(&app.dir)
    );
    assert!(manifest_path(&run.backup_path()).exists());
    let list = app.backupd().run(&["list"]);
    list.assert_code(0);
    assert!(!list.stdout.contains(".manifest.json"), "{list}");
}
