//! Lifecycle hooks (`HOOK_*`) run by the real binary: a hook's environment
//! holds none of backupd's secrets, only `BACKUPD_*` context; a hung hook
//! is killed at `HOOK_TIMEOUT_SECONDS` with every process it started; a
//! failing before-backup hook aborts the run naming it, a failing
//! after-backup hook keeps the backup; an after-restore hook sees the
//! restored database while the app's container is still stopped.

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
