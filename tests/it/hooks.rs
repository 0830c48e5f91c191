//! Lifecycle hooks (`HOOK_*`) run by the real binary: a hook's environment
//! holds none of backupd's secrets, only `BACKUPD_*` context; a hung hook
//! is killed at `HOOK_TIMEOUT_SECONDS` with every process it started; a
//! failing before-backup hook aborts the run naming it, a failing
//! after-backup hook keeps the backup; an after-restore hook sees the
//! restored database while the app's container is still stopped; a hook
//! of backupd's uid cannot read backupd's `/proc/PID/environ`; the hook
//! commands show neither in `--help` nor in the debug log.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

const GIVE_UP: Duration = Duration::from_secs(120);

/// `sh` that writes its own environment (as the kernel holds it for the
/// process, `/proc/PID/environ`) and that of a child it starts into `out`.
fn environ_spy(out: &Path) -> String {
    format!(
        "tr '\\0' '\\n' < /proc/$$/environ > '{out}'; sh -c 'tr \"\\0\" \"\\n\" < /proc/$$/environ' >> '{out}'",
        out = out.display()
    )
}

/// Every live process in process group `pgid` (zombies left out).
fn group_members(pgid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // state ppid pgrp …
        if fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X") {
            found.push(stat.trim().to_string());
        }
    }
    found
}

/// The names of the backups in `dir` (no status file, lock or sidecar).
fn backups_in(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.') && !n.ends_with(".json") && !n.ends_with(".sha256"))
        .collect()
}

#[test]
fn a_hook_sees_no_secret_of_backupd_only_its_context() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    let work = temp_dir();
    let dir = work.path().join("backups");
    let (before, after) = (
        work.path().join("before.env"),
        work.path().join("after.env"),
    );
    let key = Backupd::new().run(&["keygen"]);
    let key = key.assert_code(0).last_line().trim().to_string();
    let aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-hooks";
    let notify_token = "notify-secret-token-7c1e";
    let notify_urls =
        format!("http://127.0.0.1:9/{notify_token},ntfy://user:ntfy-pass-3b@127.0.0.1:9/t");
    let run = cluster
        .backupd(&dir)
        .env("BACKUP_ENCRYPTION_KEY", &key)
        .env("AWS_ACCESS_KEY_ID", "AKIAHOOKSEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", aws_secret)
        .env("AWS_SESSION_TOKEN", "session-token-of-hooks-test")
        .env("NOTIFY_URLS", &notify_urls)
        .env("STATUS_TOKEN", "status-token-of-hooks-test")
        .env("HOOK_BEFORE_BACKUP", environ_spy(&before))
        .env("HOOK_AFTER_BACKUP", environ_spy(&after))
        .run_bounded(&["once"], GIVE_UP);
    let backup = run.backup_path();

    let secrets = [
        ("the database URL", cluster.app_url()),
        ("the database password", PG_APP_PASSWORD.to_string()),
        ("the Fernet key", key.clone()),
        ("the AWS access key", "AKIAHOOKSEXAMPLE".to_string()),
        ("the AWS secret key", aws_secret.to_string()),
        (
            "the session token",
            "session-token-of-hooks-test".to_string(),
        ),
        ("a notification token", notify_token.to_string()),
        ("a notification password", "ntfy-pass-3b".to_string()),
        ("the status token", "status-token-of-hooks-test".to_string()),
    ];
    for (spy, event) in [(&before, "before-backup"), (&after, "after-backup")] {
        let env =
            fs::read_to_string(spy).unwrap_or_else(|e| panic!("{}: {e}\n{run}", spy.display()));
        for (what, secret) in &secrets {
            assert!(
                !env.contains(secret.as_str()),
                "{what} is in the hook's environment:\n{env}"
            );
        }
        for name in [
            "DATABASE_URL",
            "BACKUP_ENCRYPTION_KEY",
            "AWS_",
            "NOTIFY_URLS",
            "STATUS_TOKEN",
            "HOOK_",
            "PGPASS",
        ] {
            assert!(
                !env.lines().any(|l| l.starts_with(name)),
                "{name}… is in the hook's environment:\n{env}"
            );
        }
        assert!(env.contains(&format!("BACKUPD_EVENT={event}")), "{env}");
        assert!(env.contains("BACKUPD_DATABASE_KIND=postgresql"), "{env}");
        assert!(
            env.contains(&format!("BACKUPD_DATABASE_NAME={PG_APP_DB}")),
            "{env}"
        );
        assert!(
            env.contains(&format!("BACKUPD_DATABASE_PORT={}", cluster.port)),
            "{env}"
        );
    }
    let env = fs::read_to_string(&after).unwrap();
    assert!(
        env.contains(&format!("BACKUPD_FILE={}", backup.display())),
        "{env}"
    );
    assert!(
        env.contains(&format!("BACKUPD_SHA256={}", sha256_file(&backup))),
        "{env}"
    );
    assert!(
        env.contains(&format!(
            "BACKUPD_SIZE_BYTES={}",
            fs::metadata(&backup).unwrap().len()
        )),
        "{env}"
    );
    for (what, secret) in &secrets {
        assert!(
            !run.stderr.contains(secret.as_str()),
            "{what} is in the log:\n{run}"
        );
    }
}

#[test]
fn a_hung_hook_is_killed_at_the_timeout_with_its_children() {
    let app = SqliteApp::small(10);
    let work = app.work.path();
    let (shell, child) = (work.join("shell.pid"), work.join("child.pid"));
    let hook = format!(
        "echo $$ > '{}'; sleep 1000 & echo $! > '{}'; echo 'waiting for the lock server'; sleep 1000",
        shell.display(),
        child.display()
    );
    let run = app
        .backupd()
        .env("HOOK_BEFORE_BACKUP", hook)
        .env("HOOK_TIMEOUT_SECONDS", "2")
        .run_bounded(&["once"], GIVE_UP);
    run.assert_code(1).assert_stderr_mentions(&[
        "HOOK_BEFORE_BACKUP was killed after HOOK_TIMEOUT_SECONDS=2: waiting for the lock server",
    ]);
    let pid = |file: &Path| -> u32 { fs::read_to_string(file).unwrap().trim().parse().unwrap() };
    let (shell, child) = (pid(&shell), pid(&child));
    // The group is the shell's: nothing of it is left, the background
    // sleep included.
    let left = poll(Duration::from_millis(50), Duration::from_secs(10), || {
        let members = group_members(shell);
        members.is_empty().then_some(())
    });
    assert!(left.is_some(), "left running: {:?}", group_members(shell));
    assert!(
        !process_alive(child),
        "the hook's background child {child} lives on"
    );
    assert!(backups_in(&app.dir).is_empty(), "{:?}", dir_names(&app.dir));
    let status = read_status(&app.status_file());
    assert!(
        status["last_error"].as_str().is_some_and(
            |e| e.contains("HOOK_BEFORE_BACKUP was killed after HOOK_TIMEOUT_SECONDS=2")
        ),
        "{status}"
    );
}

#[test]
fn a_failing_before_hook_aborts_the_run_naming_it_and_no_backup_appears() {
    let app = SqliteApp::small(10);
    let told = app.work.path().join("told");
    let run = app
        .backupd()
        .env(
            "HOOK_BEFORE_BACKUP",
            "echo checking; echo 'maintenance window until 03:00' >&2; exit 3",
        )
        .env(
            "HOOK_BACKUP_FAILED",
            format!(
                "printf '%s|%s' \"$BACKUPD_EVENT\" \"$BACKUPD_ERROR\" > '{}'",
                told.display()
            ),
        )
        .run_bounded(&["once"], GIVE_UP);
    let reason = "HOOK_BEFORE_BACKUP exited with status 3: maintenance window until 03:00";
    run.assert_code(1)
        .assert_stderr_mentions(&[reason, "no backup was taken"]);
    assert!(backups_in(&app.dir).is_empty(), "{:?}", dir_names(&app.dir));
    let status = read_status(&app.status_file());
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(reason)),
        "{status}"
    );
    assert!(status["last_backup"].is_null(), "{status}");
    let told = fs::read_to_string(&told).unwrap();
    assert!(
        told.starts_with(&format!("backup-failed|{reason}")),
        "{told}"
    );
    // Its output went to the log.
    assert!(run.stderr.contains("checking"), "{run}");
}

#[test]
fn a_failing_after_hook_keeps_the_backup_and_is_recorded() {
    let app = SqliteApp::small(10);
    let run = app
        .backupd()
        .env(
            "HOOK_AFTER_BACKUP",
            "echo 'upload to the archive failed' >&2; exit 5",
        )
        .run_bounded(&["once"], GIVE_UP);
    let backup = run.backup_path();
    run.assert_stderr_mentions(&["hook failed", "HOOK_AFTER_BACKUP exited with status 5"]);
    assert_eq!(backups_in(&app.dir), [file_name(&backup)]);
    let status = read_status(&app.status_file());
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(
        status["last_hook_error"].as_str(),
        Some("HOOK_AFTER_BACKUP exited with status 5: upload to the archive failed"),
        "{status}"
    );
    assert_eq!(status["last_file"].as_str(), Some(backup.to_str().unwrap()));
}

/// A password file for the hook's own connection, as an operator would
/// mount one: the hook brings its credentials, backupd gives none.
fn hook_passfile(dir: &Path, cluster: &PgCluster) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hook.pgpass");
    fs::write(
        &path,
        format!(
            "127.0.0.1:{}:*:{PG_APP_USER}:{PG_APP_PASSWORD}\n",
            cluster.port
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn an_after_restore_hook_sees_the_restored_database_before_the_app_starts() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let Some(image) = common::docker::require_test_image() else {
        return;
    };
    let Some(_) = require_programs(&["docker"]) else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    cluster.psql_app(
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL); \
         INSERT INTO notes VALUES (1, 'first'), (2, 'second');",
    );
    let work = temp_dir();
    let backups = work.path().join("backups");
    let backup = cluster.backupd(&backups).once().backup_path();
    cluster
        .psql_app("DELETE FROM notes; INSERT INTO notes VALUES (3, 'written after the backup');");

    let web = common::docker::TestContainer::run_fast_stop(image, &[]);
    let seen = work.path().join("seen");
    let environ = work.path().join("restore-hook.env");
    let passfile = hook_passfile(work.path(), &cluster);
    // What the hook sees, then its fix-up of the restored database.
    let hook = format!(
        "set -e; tr '\\0' '\\n' < /proc/$$/environ > '{environ}'; export PGHOST=\"$BACKUPD_DATABASE_HOST\" PGPORT=\"$BACKUPD_DATABASE_PORT\" \
         PGDATABASE=\"$BACKUPD_DATABASE_NAME\" PGUSER={user} PGPASSFILE='{passfile}'; \
         rows=$(psql -X -A -t -c \"SELECT string_agg(body, ',' ORDER BY id) FROM notes\"); \
         running=$(docker inspect -f '{{{{.State.Running}}}}' {web}); \
         echo \"rows=$rows running=$running event=$BACKUPD_EVENT\" > '{seen}'; \
         psql -X -q -c \"UPDATE notes SET body = body || ' (fixed up)'\"",
        user = PG_APP_USER,
        passfile = passfile.display(),
        web = web.name,
        seen = seen.display(),
        environ = environ.display(),
    );
    let incoming = work.path().join("restore/incoming");
    fs::create_dir_all(&incoming).unwrap();
    let run = cluster
        .backupd(&backups)
        .env("RESTORE_WATCH_DIR", &incoming)
        .env("RESTORE_STATE_FILE", work.path().join("restore/state.json"))
        .env("RESTORE_STOP_CONTAINERS", &web.name)
        .env("RESTORE_STOP_TIMEOUT", "5")
        .env("RESTORE_STOP_WAIT_SECONDS", "0")
        .env("RESTORE_START_WAIT_SECONDS", "0")
        .env("HOOK_AFTER_RESTORE", hook)
        .run_bounded(&["restore", "--file", backup.to_str().unwrap()], GIVE_UP);
    run.assert_code(0);
    let seen =
        fs::read_to_string(&seen).unwrap_or_else(|e| panic!("the hook left nothing: {e}\n{run}"));
    assert_eq!(
        seen.trim(),
        "rows=first,second running=false event=after-restore",
        "{run}"
    );
    assert!(web.cli_running(), "the app did not start again:\n{run}");
    assert_eq!(
        cluster.psql_app("SELECT string_agg(body, ',' ORDER BY id) FROM notes"),
        "first (fixed up),second (fixed up)"
    );
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(work.path().join("restore/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["history"][0]["result"], "restored", "{state}");
    assert!(state["history"][0].get("hook_error").is_none(), "{state}");
    run.assert_not_shown(PG_APP_PASSWORD);
    let env = fs::read_to_string(&environ).unwrap();
    assert!(!env.contains(&cluster.app_url()), "{env}");
    assert!(!env.contains(PG_APP_PASSWORD), "{env}");
    assert!(
        !env.lines()
            .any(|l| l.starts_with("DATABASE_URL") || l.starts_with("PGPASS")),
        "{env}"
    );
    assert!(
        env.contains(&format!("BACKUPD_FILE={}", backup.display())),
        "{env}"
    );
}

#[test]
fn a_refusing_before_restore_hook_leaves_the_live_database_and_the_app_alone() {
    let app = SqliteApp::small(10);
    let backup = app.backupd().once().backup_path();
    let before = sqlite_contents(&rusqlite::Connection::open(&app.db).unwrap());
    let replaced = app.work.path().join("replaced.db");
    sqlite_small(&replaced, 3);
    fs::copy(&replaced, &app.db).unwrap();
    let live = sqlite_contents(&rusqlite::Connection::open(&app.db).unwrap());
    assert_ne!(before, live);
    let told = app.work.path().join("told");
    let incoming = app.work.path().join("restore/incoming");
    fs::create_dir_all(&incoming).unwrap();
    let run = app
        .backupd()
        .env("RESTORE_SQLITE_PATH", &app.db)
        .env("RESTORE_WATCH_DIR", &incoming)
        .env(
            "RESTORE_STATE_FILE",
            app.work.path().join("restore/state.json"),
        )
        .env(
            "HOOK_BEFORE_RESTORE",
            "echo 'the app is mid-migration' >&2; exit 2",
        )
        .env(
            "HOOK_RESTORE_FAILED",
            format!("printf '%s' \"$BACKUPD_ERROR\" > '{}'", told.display()),
        )
        .run_bounded(&["restore", "--file", backup.to_str().unwrap()], GIVE_UP);
    let reason = "HOOK_BEFORE_RESTORE exited with status 2: the app is mid-migration; nothing was stopped or restored";
    run.assert_code(1).assert_stderr_mentions(&[reason]);
    assert_eq!(
        sqlite_contents(&rusqlite::Connection::open(&app.db).unwrap()),
        live
    );
    assert_eq!(fs::read_to_string(&told).unwrap(), reason);
}

#[test]
fn hook_commands_show_neither_in_help_nor_in_the_debug_log() {
    let credential = "hook-pw-5d1c";
    let command = format!("true curl -fsS -u ops:{credential} https://h.invalid/ping");
    for (args, variable) in [
        (["once", "--help"], "HOOK_BEFORE_BACKUP"),
        (["backup", "--help"], "HOOK_AFTER_BACKUP"),
        (["restore", "--help"], "HOOK_AFTER_RESTORE"),
    ] {
        let help = Backupd::new().env(variable, &command).run(&args);
        help.assert_code(0);
        assert!(help.stdout.contains(variable), "{help}");
        assert!(
            !help.stdout.contains(credential) && !help.stderr.contains(credential),
            "{args:?} shows {variable}'s command:\n{help}"
        );
    }

    let app = SqliteApp::small(10);
    let run = app
        .backupd()
        .env("LOG_LEVEL", "debug")
        .env("HOOK_BEFORE_BACKUP", &command)
        .run_bounded(&["once"], GIVE_UP);
    run.assert_code(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains(r#"set: ["HOOK_BEFORE_BACKUP"]"#),
        "the debug log names the hooks set:\n{run}"
    );
    assert!(
        !all.contains(credential),
        "the command is in the log:\n{run}"
    );
}

/// A hook runs with backupd's uid, but backupd's own `/proc/PID/environ`
/// is closed to it (`PR_SET_DUMPABLE=0`); its own stays readable. Root
/// reads any process's, so backupd runs as nobody here.
#[test]
fn a_hook_of_the_same_uid_cannot_read_backupd_s_environment() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let Some(()) = require(
        "root (to run backupd as uid 65534)",
        is_root().then_some(()),
    ) else {
        return;
    };
    let Some(_) = require_program("setpriv") else {
        return;
    };
    const NOBODY: u32 = 65534;
    let app = SqliteApp::small(10);
    fs::set_permissions(app.work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&app.db, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir_all(&app.dir).unwrap();
    chown(&app.dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let spy = app.work.path().join("spy");
    fs::create_dir(&spy).unwrap();
    chown(&spy, Some(NOBODY), Some(NOBODY)).unwrap();
    let secret = "status-token-proc-spy-41a7";
    let hook = format!(
        "cd '{spy}'; cat /proc/$PPID/comm > parent.comm; \
         if tr '\\0' '\\n' < /proc/$PPID/environ > parent.env; \
         then echo readable > verdict; else echo refused > verdict; fi; \
         tr '\\0' '\\n' < /proc/$$/environ > own.env",
        spy = spy.display()
    );
    let run = app
        .backupd()
        .run_as_uid(NOBODY)
        .current_dir("/")
        .env("STATUS_TOKEN", secret)
        .env("HOOK_BEFORE_BACKUP", &hook)
        .run_bounded(&["once"], GIVE_UP);
    run.assert_code(0);
    let read = |name: &str| {
        fs::read_to_string(spy.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{run}"))
    };
    assert_eq!(read("parent.comm").trim(), "backupd", "{run}");
    // The redirection fails before the output file is made.
    let leaked = fs::read_to_string(spy.join("parent.env")).unwrap_or_default();
    assert_eq!(
        read("verdict").trim(),
        "refused",
        "the hook read /proc/$PPID/environ:\n{leaked}"
    );
    assert!(!leaked.contains(secret));
    assert!(
        run.stderr.contains("/environ: Permission denied"),
        "the refusal is in the hook's output:\n{run}"
    );
    assert!(read("own.env").contains("BACKUPD_EVENT=before-backup"));
}
