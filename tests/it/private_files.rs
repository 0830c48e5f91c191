//! Files are private, and no write follows a planted link (issue 10 §3,
//! §6): what `stat` shows for every file backupd writes (backups, sidecars,
//! partials while a backup runs, the SQLite snapshot, safety copies, S3
//! downloads, created folders), `BACKUP_FILE_MODE`, symlinks planted at the
//! names backupd writes, and the clean-up of what a killed run left.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::*;
use rusqlite::Connection;

const GIVE_UP: Duration = Duration::from_secs(120);

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn assert_mode(path: &Path, expected: u32) {
    let mode = mode_of(path);
    assert_eq!(
        mode,
        expected,
        "{} is {mode:04o}, expected {expected:04o}",
        path.display()
    );
}

/// A file outside every folder backupd writes, the target of planted links.
struct Victim {
    path: PathBuf,
    missing: PathBuf,
}

const VICTIM_TEXT: &[u8] = b"the victim's own content\n";

impl Victim {
    fn new(work: &Path) -> Victim {
        let dir = work.join("victim");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("precious.txt");
        fs::write(&path, VICTIM_TEXT).unwrap();
        Victim {
            path,
            missing: dir.join("never-created"),
        }
    }

    /// Plants `at` → the victim, and `at` + `.dangling` → a missing file.
    fn plant(&self, at: &Path) {
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(&self.path, at).unwrap();
    }

    fn plant_dangling(&self, at: &Path) {
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(&self.missing, at).unwrap();
    }

    fn assert_untouched(&self) {
        assert_eq!(
            fs::read(&self.path).unwrap(),
            VICTIM_TEXT,
            "a planted link was written through"
        );
        assert_mode(&self.path, 0o644);
        assert!(
            !self.missing.exists(),
            "a dangling planted link was followed"
        );
    }
}

/// A SQLite app in WAL mode with `mib` MiB of incompressible rows (so that
/// a backup takes long enough to be watched) and an open writer whose last
/// commit lives only in the -wal file.
fn wal_app_with_writer(mib: u32) -> (SqliteApp, Connection) {
    let app = SqliteApp::small(10);
    let writer = Connection::open(&app.db).unwrap();
    let mode: String = writer
        .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    writer
        .query_row("PRAGMA wal_autocheckpoint = 0", [], |r| r.get::<_, i64>(0))
        .unwrap();
    writer
        .execute_batch(&format!(
            "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO blobs (data) SELECT randomblob(65536) FROM n;
             PRAGMA wal_checkpoint(TRUNCATE);
             INSERT INTO notes (body) VALUES ('only in the wal');",
            mib * 16
        ))
        .unwrap();
    (app, writer)
}

/// Every file and folder under `dir` (recursively) with its mode; links
/// are left out.
fn modes_under(dir: &Path, into: &mut BTreeMap<PathBuf, u32>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Links (planted by the tests) have no mode of their own.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_symlink() {
            continue;
        }
        into.insert(path.clone(), meta.permissions().mode() & 0o7777);
        if meta.is_dir() {
            modes_under(&path, into);
        }
    }
}

fn assert_none_world_readable(seen: &BTreeMap<PathBuf, u32>) {
    let open: Vec<String> = seen
        .iter()
        .filter(|(_, mode)| *mode & 0o007 != 0)
        .map(|(path, mode)| format!("{} {mode:04o}", path.display()))
        .collect();
    assert!(open.is_empty(), "readable by every local user: {open:#?}");
}

// ---------------------------------------------------------------- modes

#[test]
fn a_sqlite_backup_its_partial_snapshot_sidecar_and_folder_are_never_world_readable() {
    let (app, writer) = wal_app_with_writer(24);
    let mut run = app
        .backupd()
        .env("BACKUP_COMPRESSION_LEVEL", "9")
        .background(&["once"]);

    // Watch the folder while the backup runs.
    let mut seen = BTreeMap::new();
    let started = Instant::now();
    let done = loop {
        modes_under(&app.dir, &mut seen);
        if let Some(done) = run.wait_exit(Duration::from_millis(2)) {
            break done;
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "backupd once hangs:\n{}",
            run.log()
        );
    };
    done.assert_code(0);
    drop(writer);
    modes_under(&app.dir, &mut seen);
    let names: Vec<String> = seen.keys().map(|p| file_name(p)).collect();
    eprintln!("observed while the backup ran: {seen:#?}");
    assert!(
        names.iter().any(|n| n.ends_with(".partial")),
        "the partial file was never seen: {names:?}"
    );
    assert_none_world_readable(&seen);
    for (path, mode) in &seen {
        let name = file_name(path);
        if name.ends_with(".partial") || name.ends_with(".snapshot") {
            assert_eq!(*mode, 0o640, "{name}");
        }
    }

    let backup = done.backup_path();
    assert_sound_backup(&backup);
    assert_mode(&backup, 0o640);
    assert_mode(&sidecar_path(&backup), 0o640);
    assert_mode(&app.status_file(), 0o640);
    assert_mode(&app.dir, 0o750);
    let restored = app.work.path().join("check.db");
    let conn = open_sqlite_backup(&backup, &restored);
    let in_wal: i64 = conn
        .query_row(
            "SELECT count(*) FROM notes WHERE body = 'only in the wal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_wal, 1, "the writer's last commit is missing");
}

#[test]
fn backup_file_mode_is_honoured_exactly_and_a_world_readable_one_is_refused() {
    let app = SqliteApp::small(5);
    let run = app.backupd().env("BACKUP_FILE_MODE", "0600").once();
    run.assert_code(0);
    let backup = run.backup_path();
    assert_mode(&backup, 0o600);
    assert_mode(&sidecar_path(&backup), 0o600);
    assert_mode(&app.status_file(), 0o600);

    // Wider than the process umask (0027) allows: the fchmod gives it anyway.
    let run = app.backupd().env("BACKUP_FILE_MODE", "660").once();
    run.assert_code(0);
    assert_mode(&run.backup_path(), 0o660);

    let before = backup_files(&app.dir);
    for bad in ["0644", "0604", "0641", "0400", "rw-r-----"] {
        let run = app.backupd().env("BACKUP_FILE_MODE", bad).once();
        eprintln!("{run}");
        run.assert_code(2)
            .assert_stderr_mentions(&["BACKUP_FILE_MODE"]);
        assert_eq!(backup_files(&app.dir), before, "{bad}: a backup was taken");
    }
    // The daemon refuses it at start-up too.
    let run = app
        .backupd()
        .env("BACKUP_FILE_MODE", "0644")
        .run_bounded(&["backup"], GIVE_UP);
    run.assert_code(2)
        .assert_stderr_mentions(&["BACKUP_FILE_MODE"]);
}

#[test]
fn a_postgres_partial_is_private_while_pg_dump_waits_for_a_lock() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app("CREATE TABLE held (id int); INSERT INTO held VALUES (1);");
    let work = temp_dir();
    let dir = work.path().join("nested/backups");

    // Another session holds the table, so pg_dump waits with the partial open.
    let mut holder = cluster
        .client("psql", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_holder = holder.stdin.take().unwrap();
    to_holder
        .write_all(b"BEGIN;\nLOCK TABLE held IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");

    let mut run = cluster.backupd(&dir).background(&["once"]);
    let partial = poll(Duration::from_millis(20), GIVE_UP, || {
        dir_names(&dir)
            .into_iter()
            .find(|n| n.starts_with(".pg_dump-") && n.ends_with(".partial"))
    })
    .unwrap_or_else(|| panic!("no partial file appeared:\n{}", run.log()));
    assert_mode(&dir.join(&partial), 0o640);
    assert_mode(&dir, 0o750);
    assert_mode(dir.parent().unwrap(), 0o750);

    to_holder.write_all(b"COMMIT;\n").unwrap();
    drop(to_holder);
    holder.wait().unwrap();
    let done = run.wait_exit(GIVE_UP).expect("backupd once finishes");
    done.assert_code(0);
    let backup = done.backup_path();
    assert_mode(&backup, 0o640);
    assert_mode(&sidecar_path(&backup), 0o640);
}

// ---------------------------------------------------------------- restores

/// The restore side of a stack: `restore/{incoming,failed,state}` and
/// `backups/` under `root`, for the SQLite database `db`.
fn restore_service(db: &Path, root: &Path) -> Backupd {
    Backupd::for_database(sqlite_url(db), &root.join("backups"))
        .env("RESTORE_WATCH_DIR", root.join("restore/incoming"))
        .env(
            "RESTORE_STATE_FILE",
            root.join("restore/state/restore-state.json"),
        )
        .env("RESTORE_SQLITE_PATH", db)
        .env("RESTORE_SETTLE_SECONDS", "1")
        .env("RESTORE_POLL_INTERVAL", "1")
}

#[test]
fn a_restore_keeps_its_safety_copy_private_and_never_writes_through_planted_links() {
    let app = SqliteApp::small(3);
    let work = temp_dir();
    let root = work.path();
    let victim = Victim::new(root);
    let source = root.join("source.db");
    sqlite_small(&source, 7);
    let made = Backupd::for_database(sqlite_url(&source), &root.join("made")).once();
    made.assert_code(0);
    let good = made.backup_path();

    let state_dir = root.join("restore/state");
    victim.plant(&state_dir.join(".restore-state.json.tmp"));
    victim.plant_dangling(&state_dir.join(".restore-state.json.tmp.1"));
    // Not there yet: backupd creates it for the safety copy.
    let backups = root.join("safety/copies");

    let run = restore_service(&app.db, root)
        .env("BACKUP_DIR", &backups)
        .run_bounded(&["restore", "--file", good.to_str().unwrap()], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(0);
    victim.assert_untouched();

    let safety: Vec<String> = dir_names(&backups)
        .into_iter()
        .filter(|n| n.starts_with("pre-restore-") && !is_companion(n))
        .collect();
    assert_eq!(safety.len(), 1, "{:?}", dir_names(&backups));
    let safety = backups.join(&safety[0]);
    assert_mode(&safety, 0o640);
    assert_mode(&sidecar_path(&safety), 0o640);
    assert_mode(&backups, 0o750);
    assert_mode(backups.parent().unwrap(), 0o750);
    let state = state_dir.join("restore-state.json");
    assert!(fs::symlink_metadata(&state).unwrap().is_file());
    assert_mode(&state, 0o640);
    let mut seen = BTreeMap::new();
    modes_under(&backups, &mut seen);
    modes_under(&state_dir, &mut seen);
    assert_none_world_readable(&seen);
}

#[test]
fn a_refused_file_gets_its_reason_without_writing_through_links_in_failed() {
    let app = SqliteApp::small(3);
    let work = temp_dir();
    let root = work.path();
    let victim = Victim::new(root);
    let failed = root.join("restore/failed");
    let incoming = root.join("restore/incoming");
    fs::create_dir_all(&incoming).unwrap();
    // The names the reason used to be written through, and the final one.
    victim.plant(&failed.join(".broken.db.gz.reason.json.tmp"));
    victim.plant(&failed.join("broken.db.gz.reason.json"));
    victim.plant_dangling(&failed.join(".broken.db.gz.reason.json.tmp.1"));

    let mut service = restore_service(&app.db, root).background(&["restore"]);
    assert!(
        service.wait_for_log(Duration::from_secs(30), |log| log.contains("watching")),
        "{}",
        service.log()
    );
    fs::write(incoming.join("broken.db.gz"), b"not gzip at all").unwrap();
    let reason = failed.join("broken.db.gz.reason.json");
    let written = poll(Duration::from_millis(50), GIVE_UP, || {
        fs::symlink_metadata(&reason)
            .ok()
            .filter(|m| m.is_file())
            .map(|_| ())
    });
    let log = service.terminate(GIVE_UP);
    assert!(written.is_some(), "no reason.json was written:\n{log}");
    victim.assert_untouched();
    let text = fs::read_to_string(&reason).unwrap();
    assert!(text.contains("broken.db.gz"), "{text}");
    assert_mode(&reason, 0o640);
    // Created by backupd, not by the test.
    assert_mode(&root.join("restore/state"), 0o750);
    assert!(
        !dir_names(&failed)
            .iter()
            .any(|n| n.starts_with(".backupd-tmp-")),
        "a temporary file was left: {:?}",
        dir_names(&failed)
    );
}

#[test]
fn an_s3_download_is_private_and_replaces_a_planted_link_instead_of_following_it() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let app = SqliteApp::small(4);
    let mut uploading = app.backupd();
    for (k, v) in server.env() {
        uploading = uploading.env(&k, v);
    }
    let made = uploading.once();
    made.assert_code(0);
    let name = file_name(&made.backup_path());

    // The library call the restore uses, so the download can be inspected.
    let work = temp_dir();
    let victim = Victim::new(work.path());
    let downloads = work.path().join("restore/downloads");
    let dest = downloads.join(&name);
    victim.plant(&dest);
    victim.plant(&downloads.join(format!(".{name}.partial")));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let got = runtime.block_on(async {
        let store = server.store("").await;
        store
            .download(&name, &dest, &tokio_util::sync::CancellationToken::new())
            .await
            .unwrap()
    });
    assert!(got.checksum_verified);
    victim.assert_untouched();
    assert!(fs::symlink_metadata(&dest).unwrap().is_file());
    assert_mode(&dest, 0o640);
    assert_eq!(sha256_file(&dest), sha256_file(&made.backup_path()));

    // The binary: `--from-s3 latest` with links planted in downloads/.
    let root = work.path().join("stack");
    let downloads = root.join("restore/downloads");
    victim.plant(&downloads.join(&name));
    victim.plant(&downloads.join(format!(".{name}.partial")));
    let mut restore = restore_service(&app.db, &root).env("RESTORE_SAFETY_BACKUP", "false");
    for (k, v) in server.env() {
        restore = restore.env(&k, v);
    }
    let run = restore.run_bounded(&["restore", "--from-s3", "latest"], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(0);
    victim.assert_untouched();
    let left: Vec<String> = dir_names(&downloads)
        .into_iter()
        .filter(|n| n.starts_with(".backupd-tmp-") || *n == name)
        .collect();
    assert!(left.is_empty(), "downloads left behind: {left:?}");
}

// ---------------------------------------------------------------- leftovers

#[test]
fn the_next_run_removes_what_a_killed_run_left_and_nothing_else() {
    let app = SqliteApp::small(5);
    fs::create_dir_all(&app.dir).unwrap();
    let key = Backupd::new().run(&["keygen"]);
    key.assert_code(0);
    let dir = &app.dir;
    let old = "sqlite-20200101T000000Z.db.gz.enc";
    let ours = [
        // A kill between the sidecar rename and the data rename.
        "sqlite-20200102T000000Z.db.gz.enc.sha256".to_string(),
        format!(".{old}.sha256.tmp"),
        ".sqlite-20200103T000000Z.db.gz.enc.partial".into(),
        ".sqlite-20200103T000000Z.db.gz.enc.snapshot".into(),
        ".pre-restore-sqlite-20200104T000000Z.db.gz.enc.partial".into(),
        ".pre-restore-sqlite-20200104T000000Z.db.gz.enc.snapshot".into(),
        "pre-restore-pg_dump-20200105T000000Z.sql.gz.sha256".into(),
        ".backup-status.json.tmp".into(),
        ".backupd-tmp-a1B2c3".into(),
    ];
    let theirs = [
        ".encryption_key".to_string(),
        "sqlite-manual-20200101-000000.db.gz".into(),
        "notes.txt".into(),
        "notes.txt.sha256".into(),
        ".notes.txt.partial".into(),
        ".something.tmp".into(),
        old.into(),
        format!("{old}.sha256"),
    ];
    for name in ours.iter().chain(&theirs) {
        let content = if name == ".encryption_key" {
            key.stdout.clone()
        } else {
            "x".into()
        };
        fs::write(dir.join(name), content).unwrap();
    }
    let theirs_before: Vec<(String, String)> = theirs
        .iter()
        .map(|n| (n.clone(), sha256_file(&dir.join(n))))
        .collect();

    // The daemon cleans up at start-up, before its first scheduled run.
    let mut daemon = app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_RETENTION_DAYS", "0")
        .daemon();
    assert!(
        daemon.wait_for_log(Duration::from_secs(30), |log| ours
            .iter()
            .all(|n| log.contains(n.as_str()))),
        "{}",
        daemon.log()
    );
    let log = daemon.stop_cleanly();
    for name in &ours {
        assert!(!dir.join(name).exists(), "{name} was kept:\n{log}");
        assert!(
            log.stderr.contains(name.as_str()),
            "{name} removed without a log line:\n{log}"
        );
    }
    for (name, sha) in &theirs_before {
        assert_eq!(
            &sha256_file(&dir.join(name)),
            sha,
            "{name} was changed or removed"
        );
    }

    // `backupd once` does the same before its backup.
    for name in &ours {
        fs::write(dir.join(name), "x").unwrap();
    }
    let run = app.backupd().env("BACKUP_RETENTION_DAYS", "0").once();
    run.assert_code(0);
    for name in &ours {
        assert!(!dir.join(name).exists(), "{name} was kept:\n{run}");
    }
    for (name, sha) in &theirs_before {
        assert_eq!(
            &sha256_file(&dir.join(name)),
            sha,
            "{name} was changed or removed"
        );
    }
    assert_mode(&run.backup_path(), 0o640);
}

#[test]
fn planted_links_in_the_backup_folder_are_never_written_through() {
    let app = SqliteApp::small(5);
    let work = temp_dir();
    let victim = Victim::new(work.path());
    let dir = &app.dir;
    // Every fixed name a backup in the next few seconds would have used.
    let now = chrono::Utc::now();
    for second in 0..10 {
        let name = Kind::Sqlite.name_at(now + chrono::Duration::seconds(second));
        victim.plant(&dir.join(format!(".{name}.sha256.tmp")));
        victim.plant_dangling(&dir.join(format!(".{name}.snapshot")));
        victim.plant(&dir.join(format!(".{name}.partial")));
    }
    victim.plant(&dir.join(".backup-status.json.tmp"));
    let run = app.backupd().once();
    eprintln!("{run}");
    run.assert_code(0);
    victim.assert_untouched();
    assert_sound_backup(&run.backup_path());
    let links: Vec<String> = dir_names(dir)
        .into_iter()
        .filter(|n| fs::symlink_metadata(dir.join(n)).unwrap().is_symlink())
        .collect();
    assert!(links.is_empty(), "planted links kept: {links:?}");

    // A link at the status file's own name is replaced, not followed.
    fs::remove_file(app.status_file()).unwrap();
    victim.plant(&app.status_file());
    app.backupd().once().assert_code(0);
    victim.assert_untouched();
    assert!(fs::symlink_metadata(app.status_file()).unwrap().is_file());
}

/// A small pseudo-random sequence (xorshift), seeded from the clock and
/// printed, so a failing trial can be told apart.
struct Moments(u64);

impl Moments {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

#[test]
fn kill_9_at_random_moments_leaves_a_complete_backup_or_nothing_after_the_next_run() {
    let (app, writer) = wal_app_with_writer(4);
    let dir = &app.dir;
    // How long one run takes here: the kills fall inside it.
    let started = Instant::now();
    app.backupd().once().assert_code(0);
    let span = started.elapsed().as_millis() as u64 + 50;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("one run takes {span} ms here; seed {seed}");
    let mut moments = Moments(seed);
    for trial in 0..10 {
        let delay = moments.next_below(span);
        let mut run = app.backupd().background(&["once"]);
        std::thread::sleep(Duration::from_millis(delay));
        run.signal("KILL");
        let _ = run.wait_exit(GIVE_UP);
        let after_kill = dir_names(dir);
        app.backupd().once().assert_code(0);

        let names = dir_names(dir);
        for name in &names {
            let path = dir.join(name);
            let known = name == "backup-status.json"
                || name == ".backup-status.json.lock"
                || name == ".backupd.lock";
            if parse_backup_name(name).is_some() {
                assert!(
                    sidecar_path(&path).is_file(),
                    "trial {trial} (kill after {delay} ms): {name} has no sidecar; left by the kill: {after_kill:?}"
                );
                assert_sha256sum_c(&path);
                assert!(
                    backupd::manifest::manifest_path(&path).is_file(),
                    "trial {trial} (kill after {delay} ms): {name} has no manifest; left by the kill: {after_kill:?}"
                );
            } else if let Some(data) = name
                .strip_suffix(".sha256")
                .or_else(|| name.strip_suffix(".manifest.json"))
            {
                assert!(
                    dir.join(data).is_file(),
                    "trial {trial} (kill after {delay} ms): orphan companion {name}; left by the kill: {after_kill:?}"
                );
            } else {
                assert!(
                    known,
                    "trial {trial} (kill after {delay} ms): {name} left after the next run; left by the kill: {after_kill:?}"
                );
            }
        }
    }
    drop(writer);
}
