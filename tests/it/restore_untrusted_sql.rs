//! A restore file is untrusted data, never code (real PostgreSQL, the built
//! binary, the S3-protocol test server): a dropped `.sql` with psql
//! meta-commands runs nothing, reads nothing and writes nothing outside,
//! whether it comes through the watch folder, `--file` or `--from-s3`, and
//! the reason names the meta-command; server-side programs and files are
//! refused; psql's restricted mode stops what the scan cannot see; a
//! genuine pg_dump 15 dump (with its own `\restrict`) still restores; a
//! dump of another application is refused unless allowed; two restores in
//! a row never collide on names; staging databases left by an interrupted
//! restore are dropped at start-up.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backupd::db::{Database, PgTarget};
use backupd::restore::input::Input;
use backupd::restore::kind::classify;
use backupd::restore::postgres::{Options, Strategy, restore};
use common::s3::S3Server;
use common::*;
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const GIVE_UP: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_millis(100);

/// A cluster with the app's database (fixtures at scale 1, CREATEDB) and a
/// second database `otherdb` with a table of its own; the restore service's
/// folders in a temporary directory.
struct Stack {
    cluster: PgCluster,
    work: TempDir,
    incoming: PathBuf,
    failed: PathBuf,
    state: PathBuf,
}

impl Stack {
    fn start() -> Option<Stack> {
        let bin = require_postgres()?;
        require_programs(&["psql", "pg_dump", "pg_restore"])?;
        let cluster = PgCluster::start_with_app(&bin, Some(1));
        cluster.psql("postgres", "ALTER ROLE app CREATEDB");
        cluster.createdb("otherdb", PG_APP_USER);
        cluster.psql_as(
            "otherdb",
            PG_APP_USER,
            PG_APP_PASSWORD,
            "CREATE TABLE untouched (x int); INSERT INTO untouched VALUES (42)",
        );
        let work = temp_dir();
        let incoming = work.path().join("restore/incoming");
        fs::create_dir_all(&incoming).unwrap();
        Some(Stack {
            cluster,
            failed: work.path().join("restore/failed"),
            state: work.path().join("restore/state/restore-state.json"),
            incoming,
            work,
        })
    }

    fn backupd_as(&self, url: &str) -> Backupd {
        Backupd::for_database(url, &self.work.path().join("backups"))
            .env("RESTORE_WATCH_DIR", &self.incoming)
            .env("RESTORE_STATE_FILE", &self.state)
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1")
            .env("RESTORE_SAFETY_BACKUP", "false")
            .path_prepend(&self.cluster.bin)
    }

    fn backupd(&self) -> Backupd {
        self.backupd_as(&self.cluster.app_url())
    }

    /// A plain pg_dump of the app's database (pg_dump 15 writes its own
    /// `\restrict KEY` … `\unrestrict KEY`).
    fn plain_dump(&self) -> String {
        self.dump_of(PG_APP_DB)
    }

    fn dump_of(&self, db: &str) -> String {
        let mut cmd = self
            .cluster
            .client("pg_dump", db, PG_APP_USER, PG_APP_PASSWORD);
        cmd.args(["--format=plain", "--no-owner", "--no-privileges"]);
        let out = cmd.output().expect("run pg_dump");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("a plain dump is text")
    }

    /// The contents of the app's and the other database: equal before and
    /// after means neither was touched.
    fn fingerprint(&self) -> (std::collections::BTreeMap<String, (i64, String)>, String) {
        (
            self.cluster.table_checksums(PG_APP_DB),
            self.cluster
                .psql("otherdb", "SELECT string_agg(x::text, ',') FROM untouched"),
        )
    }

    fn databases(&self) -> Vec<String> {
        self.cluster
            .psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
            )
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let dir = self.work.path().join("made");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    fn state_text(&self) -> String {
        fs::read_to_string(&self.state).unwrap_or_default()
    }

    /// Moves `src` into the watch folder as `name` and waits until the
    /// service moved it to the failed folder; returns its reason.
    fn drop_and_wait_refused(&self, service: &Daemon, src: &Path, name: &str) -> String {
        let tmp = self.incoming.join(format!(".{name}.part"));
        fs::copy(src, &tmp).unwrap();
        fs::rename(&tmp, self.incoming.join(name)).unwrap();
        let reason_file = self.failed.join(format!("{name}.reason.json"));
        let deadline = std::time::Instant::now() + GIVE_UP;
        while !reason_file.is_file() || self.incoming.join(name).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "`{name}` never reached the failed folder:\n{}",
                service.log()
            );
            std::thread::sleep(STEP);
        }
        let reason: Value =
            serde_json::from_str(&fs::read_to_string(&reason_file).unwrap()).unwrap();
        reason["reason"].as_str().unwrap_or_default().to_string()
    }
}

/// `sql` with `line` inserted right after the first `SET` line: outside
/// COPY data, long before the trailer (which stays intact).
fn with_line(sql: &str, line: &str) -> String {
    let at = sql.find("\nSET ").expect("a SET near the top") + 1;
    format!("{}{line}\n{}", &sql[..at], &sql[at..])
}

/// One evil line per meta-command, what it would leave behind, and the
/// name the reason must carry.
struct Evil {
    line: String,
    command: &'static str,
}

fn evil_lines(marker_dir: &Path, secret: &Path) -> Vec<Evil> {
    let touch = |n: &str| marker_dir.join(n).display().to_string();
    vec![
        Evil {
            line: format!("\\! touch {}", touch("shell")),
            command: "\\!",
        },
        Evil {
            line: format!("\\o |touch {}", touch("pipe")),
            command: "\\o",
        },
        Evil {
            line: format!(
                "\\copy (select 1) TO PROGRAM 'touch {}'",
                touch("copy-program")
            ),
            command: "\\copy",
        },
        Evil {
            line: format!("\\i {}", secret.display()),
            command: "\\i",
        },
        Evil {
            line: "\\c otherdb".into(),
            command: "\\c",
        },
    ]
}

/// After `\c otherdb`, the rest of the file would write there.
const AFTER_CONNECT: &str = "DROP TABLE IF EXISTS untouched;";

fn assert_nothing_ran(marker_dir: &Path, what: &str) {
    let left: Vec<String> = fs::read_dir(marker_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{what}: a command ran and left {left:?}");
}

#[test]
fn meta_commands_in_a_restore_file_run_nothing_through_the_service_file_and_s3() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let Some(s3) = S3Server::start() else {
        return;
    };
    let markers = stack.work.path().join("markers");
    fs::create_dir_all(&markers).unwrap();
    let secret_value = format!("TOPSECRET-{}", std::process::id());
    let secret = stack.work.path().join("keyfile");
    fs::write(&secret, format!("SELECT '{secret_value}';\n")).unwrap();
    let dump = stack.plain_dump();
    let before = stack.fingerprint();
    let evils = evil_lines(&markers, &secret);

    // The service: each file is refused at check time, naming the command.
    let mut service = stack.backupd().background(&["restore"]);
    assert!(
        service.wait_for_log(GIVE_UP, |l| l.contains("watching")),
        "{}",
        service.log()
    );
    for (i, evil) in evils.iter().enumerate() {
        let sql = with_line(&dump, &evil.line).replace(
            "\n-- PostgreSQL database dump complete",
            &format!("\n{AFTER_CONNECT}\n-- PostgreSQL database dump complete"),
        );
        let name = format!("pg_dump-evil-{i}.sql");
        let src = stack.write(&name, &sql);
        let reason = stack.drop_and_wait_refused(&service, &src, &name);
        assert!(
            reason.contains(&format!("psql meta-command {} ", evil.command))
                && reason.starts_with("line "),
            "{}: {reason}",
            evil.line
        );
        assert_nothing_ran(&markers, &evil.line);
        assert_eq!(stack.fingerprint(), before, "{}", evil.line);
    }
    let log = service.stop_cleanly().to_string();
    for (what, text) in [
        ("the log", log.clone()),
        ("the state file", stack.state_text()),
    ] {
        assert!(
            !text.contains(&secret_value),
            "{what} shows the secret file"
        );
    }
    for entry in fs::read_dir(&stack.failed).unwrap().flatten() {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".reason.json")
        {
            assert!(
                !text.contains(&secret_value),
                "{:?} shows the secret",
                entry.path()
            );
        }
    }

    // --file: the same files, the same refusals, exit 1.
    for (i, evil) in evils.iter().enumerate() {
        let src = stack.write(&format!("given-{i}.sql"), &with_line(&dump, &evil.line));
        let run = stack
            .backupd()
            .run(&["restore", "--file", src.to_str().unwrap()]);
        run.assert_code(1)
            .assert_stderr_mentions(&[&format!("psql meta-command {}", evil.command)])
            .assert_not_shown(&secret_value);
        assert!(src.exists(), "a --file file is never moved");
        assert_nothing_ran(&markers, &evil.line);
    }
    assert!(!stack.state_text().contains(&secret_value));

    // --from-s3: an object (with its sidecar) planted in the bucket.
    let name = "pg_dump-20261201T000000Z.sql";
    let object = s3.object_path(name);
    fs::create_dir_all(object.parent().unwrap()).unwrap();
    fs::write(&object, with_line(&dump, &evils[0].line)).unwrap();
    write_sidecar(&object);
    let mut remote = stack.backupd();
    for (k, v) in s3.env() {
        remote = remote.env(&k, v);
    }
    let run = remote.run(&["restore", "--from-s3", name]);
    run.assert_code(1)
        .assert_stderr_mentions(&["psql meta-command \\!"])
        .assert_not_shown(s3.secret_key());
    assert_nothing_ran(&markers, "--from-s3");
    assert_eq!(stack.fingerprint(), before);
    assert!(
        !stack.databases().iter().any(|d| d.contains("_restore_")),
        "{:?}",
        stack.databases()
    );
}

#[test]
fn server_side_programs_and_files_are_refused_with_a_reason() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let dump = stack.plain_dump();
    let before = stack.fingerprint();
    let marker = stack.work.path().join("server-program-ran");
    for (sql, says) in [
        (
            format!("COPY (SELECT 1) TO PROGRAM 'touch {}';", marker.display()),
            "COPY … PROGRAM",
        ),
        (
            "SELECT lo_import('/etc/passwd');".to_string(),
            "lo_import()",
        ),
        (
            "SELECT pg_read_file('/etc/passwd');".to_string(),
            "pg_read_file()",
        ),
    ] {
        let src = stack.write("server.sql", &with_line(&dump, &sql));
        let run = stack
            .backupd()
            .run(&["restore", "--file", src.to_str().unwrap()]);
        run.assert_code(1)
            .assert_stderr_mentions(&[says, "database server"]);
        assert!(!marker.exists(), "{sql} ran");
    }
    // Large objects as pg_dump writes them (lo_create, lo_open, lowrite) pass.
    stack.cluster.psql_as(
        PG_APP_DB,
        PG_APP_USER,
        PG_APP_PASSWORD,
        "SELECT lo_from_bytea(0, 'blob')",
    );
    let with_blob = stack.write("blob.sql", &stack.plain_dump());
    assert!(fs::read_to_string(&with_blob).unwrap().contains("lowrite"));
    let run = stack
        .backupd()
        .run(&["restore", "--file", with_blob.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(stack.fingerprint(), before);
}

fn target_of(url: &str) -> PgTarget {
    let Database::Postgres(target) = Database::parse(url, "DATABASE_URL").unwrap() else {
        panic!("not PostgreSQL");
    };
    target
}

#[tokio::test(flavor = "current_thread")]
async fn psql_restricted_mode_refuses_meta_commands_the_scan_never_saw() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let target = target_of(&stack.cluster.app_url());
    let before = stack.fingerprint();
    let marker = stack.work.path().join("restricted-shell-ran");
    // Straight into the library's restore, without the check: only psql's
    // restricted mode stands in the way. The file even tries to lift it.
    let sql = with_line(
        &stack.plain_dump(),
        &format!(
            "\\unrestrict guessedkey\nSELECT 1; \\! touch {}",
            marker.display()
        ),
    );
    let file = stack.write("bypass.sql", &sql);
    let opts = Options {
        strategy: Strategy::Staging,
        keep_previous: 1,
        stamp: "20261201T000000.000001Z".into(),
    };
    let input = Input::open(&file).expect("a readable restore input");
    let err = restore(
        &target,
        &input,
        classify("bypass.sql").unwrap(),
        &opts,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    eprintln!("{err}");
    assert!(err.contains("restricted"), "{err}");
    assert!(err.contains("the live database was not changed"), "{err}");
    assert!(!marker.exists(), "psql ran the shell command");
    assert_eq!(stack.fingerprint(), before);
    assert_eq!(stack.databases(), ["appdb", "otherdb", "postgres"]);
}

#[test]
fn a_genuine_pg_dump_15_dump_with_its_own_restrict_still_restores() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let dump = stack.plain_dump();
    assert!(
        dump.lines().any(|l| l.starts_with("\\restrict "))
            && dump.lines().any(|l| l.starts_with("\\unrestrict ")),
        "this pg_dump writes no \\restrict"
    );
    let source = stack.cluster.table_checksums(PG_APP_DB);
    stack.cluster.psql_app("DELETE FROM audit_log");
    let file = stack.write("pg_dump-genuine.sql", &dump);
    let gz = stack.work.path().join("made/pg_dump-genuine.sql.gz");
    write_gzip(&gz, dump.as_bytes());
    for f in [&file, &gz] {
        stack
            .backupd()
            .run(&["restore", "--file", f.to_str().unwrap()])
            .assert_code(0);
        assert_eq!(stack.cluster.table_checksums(PG_APP_DB), source);
        stack.cluster.psql_app("DELETE FROM audit_log");
    }
}

#[test]
fn a_dump_of_another_application_is_refused_unless_allowed() {
    let Some(stack) = Stack::start() else {
        return;
    };
    stack.cluster.createdb("shop", PG_APP_USER);
    stack.cluster.psql_as(
        "shop",
        PG_APP_USER,
        PG_APP_PASSWORD,
        "CREATE TABLE widgets (id int); INSERT INTO widgets VALUES (1), (2)",
    );
    let before = stack.fingerprint();
    let plain = stack.write("pg_dump-shop.sql", &stack.dump_of("shop"));
    let custom = stack.work.path().join("made/pg_dump-shop.dump");
    let mut cmd = stack
        .cluster
        .client("pg_dump", "shop", PG_APP_USER, PG_APP_PASSWORD);
    cmd.args(["--format=custom", "-f"]).arg(&custom);
    run_ok(&mut cmd);
    for file in [&plain, &custom] {
        let run = stack
            .backupd()
            .run(&["restore", "--file", file.to_str().unwrap()]);
        run.assert_code(1).assert_stderr_mentions(&[
            "shares no table",
            "public.widgets",
            "non-empty table(s) (public.",
            "RESTORE_ALLOW_SCHEMA_CHANGE",
        ]);
        assert_eq!(stack.fingerprint(), before, "{}", file.display());
    }
    stack
        .backupd()
        .env("RESTORE_ALLOW_SCHEMA_CHANGE", "true")
        .run(&["restore", "--file", plain.to_str().unwrap()])
        .assert_code(0);
    assert_eq!(
        stack
            .cluster
            .psql_app("SELECT count(*) FROM widgets")
            .trim(),
        "2"
    );
    // The live database now holds only widgets; an empty one takes anything.
    stack.cluster.psql_app("TRUNCATE widgets");
    let app = stack.write("pg_dump-app.sql", &stack.dump_of("otherdb"));
    stack
        .backupd()
        .run(&["restore", "--file", app.to_str().unwrap()])
        .assert_code(0);
}

#[test]
fn two_restores_in_a_row_both_succeed_with_distinct_previous_databases() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let file = stack.write("pg_dump-twice.sql", &stack.plain_dump());
    let b = stack.backupd().env("RESTORE_KEEP_PREVIOUS", "5");
    // Started together: the second waits for the restore lock and starts
    // right after the first (often within the same second, which used to
    // collide on `appdb_pre_restore_<second>`).
    let first = b.spawn(&["restore", "--file", file.to_str().unwrap()]);
    let second = b.spawn(&["restore", "--file", file.to_str().unwrap()]);
    finish(first).assert_code(0);
    finish(second).assert_code(0);
    let previous: Vec<String> = stack
        .databases()
        .into_iter()
        .filter(|d| d.starts_with("appdb_pre_restore_"))
        .collect();
    assert_eq!(previous.len(), 2, "{previous:?}");
    assert_ne!(previous[0], previous[1]);
    for name in &previous {
        assert!(name.len() <= 63, "{name}");
    }
    let state: Value = serde_json::from_str(&stack.state_text()).unwrap();
    let recorded: Vec<&str> = state["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["previous_database"].as_str())
        .collect();
    assert_eq!(recorded.len(), 2, "{state:#}");
    assert_ne!(recorded[0], recorded[1]);
}

#[test]
fn leftover_staging_databases_are_dropped_at_start_up_and_a_superuser_is_warned_about() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let ours = [
        "appdb_restore_20261130T010203.456789Z",
        // Left by a backupd from before stamps had microseconds.
        "appdb_restore_20261130T010203Z",
    ];
    let not_ours = [
        "appdb_restore_manual",
        "otherdb_restore_20261130T010203.456789Z",
        "appdb_pre_restore_20261130T010203.456789Z",
    ];
    for name in ours.iter().chain(&not_ours) {
        stack.cluster.createdb(name, PG_APP_USER);
    }
    let mut service = stack.backupd().background(&["restore"]);
    assert!(
        service.wait_for_log(GIVE_UP, |l| l.contains("watching")),
        "{}",
        service.log()
    );
    let log = service.stop_cleanly().to_string();
    let names = stack.databases();
    for name in ours {
        assert!(!names.iter().any(|n| n == name), "{name} left:\n{log}");
        assert!(log.contains(name), "dropping {name} is not logged:\n{log}");
    }
    for name in not_ours {
        assert!(
            names.iter().any(|n| n == name),
            "{name} was dropped:\n{log}"
        );
    }
    assert!(!log.contains("is a superuser"), "{log}");

    // As the cluster's superuser, a one-shot plan warns at start-up.
    let admin = stack
        .cluster
        .url("postgresql", PG_SUPERUSER, PG_SUPERUSER_PASSWORD, PG_APP_DB);
    let file = stack.write("pg_dump-plan.sql", &stack.plain_dump());
    stack
        .backupd_as(&admin)
        .run(&["restore", "--file", file.to_str().unwrap(), "--dry-run"])
        .assert_code(0)
        .assert_stderr_mentions(&["superuser", "CREATEDB"])
        .assert_not_shown(PG_SUPERUSER_PASSWORD);
}
