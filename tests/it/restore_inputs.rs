//! A restore input is untrusted: whoever can write the watch folder, BACKUP_DIR
//! or the bucket may swap or rewrite a file after backupd checked it, plant
//! links and FIFOs, or plant names stamped in the future. The operator's
//! story: what was checked is what is loaded (or nothing is), decrypted
//! plaintext stays in a private folder, `latest` means a backup backupd
//! made, and RESTORE_REQUIRE_ENCRYPTED keeps plain files out.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backupd::crypto::fernet::{Key, KeyRing, encrypt_stream};
use backupd::crypto::keys::Keys;
use backupd::db::{Database, PgTarget};
use backupd::restore::check::check;
use backupd::restore::input::{CHANGED_AFTER_CHECK, PrivateDir};
use backupd::restore::kind::classify;
use backupd::restore::postgres::{Options, Strategy, restore};
use tokio_util::sync::CancellationToken;

use common::s3::S3Server;
use common::*;

const STAMP: &str = "20261201T030405Z";

struct Pg {
    cluster: PgCluster,
    target: PgTarget,
    work: tempfile::TempDir,
}

fn start_pg() -> Option<Pg> {
    let bin = require_postgres()?;
    require_programs(&["psql", "pg_restore", "pg_dump"])?;
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    let Database::Postgres(target) = Database::parse(&cluster.app_url(), "DATABASE_URL").unwrap()
    else {
        panic!("the app URL is not PostgreSQL");
    };
    Some(Pg {
        cluster,
        target,
        work: temp_dir(),
    })
}

impl Pg {
    fn dump(&self, format: &str) -> Vec<u8> {
        let mut cmd = self
            .cluster
            .client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
        cmd.arg(format!("--format={format}"))
            .args(["--no-owner", "--no-privileges"]);
        let out = cmd.output().expect("run pg_dump");
        assert!(out.status.success(), "pg_dump failed");
        out.stdout
    }

    /// The same dump, plus a table nobody checked.
    fn planted_dump(&self) -> Vec<u8> {
        self.cluster
            .psql_app("CREATE TABLE planted (x int); INSERT INTO planted VALUES (1)");
        let dump = self.dump("plain");
        self.cluster.psql_app("DROP TABLE planted");
        dump
    }

    fn has_planted(&self) -> bool {
        self.cluster.psql(
            PG_APP_DB,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'planted'",
        ) == "1"
    }

    fn database(&self) -> Database {
        Database::Postgres(self.target.clone())
    }

    fn private(&self) -> PrivateDir {
        PrivateDir::beside_state_file(&self.work.path().join("state/restore-state.json")).unwrap()
    }

    fn keys(&self, key: Option<&str>) -> Keys {
        let ring = key.map(|k| KeyRing::parse(k).unwrap());
        Keys::new(ring, &self.work.path().join("backups")).unwrap()
    }

    fn databases(&self) -> String {
        self.cluster.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate",
        )
    }
}

fn options() -> Options {
    Options {
        strategy: Strategy::Staging,
        keep_previous: 1,
        stamp: STAMP.to_string(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn a_file_renamed_over_the_checked_one_after_the_check_is_never_loaded() {
    let Some(pg) = start_pg() else { return };
    let checked_dump = pg.dump("plain");
    let planted = pg.planted_dump();
    let path = pg.work.path().join("incoming/good.sql.gz");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, gzip(&checked_dump)).unwrap();

    let kind = classify("good.sql.gz").unwrap();
    let keys = pg.keys(None);
    let checked = check(&path, kind, &pg.database(), &keys, STAMP, &pg.private())
        .await
        .expect("the good dump passes its check");
    // The dropper renames another (equally well-formed) dump over the path.
    let swap = pg.work.path().join("incoming/.swap");
    fs::write(&swap, gzip(&planted)).unwrap();
    fs::rename(&swap, &path).unwrap();

    let report = restore(
        &pg.target,
        &checked.input,
        checked.kind,
        &options(),
        &CancellationToken::new(),
    )
    .await
    .expect("the checked content restores");
    assert!(report.previous.is_some());
    assert!(
        !pg.has_planted(),
        "the file renamed in after the check was loaded"
    );
}

#[tokio::test]
async fn a_file_rewritten_in_place_after_the_check_never_reaches_the_database() {
    let Some(pg) = start_pg() else { return };
    let plain = pg.dump("plain");
    let custom = pg.dump("custom");
    let planted = pg.planted_dump();
    let planted_custom = {
        pg.cluster.psql_app("CREATE TABLE planted (x int)");
        let d = pg.dump("custom");
        pg.cluster.psql_app("DROP TABLE planted");
        d
    };
    // pg_restore commits at the end of the archive and ignores what
    // follows it, so a hash compared at the end of the input would come
    // too late: the padding keeps the last chunk of the planted archive
    // away from the end of the file.
    let mut padded_custom = planted_custom.clone();
    padded_custom.extend(vec![0u8; 600 * 1024]);
    let keys = pg.keys(None);
    let before = pg.cluster.table_checksums(PG_APP_DB);
    let mut round = 0;
    for strategy in [Strategy::Staging, Strategy::Inplace] {
        for (name, good, evil) in [
            ("rewritten.sql.gz", gzip(&plain), gzip(&planted)),
            ("rewritten.sql", plain.clone(), planted.clone()),
            ("rewritten.dump", custom.clone(), planted_custom.clone()),
            ("padded.dump", custom.clone(), padded_custom.clone()),
        ] {
            round += 1;
            let path = pg.work.path().join(name);
            fs::write(&path, &good).unwrap();
            let kind = classify(name).unwrap();
            let checked = check(&path, kind, &pg.database(), &keys, STAMP, &pg.private())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // A dropper that kept the file open rewrites the same inode
            // between the check and the load.
            let mut same_inode = fs::OpenOptions::new().write(true).open(&path).unwrap();
            same_inode.set_len(0).unwrap();
            same_inode.write_all(&evil).unwrap();
            drop(same_inode);

            let opts = Options {
                strategy,
                stamp: format!("20261201T0304{round:02}Z"),
                ..options()
            };
            restore(
                &pg.target,
                &checked.input,
                checked.kind,
                &opts,
                &CancellationToken::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("{strategy} {name}: the checked content must restore: {e}"));
            assert!(
                !pg.has_planted(),
                "{strategy} {name}: rewritten bytes were committed"
            );
            assert_eq!(
                pg.cluster.table_checksums(PG_APP_DB),
                before,
                "{strategy} {name}: the checked dump is what was loaded"
            );
            let databases = pg.databases();
            assert!(
                !databases
                    .split(',')
                    .any(|d| d.contains("_restore_") && !d.contains("_pre_restore_")),
                "{strategy} {name}: a staging database stayed: {databases}"
            );
        }
    }
}

#[test]
fn a_load_refuses_bytes_that_differ_from_the_checked_ones() {
    // The second line behind the private copy: an input whose bytes are
    // not the checked ones is noticed by the load's own hash.
    let dir = temp_dir();
    let path = dir.path().join("x.sql");
    fs::write(&path, b"SELECT 1;\n").unwrap();
    let input = backupd::restore::input::Input::open(&path).unwrap();
    fs::write(&path, b"SELECT 2;\n").unwrap();
    let err = input.confirm(input.reader()).unwrap_err().to_string();
    assert!(err.contains(CHANGED_AFTER_CHECK), "{err}");
}

#[tokio::test]
async fn a_decrypted_enc_stays_in_the_private_folder_and_never_in_the_watch_folder() {
    let Some(pg) = start_pg() else { return };
    let key = Key::generate();
    let key_text = key.to_base64();
    let incoming = pg.work.path().join("incoming");
    fs::create_dir_all(&incoming).unwrap();
    let path = incoming.join("enc.sql.gz.enc");
    let gz = gzip(&pg.dump("plain"));
    let mut token = Vec::new();
    encrypt_stream(&key, &gz[..], &mut token).unwrap();
    fs::write(&path, &token).unwrap();

    let private = pg.private();
    let keys = pg.keys(Some(&key_text));
    let kind = classify("enc.sql.gz.enc").unwrap();
    let checked = check(&path, kind, &pg.database(), &keys, STAMP, &private)
        .await
        .expect("the token authenticates");
    // While the plaintext exists: nothing new in the watch folder, and the
    // private folder is 0700 and holds no name anyone could open.
    assert_eq!(dir_names(&incoming), vec!["enc.sql.gz.enc".to_string()]);
    let mode = fs::metadata(&private.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the private folder is {mode:o}");
    assert!(
        dir_names(&private.path).is_empty(),
        "{:?}",
        dir_names(&private.path)
    );
    assert_eq!(
        checked.sha256,
        sha256_file(&path),
        "history names the token"
    );

    // The token renamed away and replaced after the check changes nothing.
    fs::rename(&path, incoming.join("moved.enc")).unwrap();
    fs::write(&path, b"garbage").unwrap();
    restore(
        &pg.target,
        &checked.input,
        checked.kind,
        &options(),
        &CancellationToken::new(),
    )
    .await
    .expect("the authenticated plaintext restores");
}

/// A SQLite stack for one-shot restores.
struct SqliteStack {
    work: tempfile::TempDir,
    db: PathBuf,
}

impl SqliteStack {
    fn new(rows: u32) -> SqliteStack {
        let work = temp_dir();
        let db = work.path().join("app/app.db");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        sqlite_small(&db, rows);
        fs::create_dir_all(work.path().join("restore/incoming")).unwrap();
        SqliteStack { work, db }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn backupd(&self) -> Backupd {
        Backupd::for_database(sqlite_url(&self.db), &self.path("backups"))
            .env("RESTORE_WATCH_DIR", self.path("restore/incoming"))
            .env(
                "RESTORE_STATE_FILE",
                self.path("restore/state/restore-state.json"),
            )
            .env("RESTORE_SQLITE_PATH", &self.db)
            .env("RESTORE_SAFETY_BACKUP", "false")
    }

    fn rows(&self) -> i64 {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap()
    }

    /// A backup of a fresh database of `rows` rows, made by backupd
    /// (encrypted with `key` when given).
    fn backup_of(&self, rows: u32, key: Option<&str>) -> PathBuf {
        let source = self.path(&format!("made/source-{rows}.db"));
        fs::create_dir_all(source.parent().unwrap()).unwrap();
        sqlite_small(&source, rows);
        let mut b = Backupd::for_database(sqlite_url(&source), &self.path("made"));
        if let Some(key) = key {
            b = b.env("BACKUP_ENCRYPTION_KEY", key);
        }
        b.once().backup_path()
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_symlink_or_fifo_given_to_restore_is_refused_without_blocking() {
    let stack = SqliteStack::new(5);
    let real = stack.backup_of(9, None);
    let link = stack.path("restore/link.db.gz");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let fifo = stack.path("restore/pipe.db.gz");
    let c = std::ffi::CString::new(path_str(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    for (path, word) in [(&link, "symlink"), (&fifo, "fifo")] {
        // Bounded: a FIFO opened for reading without O_NONBLOCK would hang.
        let run = stack.backupd().run_bounded(
            &["restore", "--file", path_str(path)],
            Duration::from_secs(60),
        );
        run.assert_code(1).assert_stderr_mentions(&[word]);
        assert_eq!(stack.rows(), 5, "{word}: the live database changed");
    }
}

#[test]
fn restore_require_encrypted_refuses_a_plain_file_and_accepts_an_enc() {
    let stack = SqliteStack::new(5);
    let key = stack
        .backupd()
        .run(&["keygen"])
        .assert_code(0)
        .stdout
        .trim()
        .to_string();
    let plain = stack.backup_of(11, None);
    let token = stack.backup_of(22, Some(&key));
    assert!(file_name(&token).ends_with(".enc"));

    let strict = stack
        .backupd()
        .env("RESTORE_REQUIRE_ENCRYPTED", "true")
        .env("BACKUP_ENCRYPTION_KEY", &key);
    strict
        .run(&["restore", "--file", path_str(&plain)])
        .assert_code(1)
        .assert_stderr_mentions(&["RESTORE_REQUIRE_ENCRYPTED"]);
    assert_eq!(stack.rows(), 5);
    strict
        .run(&["restore", "--file", path_str(&token)])
        .assert_code(0);
    assert_eq!(stack.rows(), 22);
    // The default still restores plain files (the app's restore page).
    stack
        .backupd()
        .run(&["restore", "--file", path_str(&plain)])
        .assert_code(0);
    assert_eq!(stack.rows(), 11);
}

fn stamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

#[test]
fn restore_from_s3_latest_never_picks_a_future_stamped_or_sidecar_less_object() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let stack = SqliteStack::new(5);
    let good = stack.backup_of(33, None);
    let now = chrono::Utc::now();
    let good_name = format!("sqlite-{}.db.gz", stamp(now - chrono::Duration::hours(2)));
    let prefix = "prod";
    let put = |name: &str, from: &Path, sidecar: bool| {
        let path = server.object_path(&format!("{prefix}/{name}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::copy(from, &path).unwrap();
        if sidecar {
            fs::write(
                server.object_path(&format!("{prefix}/{name}.sha256")),
                format!("{}  {name}\n", sha256_file(from)),
            )
            .unwrap();
        }
    };
    let other = stack.backup_of(44, None);
    put(&good_name, &good, true);
    // Planted: stamped in the future, with a sidecar; and newer than the
    // good one but without its `.sha256`.
    put("sqlite-29991231T000000Z.db.gz", &other, true);
    let no_sidecar = format!(
        "sqlite-{}.db.gz",
        stamp(now - chrono::Duration::minutes(10))
    );
    put(&no_sidecar, &other, false);

    let mut restore = stack.backupd().env("AWS_S3_PREFIX", prefix);
    for (k, v) in server.env() {
        restore = restore.env(&k, v);
    }
    let plan = restore.run(&["restore", "--from-s3", "latest", "--dry-run"]);
    plan.assert_code(0);
    assert!(plan.stdout.contains(&good_name), "{plan}");
    restore
        .run(&["restore", "--from-s3", "latest"])
        .assert_code(0);
    assert_eq!(stack.rows(), 33);
    // Named explicitly, an object without its sidecar is refused.
    restore
        .run(&["restore", "--from-s3", &no_sidecar])
        .assert_code(1)
        .assert_stderr_mentions(&[".sha256"]);
    assert_eq!(stack.rows(), 33);
}

#[test]
fn a_future_stamped_file_in_backup_dir_is_not_uploaded_listed_or_kept() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(10);
    let now = chrono::Utc::now();
    // A real older backup, with its sidecar; retention would keep it as
    // one of the newest two unless the planted name counted.
    let old_name = format!("sqlite-{}.db.gz", stamp(now - chrono::Duration::days(5)));
    let made = app.backupd().once().backup_path();
    let old = app.dir.join(&old_name);
    fs::rename(&made, &old).unwrap();
    fs::remove_file(sidecar_path(&made)).unwrap();
    write_sidecar(&old);
    let future = app.dir.join("sqlite-29991231T000000Z.db.gz");
    fs::copy(&old, &future).unwrap();
    write_sidecar(&future);
    // Planted without a sidecar: looks recent, never uploaded.
    let bare_name = format!("sqlite-{}.db.gz", stamp(now - chrono::Duration::hours(1)));
    fs::copy(&old, app.dir.join(&bare_name)).unwrap();

    let mut b = app
        .backupd()
        .env("AWS_S3_PREFIX", "p")
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_KEEP_MIN", "3");
    for (k, v) in server.env() {
        b = b.env(&k, v);
    }
    let new = b.once().assert_code(0).backup_path();
    let objects: Vec<String> = server.objects().into_iter().map(|(k, _)| k).collect();
    assert!(
        objects.contains(&format!("p/{}", file_name(&new))),
        "{objects:?}"
    );
    assert!(objects.contains(&format!("p/{old_name}")), "{objects:?}");
    assert!(
        !objects.iter().any(|o| o.contains("29991231")),
        "the future-stamped file was uploaded: {objects:?}"
    );
    assert!(
        !objects.contains(&format!("p/{bare_name}")),
        "a file without a sidecar was uploaded: {objects:?}"
    );
    // keep-min 3 counts the new, the bare and the old one, not the planted.
    assert!(
        old.exists(),
        "the planted name pushed a real backup out of keep-min"
    );
    assert!(future.exists(), "not ours to delete");

    let status = read_status(&app.status_file());
    let backups: Vec<String> = status["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        !backups.iter().any(|b| b.contains("29991231")),
        "{backups:?}"
    );
    assert_eq!(backups.first(), Some(&file_name(&new)), "{backups:?}");
    let list = app.backupd().run(&["list"]);
    list.assert_code(0);
    assert!(!list.stdout.contains("29991231"), "{list}");
    let first = list.stdout.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with(&file_name(&new)), "{list}");
}
