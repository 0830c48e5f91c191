//! Secrets stay inside backupd: no child process sees the Fernet key, the
//! AWS keys, the session token, the database URL or its password (in its
//! environment or argv); the password reaches libpq through a private
//! password file that is gone afterwards; `LOG_LEVEL=debug`/`trace` logs
//! none of them (nor an inspected container's `Env`); a session token
//! reaches S3; a secret given as a flag is warned about; and a `pg_dump`
//! blocked on a lock dies with a SIGKILLed backupd.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::docker::{TestContainer, require_test_image};
use common::s3::S3Server;
use common::*;

const GIVE_UP: Duration = Duration::from_secs(120);
const SESSION_TOKEN: &str = "FwoGZXIvYXdzE-session-token-4f1c2a";
/// The role's password holds both characters a password file must escape.
const ROLE: &str = "spyapp";
const ROLE_PASSWORD: &str = r"pw:Zq9\unique";
const ROLE_PASSWORD_IN_URL: &str = "pw%3AZq9%5Cunique";
const DB: &str = "spydb";

/// A new key from `backupd keygen`.
fn keygen() -> String {
    let out = Backupd::new().run(&["keygen"]);
    out.assert_code(0);
    out.last_line().trim().to_string()
}

/// `pg_dump`, `psql` and `pg_restore` wrappers that append each child's
/// program, argv, whole environment (from `/proc/$$/environ`) and its
/// password file's path and modes to `log`, then exec the real program.
fn spy_wrappers(dir: &Path, real_bin: &Path, log: &Path) {
    fs::create_dir_all(dir).unwrap();
    for program in ["pg_dump", "psql", "pg_restore"] {
        let script = format!(
            r#"#!/bin/sh
{{
  printf 'PROGRAM %s\n' "$0"
  printf 'ARGV %s\n' "$*"
  tr '\0' '\n' < /proc/$$/environ | sed 's/^/ENV /'
  if [ -n "$PGPASSFILE" ]; then
    printf 'PASSFILE %s %s %s\n' "$PGPASSFILE" "$(stat -c %a "$PGPASSFILE")" "$(stat -c %a "$(dirname "$PGPASSFILE")")"
  fi
}} >> '{log}'
exec '{real}' "$@"
"#,
            log = log.display(),
            real = real_bin.join(program).display()
        );
        let path = dir.join(program);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A cluster whose app role has a password with `:` and `\`.
fn cluster() -> Option<PgCluster> {
    let bin = require_postgres()?;
    let cluster = PgCluster::start(&bin);
    cluster.create_role(ROLE, ROLE_PASSWORD);
    cluster.psql("postgres", &format!("ALTER ROLE {ROLE} CREATEDB"));
    cluster.createdb(DB, ROLE);
    cluster.load_fixtures(DB, ROLE, ROLE_PASSWORD, 1);
    Some(cluster)
}

fn url(cluster: &PgCluster) -> String {
    cluster.url("postgresql+psycopg", ROLE, ROLE_PASSWORD_IN_URL, DB)
}

/// backupd for `cluster` with every secret set: the Fernet key and the S3
/// server's keys with a session token.
fn configured(cluster: &PgCluster, work: &Path, key: &str, s3: &S3Server) -> Backupd {
    let mut b = Backupd::for_database(url(cluster), &work.join("backups"))
        .path_prepend(&cluster.bin)
        .env("BACKUP_ENCRYPTION_KEY", key)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("RESTORE_WATCH_DIR", work.join("restore/incoming"))
        .env("RESTORE_STATE_FILE", work.join("restore/state.json"));
    for (k, v) in s3.env() {
        b = b.env(&k, v);
    }
    b
}

fn secrets<'a>(cluster_url: &'a str, key: &'a str, s3: &'a S3Server) -> Vec<(&'a str, &'a str)> {
    vec![
        ("the Fernet key", key),
        ("the AWS secret key", s3.secret_key()),
        ("the session token", SESSION_TOKEN),
        ("the database URL", cluster_url),
        ("the database password", ROLE_PASSWORD),
        ("the database password (URL-encoded)", ROLE_PASSWORD_IN_URL),
    ]
}

fn assert_none_shown(text: &str, secrets: &[(&str, &str)], context: &str) {
    for (what, value) in secrets {
        assert!(
            !text.contains(value),
            "{what} appears in {context}:\n{text}"
        );
    }
}

#[test]
fn no_child_process_sees_a_secret_and_the_password_file_is_private_and_removed() {
    let Some(cluster) = cluster() else { return };
    let Some(s3) = S3Server::start() else { return };
    s3.require_session_token(SESSION_TOKEN);
    let work = temp_dir();
    let spy_log = work.path().join("children.log");
    let spy = work.path().join("spy");
    spy_wrappers(&spy, &cluster.bin, &spy_log);
    let key = keygen();
    let db_url = url(&cluster);
    let backupd = configured(&cluster, work.path(), &key, &s3).path_prepend(&spy);
    fs::create_dir_all(work.path().join("restore/incoming")).unwrap();

    // A backup, encrypted and uploaded with the session token.
    let run = backupd.run_bounded(&["once"], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(0);
    let backup = run.backup_path();
    assert!(file_name(&backup).ends_with(".sql.gz.enc"), "{run}");
    assert!(
        s3.objects().iter().any(|(k, _)| *k == file_name(&backup)),
        "the backup was not uploaded: {:?}\n{run}",
        s3.objects()
    );
    assert!(
        s3.session_tokens_seen().iter().any(|t| t == SESSION_TOKEN),
        "the session token never reached the server"
    );

    // A restore of the (encrypted) .sql.gz: decrypted, checked, safety
    // backup, loaded by psql.
    let original = cluster.table_checksums(DB);
    cluster.psql_as(DB, ROLE, ROLE_PASSWORD, "TRUNCATE users CASCADE");
    let run = backupd.run_bounded(&["restore", "--file", backup.to_str().unwrap()], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(0);
    assert_eq!(cluster.table_checksums(DB), original);

    // A restore of a custom-format dump: pg_restore -f - (the check), then pg_restore.
    let dump = work.path().join("pg_dump-custom.dump");
    let mut pg_dump = cluster.client("pg_dump", DB, ROLE, ROLE_PASSWORD);
    pg_dump
        .args(["--format=custom", "--no-owner", "-f"])
        .arg(&dump);
    run_ok(&mut pg_dump);
    cluster.psql_as(DB, ROLE, ROLE_PASSWORD, "TRUNCATE users CASCADE");
    let run = backupd.run_bounded(&["restore", "--file", dump.to_str().unwrap()], GIVE_UP);
    eprintln!("{run}");
    run.assert_code(0);
    assert_eq!(cluster.table_checksums(DB), original);

    let log = fs::read_to_string(&spy_log).expect("the spies logged nothing");
    for program in ["pg_dump", "psql", "pg_restore"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with("PROGRAM ") && l.ends_with(&format!("/{program}"))),
            "{program} was never run through the spy:\n{log}"
        );
    }
    // The check turns a custom dump into SQL without connecting
    // (`pg_restore -f -`) to scan it; then pg_restore loads it.
    assert!(
        log.contains("ARGV -f -"),
        "the check's pg_restore -f - was not seen:\n{log}"
    );
    assert_none_shown(
        &log,
        &secrets(&db_url, &key, &s3),
        "a child's environment or argv",
    );
    // Nothing but the allow-list and the computed libpq settings.
    for line in log.lines().filter(|l| l.starts_with("ENV ")) {
        let name = line["ENV ".len()..].split('=').next().unwrap();
        let allowed = ["PATH", "HOME", "LANG", "TZ", "TMPDIR"].contains(&name)
            || name.starts_with("LC_")
            || (name.starts_with("PG") && name != "PGPASSWORD");
        assert!(allowed, "a child inherited {name}:\n{log}");
    }

    // Every login used a private password file, removed afterwards.
    let passfiles: Vec<&str> = log.lines().filter(|l| l.starts_with("PASSFILE ")).collect();
    assert!(
        passfiles.len() >= 5,
        "the children that connect should each get a password file:\n{log}"
    );
    for line in passfiles {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(&fields[2..], ["600", "700"], "{line}");
        let path = PathBuf::from(fields[1]);
        assert!(!path.exists(), "{} was left behind", path.display());
        assert!(
            !path.parent().unwrap().exists(),
            "{} was left behind",
            path.parent().unwrap().display()
        );
    }
}

#[test]
fn debug_and_trace_logs_of_a_backup_with_an_upload_hold_no_secret() {
    let Some(cluster) = cluster() else { return };
    let Some(s3) = S3Server::start() else { return };
    s3.require_session_token(SESSION_TOKEN);
    let key = keygen();
    let db_url = url(&cluster);
    // The last run names the SDK's crates in RUST_LOG: then their trace lines
    // (request headers) are shown as asked, which proves the check sees them.
    let sdk = "trace,aws_smithy_runtime=trace,aws_smithy_runtime_api=trace,aws_sigv4=trace";
    for (level, rust_log) in [("debug", ""), ("trace", ""), ("info", sdk)] {
        let work = temp_dir();
        let run = configured(&cluster, work.path(), &key, &s3)
            .env("LOG_LEVEL", level)
            .env("RUST_LOG", rust_log)
            .run_bounded(&["once"], GIVE_UP);
        run.assert_code(0);
        let backup = run.backup_path();
        assert!(
            s3.objects().iter().any(|(k, _)| *k == file_name(&backup)),
            "LOG_LEVEL={level}: the backup was not uploaded\n{run}"
        );
        // backupd's own debug lines are there: the level did apply to it.
        assert!(run.stderr.contains("DEBUG"), "LOG_LEVEL={level}:\n{run}");
        let mut shown = secrets(&db_url, &key, &s3);
        shown.push(("a SigV4 signature", "Signature="));
        shown.push(("the session token header", "x-amz-security-token"));
        if rust_log.is_empty() {
            assert_none_shown(&run.stderr, &shown, &format!("the LOG_LEVEL={level} log"));
        } else {
            assert!(
                run.stderr.contains("Signature=") || run.stderr.contains(SESSION_TOKEN),
                "RUST_LOG={rust_log} should show the SDK's request headers:\n{run}"
            );
        }
    }
}

#[test]
fn debug_and_trace_logs_of_a_restore_show_no_inspected_container_env() {
    let Some(image) = require_test_image() else {
        return;
    };
    const APP_SECRET: &str = "app-env-secret-7c1d9e";
    let web = TestContainer::run_fast_stop(image, &["-e", &format!("APP_SECRET_KEY={APP_SECRET}")]);
    let app = SqliteApp::small(20);
    let made = app.backupd().once();
    made.assert_code(0);
    let backup = made.backup_path();
    let restore_dir = app.work.path().join("restore");
    fs::create_dir_all(restore_dir.join("incoming")).unwrap();
    // The last run names bollard in RUST_LOG: then its debug lines (the
    // whole inspect answer) are shown as asked, which proves the check sees them.
    for (level, rust_log) in [
        ("debug", ""),
        ("trace", ""),
        ("info", "debug,bollard=debug"),
    ] {
        let run = app
            .backupd()
            .env("LOG_LEVEL", level)
            .env("RUST_LOG", rust_log)
            .env("RESTORE_SQLITE_PATH", &app.db)
            .env("RESTORE_WATCH_DIR", restore_dir.join("incoming"))
            .env("RESTORE_STATE_FILE", restore_dir.join("state.json"))
            .env("RESTORE_STOP_CONTAINERS", &web.name)
            .env("RESTORE_STOP_TIMEOUT", "5")
            .env("RESTORE_STOP_WAIT_SECONDS", "0")
            .env("RESTORE_START_WAIT_SECONDS", "0")
            .run_bounded(&["restore", "--file", backup.to_str().unwrap()], GIVE_UP);
        eprintln!("{run}");
        run.assert_code(0);
        assert!(run.stderr.contains(&web.name), "LOG_LEVEL={level}:\n{run}");
        assert!(web.cli_running(), "the container was not started again");
        if rust_log.is_empty() {
            assert!(
                !run.stderr.contains(APP_SECRET),
                "the container's Env reached the LOG_LEVEL={level} log:\n{run}"
            );
        } else {
            assert!(
                run.stderr.contains(APP_SECRET),
                "RUST_LOG={rust_log} should show bollard's inspect answers:\n{run}"
            );
        }
    }
}

#[test]
fn a_secret_given_as_a_flag_is_warned_about_naming_the_safer_variable() {
    let app = SqliteApp::small(5);
    let key = keygen();
    let run = app.backupd().run(&["once", "--encryption-key", &key]);
    run.assert_code(0).assert_not_shown(&key);
    assert!(
        run.stderr.contains("--encryption-key")
            && run.stderr.contains("ps")
            && run.stderr.contains("BACKUP_ENCRYPTION_KEY_FILE"),
        "no warning about --encryption-key:\n{run}"
    );
    assert!(!run.stderr.contains("--database-url"), "{run}");

    // The same key from the environment: no warning.
    let run = app.backupd().env("BACKUP_ENCRYPTION_KEY", &key).once();
    run.assert_code(0);
    assert!(!run.stderr.contains("--encryption-key"), "{run}");
}

#[test]
fn pg_dump_blocked_on_a_lock_dies_with_a_sigkilled_backupd() {
    let Some(cluster) = cluster() else { return };
    // A session holding an ACCESS EXCLUSIVE lock until its stdin closes.
    let mut holder = cluster
        .client("psql", DB, PG_SUPERUSER, PG_SUPERUSER_PASSWORD)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start psql");
    let mut holder_in = holder.stdin.take().unwrap();
    holder_in
        .write_all(b"BEGIN;\nLOCK TABLE users IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    holder_in.flush().unwrap();
    let locked = poll(Duration::from_millis(100), Duration::from_secs(20), || {
        (cluster.psql(
            DB,
            "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted",
        ) == "1")
            .then_some(())
    });
    assert!(locked.is_some(), "the lock was never taken");

    let work = temp_dir();
    let mut backupd = Backupd::for_database(url(&cluster), &work.path().join("backups"))
        .path_prepend(&cluster.bin)
        .background(&["once"]);
    let waiting = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        (cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'backupd' AND wait_event_type = 'Lock'",
        ) != "0")
            .then_some(())
    });
    assert!(
        waiting.is_some(),
        "pg_dump never waited for the lock:\n{}",
        backupd.log()
    );
    let pg_dump: Vec<u32> = children_of(backupd.pid())
        .into_iter()
        .filter(|(_, name)| name == "pg_dump")
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(pg_dump.len(), 1, "{:?}", children_of(backupd.pid()));

    backupd.signal("KILL");
    backupd
        .wait_exit(Duration::from_secs(10))
        .expect("backupd did not die of SIGKILL");
    let gone = poll(Duration::from_millis(50), Duration::from_secs(10), || {
        (!process_alive(pg_dump[0])).then_some(())
    });
    drop(holder_in);
    let _ = holder.wait();
    assert!(
        gone.is_some(),
        "pg_dump (pid {}) outlived its SIGKILLed parent",
        pg_dump[0]
    );
}
