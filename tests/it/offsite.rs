//! Offsite copies, as the operator sees them: with `AWS_S3_BUCKET` set,
//! every backup and its `.sha256` land in the bucket (large ones in checked
//! parts), `list --remote` shows them, remote retention deletes only our
//! old names, an unreachable server never fails the local backup and the
//! next run catches up, a shutdown mid-upload leaves no orphan parts, and
//! `restore --from-s3 latest` / `--file s3://…` bring a backup back.
//! The server is a real S3-protocol implementation (s3s-fs, signatures
//! checked) on loopback; see tests/common/s3.rs.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::s3::S3Server;
use common::{
    Backupd, SqliteApp, file_name, metric_value, parse_metrics, poll, read_status, sqlite_small,
    sqlite_url, temp_dir,
};

const PREFIX: &str = "prod/db";

/// backupd for `app`, uploading to `server` under [`PREFIX`].
fn uploading(app: &SqliteApp, server: &S3Server) -> Backupd {
    let mut b = app.backupd().env("AWS_S3_PREFIX", PREFIX);
    for (key, value) in server.env() {
        b = b.env(&key, value);
    }
    b
}

fn key(name: &str) -> String {
    format!("{PREFIX}/{name}")
}

fn object_names(server: &S3Server) -> Vec<String> {
    server.objects().into_iter().map(|(k, _)| k).collect()
}

/// A SQLite database of `mib` MiB of random (incompressible) blobs, so its
/// backup is about as large.
fn incompressible_app(mib: u32) -> SqliteApp {
    let app = SqliteApp::small(10);
    let conn = rusqlite::Connection::open(&app.db).unwrap();
    conn.execute_batch("CREATE TABLE blobs (b BLOB NOT NULL);")
        .unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO blobs (b) SELECT randomblob(1048576) FROM n",
        [mib],
    )
    .unwrap();
    app
}

fn blob_digest(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (count, bytes): (i64, i64) = conn
        .query_row("SELECT count(*), sum(length(b)) FROM blobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let first: Vec<u8> = conn
        .query_row("SELECT b FROM blobs ORDER BY rowid LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    format!(
        "{count} blobs, {bytes} bytes, first {}",
        hex::encode(&first[..32])
    )
}

#[test]
fn every_backup_and_its_checksum_go_to_the_bucket_and_list_remote_shows_them() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(30);
    let run = uploading(&app, &server).once();
    let backup = run.backup_path();
    run.assert_not_shown(server.secret_key());
    let name = file_name(&backup);

    let objects = server.objects();
    let stored = objects
        .iter()
        .find(|(k, _)| *k == key(&name))
        .unwrap_or_else(|| panic!("{name} is not in the bucket: {objects:?}"));
    assert_eq!(stored.1, fs::metadata(&backup).unwrap().len());
    assert_eq!(
        fs::read(server.object_path(&key(&format!("{name}.sha256")))).unwrap(),
        fs::read(common::sidecar_path(&backup)).unwrap(),
        "the sidecar in the bucket is the local one"
    );
    assert_eq!(
        server.trailer_requests(),
        0,
        "aws-chunked trailers were sent"
    );

    let status = read_status(&app.status_file());
    assert!(status["last_upload"].is_string(), "{status}");
    assert_eq!(status["last_upload_file"], name.as_str());
    assert!(status["last_upload_error"].is_null(), "{status}");
    let status_text = fs::read_to_string(app.status_file()).unwrap();
    assert!(!status_text.contains(server.secret_key()));

    let list = uploading(&app, &server).run(&["list", "--remote"]);
    list.assert_code(0);
    assert!(list.stdout.contains(&name), "{list}");
    assert!(list.stdout.contains("stored (.sha256)"), "{list}");
}

#[test]
fn a_large_backup_goes_up_in_checked_parts_and_restore_from_s3_latest_brings_it_back() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = incompressible_app(44);
    let source = blob_digest(&app.db);
    let backup = uploading(&app, &server).once().backup_path();
    let size = fs::metadata(&backup).unwrap().len();
    assert!(size > 40 << 20, "the backup is only {size} bytes");
    assert!(
        server.parts_received() >= 5,
        "a {size}-byte file went up in {} parts",
        server.parts_received()
    );
    assert_eq!(
        server.parts_with_checksum(),
        server.parts_received(),
        "every part carries its SHA-256"
    );
    assert_eq!(server.trailer_requests(), 0);
    assert!(server.incomplete_uploads().is_empty());

    // Disaster: the machine is new, the folder empty, the database gone.
    let work = temp_dir();
    let live = work.path().join("app/app.db");
    fs::create_dir_all(live.parent().unwrap()).unwrap();
    sqlite_small(&live, 1);
    let incoming = work.path().join("restore/incoming");
    let mut restore = Backupd::for_database(sqlite_url(&live), &work.path().join("backups"))
        .env("AWS_S3_PREFIX", PREFIX)
        .env("RESTORE_WATCH_DIR", &incoming)
        .env("RESTORE_STATE_FILE", work.path().join("state.json"))
        .env("RESTORE_SQLITE_PATH", &live)
        .env("RESTORE_SAFETY_BACKUP", "false");
    for (k, v) in server.env() {
        restore = restore.env(&k, v);
    }
    let plan = restore.run(&["restore", "--from-s3", "latest", "--dry-run"]);
    plan.assert_code(0);
    assert!(plan.stdout.contains(&file_name(&backup)), "{plan}");

    let run = restore.run(&["restore", "--from-s3", "latest"]);
    run.assert_code(0).assert_not_shown(server.secret_key());
    assert_eq!(blob_digest(&live), source);
    let downloads = work.path().join("restore/downloads");
    assert_eq!(
        fs::read_dir(&downloads).map(|d| d.count()).unwrap_or(0),
        0,
        "the downloaded copy is removed after the restore"
    );
}

#[test]
fn an_unreachable_server_never_fails_the_backup_and_the_next_run_uploads_what_is_missing() {
    let Some(mut server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(10);
    server.stop();
    let first = uploading(&app, &server).once();
    let first_backup = first.backup_path();
    first.assert_stderr_mentions(&["upload"]);
    let status = read_status(&app.status_file());
    let error = status["last_upload_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_upload_error after a failed upload: {status}\n{first}"));
    assert!(error.contains("s3://"), "{error}");
    assert!(
        status["last_error"].is_null(),
        "the backup itself succeeded"
    );

    server.restart();
    let second = uploading(&app, &server).once().backup_path();
    let names = object_names(&server);
    for backup in [&first_backup, &second] {
        assert!(
            names.contains(&key(&file_name(backup))),
            "{} missing from {names:?}",
            file_name(backup)
        );
    }
    let status = read_status(&app.status_file());
    assert!(status["last_upload_error"].is_null(), "{status}");
}

#[test]
fn throttling_is_retried_and_counted_in_the_metrics() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(10);
    server.fail_next_uploads(2);
    let mut daemon = uploading(&app, &server)
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .daemon();
    daemon.wait_until_serving();
    let uploaded = poll(Duration::from_millis(200), Duration::from_secs(60), || {
        let metrics = parse_metrics(&common::http_get(daemon.port, "/metrics").body);
        metric_value(&metrics, "backupd_uploads_total", &[("result", "success")])
            .filter(|v| *v >= 1.0)
    });
    assert!(uploaded.is_some(), "no upload counted:\n{}", daemon.log());
    assert_eq!(
        server.failures_sent(),
        2,
        "the SlowDown answers were not retried"
    );
    let metrics = parse_metrics(&common::http_get(daemon.port, "/metrics").body);
    assert_eq!(
        metric_value(&metrics, "backupd_uploads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert!(metric_value(&metrics, "backupd_upload_duration_seconds", &[]).is_some());
    daemon.stop_cleanly();
}

#[test]
fn remote_retention_deletes_only_our_old_names_and_keeps_the_newest() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(10);
    let old = chrono::Utc::now() - chrono::Duration::days(10);
    let old_names: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "sqlite-{}.db.gz",
                (old - chrono::Duration::hours(i)).format("%Y%m%dT%H%M%SZ")
            )
        })
        .collect();
    let foreign = [
        "notes.txt",
        "sqlite-malformed.db.gz",
        ".encryption_key",
        "archive/sqlite-20200101T000000Z.db.gz",
    ];
    for name in old_names.iter().map(String::as_str).chain(foreign) {
        let path = server.object_path(&key(name));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"planted").unwrap();
    }
    for name in &old_names {
        fs::write(server.object_path(&key(&format!("{name}.sha256"))), b"x").unwrap();
    }

    let backup = uploading(&app, &server)
        .env("BACKUP_S3_RETENTION_DAYS", "2")
        .env("BACKUP_KEEP_MIN", "2")
        .once()
        .backup_path();
    let names = object_names(&server);
    // Kept: the new backup and the newest old one (BACKUP_KEEP_MIN=2).
    assert!(names.contains(&key(&file_name(&backup))), "{names:?}");
    assert!(names.contains(&key(&old_names[0])), "{names:?}");
    assert!(names.contains(&key(&format!("{}.sha256", old_names[0]))));
    for gone in &old_names[1..] {
        assert!(
            !names.contains(&key(gone)),
            "{gone} should be deleted: {names:?}"
        );
        assert!(!names.contains(&key(&format!("{gone}.sha256"))));
    }
    for name in foreign {
        assert!(names.contains(&key(name)), "{name} was touched: {names:?}");
    }
}

#[test]
fn sigterm_during_a_multipart_upload_aborts_it_and_leaves_no_parts() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = incompressible_app(30);
    server.set_part_delay(Duration::from_secs(3));
    let mut daemon = uploading(&app, &server)
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .daemon();
    assert!(
        server.wait_for_parts(1, Duration::from_secs(120)),
        "no part arrived:\n{}",
        daemon.log()
    );
    daemon.signal("TERM");
    let exit = daemon
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the daemon did not stop:\n{}", daemon.log()));
    exit.assert_code(0);
    server.set_part_delay(Duration::ZERO);
    let left = poll(Duration::from_millis(100), Duration::from_secs(10), || {
        server.incomplete_uploads().is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "incomplete uploads remain: {:?}\n{}",
        server.incomplete_uploads(),
        exit
    );
    assert!(server.part_files().is_empty(), "{:?}", server.part_files());
    let backups = common::backup_files(&app.dir);
    assert_eq!(backups.len(), 1, "the local backup stays: {backups:?}");
    let status = read_status(&app.status_file());
    assert!(status["last_error"].is_null(), "{status}");
    assert!(status["last_upload_error"].is_string(), "{status}");
}

#[test]
fn an_encrypted_backup_restores_from_an_s3_url() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(25);
    let key_text = {
        let out = Backupd::new().run(&["keygen"]);
        out.assert_code(0);
        out.last_line().trim().to_string()
    };
    let backup = uploading(&app, &server)
        .env("BACKUP_ENCRYPTION_KEY", &key_text)
        .once()
        .backup_path();
    let name = file_name(&backup);
    assert!(name.ends_with(".db.gz.enc"));
    assert!(object_names(&server).contains(&key(&name)));

    let work = temp_dir();
    let live: PathBuf = work.path().join("app.db");
    sqlite_small(&live, 3);
    let mut restore = Backupd::for_database(sqlite_url(&live), &work.path().join("backups"))
        .env("BACKUP_ENCRYPTION_KEY", &key_text)
        .env("RESTORE_WATCH_DIR", work.path().join("restore/incoming"))
        .env("RESTORE_STATE_FILE", work.path().join("state.json"))
        .env("RESTORE_SQLITE_PATH", &live);
    for (k, v) in server.env() {
        if k != "AWS_S3_BUCKET" {
            restore = restore.env(&k, v);
        }
    }
    let url = format!("s3://{}/{}", server.bucket(), key(&name));
    restore
        .run(&["restore", "--file", &url])
        .assert_code(0)
        .assert_not_shown(&key_text);
    let rows: i64 = rusqlite::Connection::open(&live)
        .unwrap()
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 25);
}
