//! Encrypted backups, as the operator sees them: with a Fernet key set,
//! every backup is `NAME.gz.enc`, one token the app's admin page (Python's
//! `cryptography`) can read; the restore service and `verify` read them and
//! tokens Python made; a wrong key or an altered byte is refused with one
//! clear message and never touches the live database.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Backupd, PG_APP_DB, PgCluster, SqliteApp, assert_same_sqlite_contents, assert_sha256sum_c,
    file_name, is_companion, poll, python, read_status, require_postgres, require_python_fernet,
    sqlite_contents, sqlite_small, sqlite_url, temp_dir,
};

/// Python decrypts the token in argv[2] with the key argv[1] into argv[3].
const PY_DECRYPT: &str = "import sys\n\
from cryptography.fernet import Fernet\n\
token = open(sys.argv[2], 'rb').read()\n\
open(sys.argv[3], 'wb').write(Fernet(sys.argv[1].encode()).decrypt(token))\n";

/// Python encrypts the file argv[2] with the key argv[1] into argv[3].
const PY_ENCRYPT: &str = "import sys\n\
from cryptography.fernet import Fernet\n\
data = open(sys.argv[2], 'rb').read()\n\
open(sys.argv[3], 'wb').write(Fernet(sys.argv[1].encode()).encrypt(data))\n";

/// Exit 0 when Python refuses the token (InvalidToken), 1 when it decrypts.
const PY_REFUSES: &str = "import sys\n\
from cryptography.fernet import Fernet, InvalidToken\n\
try:\n    Fernet(sys.argv[1].encode()).decrypt(open(sys.argv[2], 'rb').read())\n\
except InvalidToken:\n    sys.exit(0)\n\
sys.exit(1)\n";

/// A new key from `backupd keygen` (which Python must accept).
fn keygen() -> String {
    let out = Backupd::new().run(&["keygen"]);
    out.assert_code(0);
    let key = out.last_line().trim().to_string();
    assert_eq!(key.len(), 44, "a Fernet key is 44 characters: {out}");
    key
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Python's decryption of `token` with `key`, as a gzip file `out`.
fn python_decrypt(key: &str, token: &Path, out: &Path) {
    python(PY_DECRYPT, &[key, path_str(token), path_str(out)]);
}

fn python_refuses(key: &str, token: &Path) -> bool {
    std::process::Command::new("python3")
        .args(["-c", PY_REFUSES, key, path_str(token)])
        .status()
        .unwrap()
        .success()
}

/// The SQLite database inside an encrypted backup, decrypted by Python.
fn sqlite_inside(key: &str, backup: &Path, scratch: &Path) -> rusqlite::Connection {
    let gz = scratch.join(format!("{}.gz", file_name(backup)));
    python_decrypt(key, backup, &gz);
    common::open_sqlite_backup(&gz, &scratch.join(format!("{}.db", file_name(backup))))
}

#[test]
fn with_a_key_every_backup_is_a_token_python_reads_and_the_key_is_never_shown() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let app = SqliteApp::small(40);
    let key = keygen();
    let run = app.backupd().env("BACKUP_ENCRYPTION_KEY", &key).once();
    let backup = run.backup_path();
    run.assert_not_shown(&key);
    assert!(
        file_name(&backup).ends_with(".db.gz.enc"),
        "{}",
        backup.display()
    );
    assert_sha256sum_c(&backup);

    let scratch = temp_dir();
    let inside = sqlite_inside(&key, &backup, scratch.path());
    let live = rusqlite::Connection::open(&app.db).unwrap();
    assert_same_sqlite_contents(&sqlite_contents(&live), &sqlite_contents(&inside));

    let status_text = fs::read_to_string(app.status_file()).unwrap();
    assert!(!status_text.contains(&key), "the key is in the status file");
    let status = read_status(&app.status_file());
    assert_eq!(status["last_file"], path_str(&backup));
    assert!(
        python_refuses(&keygen(), &backup),
        "another key decrypted it"
    );
}

#[test]
fn the_key_file_in_the_backup_folder_is_read_again_before_every_backup() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let app = SqliteApp::small(10);
    let key_file = app.dir.join(".encryption_key");
    fs::create_dir_all(&app.dir).unwrap();

    let plain = app.backupd().once().backup_path();
    assert!(
        file_name(&plain).ends_with(".db.gz"),
        "no key, no encryption"
    );

    let first_key = keygen();
    // As an env file or an editor may leave it: quoted, with CRLF.
    fs::write(&key_file, format!("\"{first_key}\"\r\n")).unwrap();
    let first = app.backupd().once().backup_path();
    let second_key = keygen();
    fs::write(&key_file, &second_key).unwrap();
    let second = app.backupd().once().backup_path();

    let scratch = temp_dir();
    for (backup, key, other) in [
        (&first, &first_key, &second_key),
        (&second, &second_key, &first_key),
    ] {
        assert!(file_name(backup).ends_with(".db.gz.enc"));
        sqlite_inside(key, backup, scratch.path());
        assert!(python_refuses(other, backup));
    }
    // Rotation: the new key first, the old one kept to read old backups.
    fs::write(&key_file, format!("{second_key},{first_key}")).unwrap();
    // Retention and listing count encrypted backups as ours.
    let list = app.backupd().run(&["list", "--verify"]);
    list.assert_code(0);
    for backup in [&plain, &first, &second] {
        assert!(list.stdout.contains(&file_name(backup)), "{list}");
    }
}

#[test]
fn a_bad_key_stops_start_up_at_once_naming_where_it_came_from() {
    let app = SqliteApp::small(5);
    let bad = "bm90LWEtMzItYnl0ZS1rZXk-but-not-valid";
    for args in [&["once"][..], &["backup"]] {
        let run = app
            .backupd()
            .env("BACKUP_ENCRYPTION_KEY", bad)
            .env("STATUS_PORT", "0")
            .run_bounded(args, Duration::from_secs(30));
        run.assert_code(2)
            .assert_stderr_mentions(&["BACKUP_ENCRYPTION_KEY"])
            .assert_not_shown(bad);
    }

    let key_file = app.dir.join(".encryption_key");
    fs::create_dir_all(&app.dir).unwrap();
    fs::write(&key_file, "half-a-key").unwrap();
    let run = app.backupd().once();
    run.assert_code(2)
        .assert_stderr_mentions(&[".encryption_key"])
        .assert_not_shown("half-a-key");
    assert!(
        common::backup_files(&app.dir).is_empty(),
        "nothing may be written in the clear when the key file is bad"
    );
}

#[test]
fn verify_authenticates_encrypted_files_and_refuses_wrong_keys_and_altered_bytes() {
    let app = SqliteApp::small(20);
    let key = keygen();
    let backup = app
        .backupd()
        .env("BACKUP_ENCRYPTION_KEY", &key)
        .once()
        .backup_path();

    let ok = Backupd::new()
        .env("BACKUP_ENCRYPTION_KEY", &key)
        .run(&["verify", path_str(&backup)]);
    ok.assert_code(0);
    assert!(ok.stdout.contains("Fernet token authenticated"), "{ok}");

    // A rotated ring (new key first) still reads the old backups.
    let ring = format!("{},{key}", keygen());
    Backupd::new()
        .env("BACKUP_ENCRYPTION_KEY", &ring)
        .run(&["verify", path_str(&backup)])
        .assert_code(0);

    let refused = "the key does not match or the file was altered";
    Backupd::new()
        .env("BACKUP_ENCRYPTION_KEY", keygen())
        .run(&["verify", path_str(&backup)])
        .assert_code(1)
        .assert_stderr_mentions(&["cannot decrypt", refused]);

    // Copies without the sidecar, so the token itself must catch it.
    let elsewhere = temp_dir();
    let token = fs::read(&backup).unwrap();
    let mut altered = token.clone();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    let truncated = &token[..token.len() - 10];
    for (label, bytes) in [("altered", &altered[..]), ("truncated", truncated)] {
        let copy = elsewhere.path().join(file_name(&backup));
        fs::write(&copy, bytes).unwrap();
        Backupd::new()
            .env("BACKUP_ENCRYPTION_KEY", &key)
            .run(&["verify", path_str(&copy)])
            .assert_code(1)
            .assert_stderr_mentions(&["cannot decrypt", refused]);
        assert!(copy.exists(), "{label}: the file must be kept");
    }

    Backupd::new()
        .env("BACKUP_DIR", elsewhere.path())
        .run(&["verify", path_str(&backup)])
        .assert_code(1)
        .assert_stderr_mentions(&["no encryption key"]);
}

/// A SQLite stack for the restore service: `<tmp>/app/app.db`, `backups/`,
/// `restore/{incoming,failed,state}`.
struct SqliteStack {
    work: tempfile::TempDir,
    db: PathBuf,
    incoming: PathBuf,
}

impl SqliteStack {
    fn new(rows: u32) -> SqliteStack {
        let work = temp_dir();
        let db = work.path().join("app/app.db");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        sqlite_small(&db, rows);
        let incoming = work.path().join("restore/incoming");
        fs::create_dir_all(&incoming).unwrap();
        SqliteStack { work, db, incoming }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn backupd(&self) -> Backupd {
        Backupd::for_database(sqlite_url(&self.db), &self.path("backups"))
            .env("RESTORE_WATCH_DIR", &self.incoming)
            .env(
                "RESTORE_STATE_FILE",
                self.path("restore/state/restore-state.json"),
            )
            .env("RESTORE_SQLITE_PATH", &self.db)
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1")
    }

    /// A backup of a fresh database of `rows` rows, encrypted by Python
    /// with `key`, as `<tmp>/made/NAME.db.gz.enc`.
    fn python_encrypted_backup(&self, rows: u32, key: &str) -> PathBuf {
        let source = self.path(&format!("made/source-{rows}.db"));
        fs::create_dir_all(source.parent().unwrap()).unwrap();
        sqlite_small(&source, rows);
        let made = self.path("made");
        let plain = Backupd::for_database(sqlite_url(&source), &made)
            .once()
            .backup_path();
        let token = made.join(format!("{}.enc", file_name(&plain)));
        python(PY_ENCRYPT, &[key, path_str(&plain), path_str(&token)]);
        token
    }

    fn live_rows(&self) -> i64 {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap()
    }

    fn leftover_plaintext(&self) -> Vec<String> {
        let mut found = Vec::new();
        for dir in [
            self.incoming.clone(),
            self.path("app"),
            std::env::temp_dir(),
        ] {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.contains(".decrypted-") {
                    found.push(format!("{}/{name}", dir.display()));
                }
            }
        }
        found
    }
}

#[test]
fn a_token_made_by_python_is_restored_with_the_key_beside_the_watch_folder() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let stack = SqliteStack::new(5);
    let key = keygen();
    // Where the old restore helper looked: the parent of the watch folder.
    fs::write(stack.path("restore/.encryption_key"), format!("{key}\n")).unwrap();
    let token = stack.python_encrypted_backup(77, &key);

    let run = stack
        .backupd()
        .run(&["restore", "--file", path_str(&token)]);
    run.assert_code(0).assert_not_shown(&key);
    assert_eq!(stack.live_rows(), 77);
    assert!(token.exists(), "a file named with --file is never moved");
    assert_eq!(stack.leftover_plaintext(), Vec::<String>::new());
}

#[test]
fn a_token_with_the_wrong_key_goes_to_the_failed_folder_and_the_database_is_untouched() {
    let Some(()) = require_python_fernet() else {
        return;
    };
    let stack = SqliteStack::new(5);
    let before = sqlite_contents(&rusqlite::Connection::open(&stack.db).unwrap());
    let token = stack.python_encrypted_backup(9, &keygen());
    let mut service = stack
        .backupd()
        .env("BACKUP_ENCRYPTION_KEY", keygen())
        .background(&["restore"]);
    assert!(
        service.wait_for_log(Duration::from_secs(20), |log| log.contains("watching")),
        "{}",
        service.log()
    );
    fs::copy(&token, stack.incoming.join(file_name(&token))).unwrap();

    let failed = stack.path(&format!("restore/failed/{}", file_name(&token)));
    let reason_file = PathBuf::from(format!("{}.reason.json", failed.display()));
    let reason = poll(Duration::from_millis(200), Duration::from_secs(60), || {
        fs::read_to_string(&reason_file).ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "the file never reached the failed folder:\n{}",
            service.log()
        )
    });
    assert!(
        reason.contains("cannot decrypt")
            && reason.contains("the key does not match or the file was altered"),
        "{reason}"
    );
    assert!(failed.exists(), "the file is kept for inspection");
    let after = sqlite_contents(&rusqlite::Connection::open(&stack.db).unwrap());
    assert_same_sqlite_contents(&before, &after);
    assert_eq!(stack.leftover_plaintext(), Vec::<String>::new());
    service.stop_cleanly();
}

#[test]
fn an_encrypted_postgres_backup_restores_and_the_safety_backup_is_encrypted_too() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(2));
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    let key = keygen();
    let dir = temp_dir();
    let backups = dir.path().join("backups");
    let backup = cluster
        .backupd(&backups)
        .env("BACKUP_ENCRYPTION_KEY", &key)
        .once()
        .backup_path();
    assert!(file_name(&backup).ends_with(".sql.gz.enc"));
    let original = cluster.table_checksums(PG_APP_DB);

    cluster.psql_app("TRUNCATE users CASCADE");
    assert_ne!(cluster.table_checksums(PG_APP_DB), original);

    let incoming = dir.path().join("restore/incoming");
    fs::create_dir_all(&incoming).unwrap();
    let run = cluster
        .backupd(&backups)
        .env("BACKUP_ENCRYPTION_KEY", &key)
        .env("RESTORE_WATCH_DIR", &incoming)
        .env("RESTORE_STATE_FILE", dir.path().join("state.json"))
        .run(&["restore", "--file", path_str(&backup)]);
    run.assert_code(0).assert_not_shown(&key);
    assert_eq!(cluster.table_checksums(PG_APP_DB), original);

    let safety: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pre-restore-") && !is_companion(n))
        .collect();
    assert_eq!(safety.len(), 1, "{safety:?}");
    assert!(safety[0].ends_with(".sql.gz.enc"), "{safety:?}");
}
