//! Restore drills as the operator runs them: `backupd drill` loads a backup
//! into a scratch database `<db>_drill_<stamp>` (PostgreSQL, real clusters)
//! or a private copy (SQLite), compares every table's row count with the
//! backup's manifest, exits 0 or 1 with a reason naming the table, records
//! `last_drill*` in the status file, and leaves no scratch database behind:
//! not after a pass, not after a failure, and after a kill -9 mid-load the
//! next drill drops what was left (and nothing else).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use common::*;

/// Generous: a drill of the scale-1 fixtures takes a second or two.
const DRILL_GIVE_UP: Duration = Duration::from_secs(120);

// ------------------------------------------------------------ PostgreSQL

struct PgApp {
    cluster: PgCluster,
    work: TempDir,
}

/// A cluster with the fixtures at scale 1; the app's role gets CREATEDB
/// when `createdb`.
fn pg_app(createdb: bool) -> Option<PgApp> {
    let bin = require_postgres()?;
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    if createdb {
        cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    }
    Some(PgApp {
        cluster,
        work: temp_dir(),
    })
}

impl PgApp {
    fn dir(&self) -> PathBuf {
        self.work.path().join("backups")
    }

    fn backupd(&self) -> Backupd {
        self.cluster.backupd(&self.dir())
    }

    fn drill(&self, args: &[&str]) -> RunResult {
        let mut argv = vec!["drill"];
        argv.extend_from_slice(args);
        self.backupd().run_bounded(&argv, DRILL_GIVE_UP)
    }

    /// A backup taken by `once`, with its manifest: the one backupd wrote,
    /// or (where `once` writes none yet) one recording the live counts.
    fn backup(&self) -> PathBuf {
        let backup = self.backupd().once().backup_path();
        ensure_manifest(&backup, "postgres", || self.cluster.row_counts(PG_APP_DB));
        backup
    }

    /// Databases of the drill's name form (`appdb_drill_<stamp>`).
    fn scratch_databases(&self) -> Vec<String> {
        self.cluster
            .databases()
            .into_iter()
            .filter(|d| is_scratch_name(d))
            .collect()
    }

    fn status(&self) -> serde_json::Value {
        read_status(&status_path(&self.dir()))
    }
}

/// `appdb_drill_YYYYMMDDTHHMMSS.ffffffZ`.
fn is_scratch_name(name: &str) -> bool {
    name.strip_prefix("appdb_drill_").is_some_and(|stamp| {
        stamp.len() == 23 && stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z')
    })
}

/// Writes a manifest claiming `counts` beside `backup` unless backupd wrote
/// one there.
fn ensure_manifest(
    backup: &Path,
    kind: &str,
    counts: impl FnOnce() -> std::collections::BTreeMap<String, u64>,
) {
    if backupd::manifest::manifest_path(backup).exists() {
        return;
    }
    let counts = counts();
    let tables: Vec<(&str, u64)> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    write_manifest_claiming(backup, kind, &tables);
}

fn assert_drill_status(status: &serde_json::Value, file: &Path, result: &str) {
    assert_eq!(status["last_drill_result"], result, "{status:#}");
    assert_eq!(
        status["last_drill_file"].as_str(),
        Some(file.to_str().unwrap()),
        "{status:#}"
    );
    let at = status["last_drill"].as_str().unwrap_or_default();
    assert!(is_utc_second_timestamp(at), "last_drill `{at}`: {status:#}");
    assert!(
        status["last_drill_duration_seconds"].as_f64().is_some(),
        "{status:#}"
    );
    if result == "passed" {
        assert!(status["last_drill_error"].is_null(), "{status:#}");
    } else {
        assert!(status["last_drill_error"].is_string(), "{status:#}");
    }
}

#[test]
fn a_good_postgres_backup_passes_and_its_scratch_database_is_dropped() {
    let Some(app) = pg_app(true) else {
        return;
    };
    let backup = app.backup();
    let tables = app.cluster.row_counts(PG_APP_DB).len();

    let run = app.drill(&[]);
    run.assert_code(0).assert_not_shown(PG_APP_PASSWORD);
    assert!(
        run.stdout.contains("drill passed")
            && run
                .stdout
                .contains(&format!("checked {tables} tables against")),
        "{run}"
    );
    assert!(
        run.stdout.starts_with(backup.to_str().unwrap()),
        "`latest` is the backup just taken:\n{run}"
    );
    assert_eq!(app.scratch_databases(), Vec::<String>::new());
    let status = app.status();
    assert_drill_status(&status, &backup, "passed");
    assert!(
        status["last_drill_manifest"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("checked {tables} tables against ")),
        "{status:#}"
    );
    // The live database is the drill's source, never its target.
    assert_eq!(app.cluster.row_counts(PG_APP_DB).len(), tables);
}

#[test]
fn a_manifest_claiming_other_counts_fails_the_drill_naming_the_table() {
    let Some(app) = pg_app(true) else {
        return;
    };
    let backup = app.backup();
    let users = app.cluster.row_counts(PG_APP_DB)["public.users"];
    edit_manifest_count(&backup, "public.users", users + 1);

    let run = app.drill(&[backup.to_str().unwrap()]);
    run.assert_code(1).assert_stderr_mentions(&[
        &format!("drill of {} failed", backup.display()),
        &format!(
            "public.users: {users} rows, the manifest says {}",
            users + 1
        ),
    ]);
    assert_eq!(
        app.scratch_databases(),
        Vec::<String>::new(),
        "a failed drill drops its scratch database too"
    );
    let status = app.status();
    assert_drill_status(&status, &backup, "failed");
    assert!(
        status["last_drill_error"]
            .as_str()
            .unwrap_or_default()
            .contains("public.users"),
        "{status:#}"
    );
}

#[test]
fn without_createdb_the_drill_says_so_and_drill_database_url_names_another_place() {
    let Some(app) = pg_app(false) else {
        return;
    };
    let backup = app.backup();

    let refused = app.drill(&[]);
    refused.assert_code(1).assert_stderr_mentions(&[
        "CREATEDB",
        "DRILL_DATABASE_URL",
        "nothing was loaded",
    ]);
    assert_eq!(app.scratch_databases(), Vec::<String>::new());

    // A role that may create databases, on the server DRILL_DATABASE_URL names.
    app.cluster.create_role("driller", "drill-pw-31");
    app.cluster.psql("postgres", "ALTER ROLE driller CREATEDB");
    let drill_url = app
        .cluster
        .url("postgresql", "driller", "drill-pw-31", "postgres");
    let run = app
        .backupd()
        .env("DRILL_DATABASE_URL", &drill_url)
        .run_bounded(&["drill"], DRILL_GIVE_UP);
    run.assert_code(0).assert_not_shown("drill-pw-31");
    assert!(run.stdout.contains("drill passed"), "{run}");
    assert_eq!(app.scratch_databases(), Vec::<String>::new());
    assert_drill_status(&app.status(), &backup, "passed");
}

#[test]
fn a_drill_killed_mid_load_leaves_its_scratch_database_to_the_next_drill() {
    let Some(app) = pg_app(true) else {
        return;
    };
    let good = app.backup();
    // A dump that sleeps half way through its load, so the kill lands there.
    let mut pg_dump = app
        .cluster
        .client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
    pg_dump.args(["--format=plain", "--no-owner", "--no-privileges"]);
    let (slow, _) = insert_in_middle(&run_ok(&mut pg_dump), "SELECT pg_sleep(60);");
    let slow_file = app.work.path().join("slow.sql.gz");
    write_gzip(&slow_file, slow.as_bytes());
    // Near misses of the drill's names, which are never a drill's to drop.
    app.cluster.createdb("appdb_drill_notes", PG_APP_USER);
    app.cluster
        .createdb("appdb_restore_20261201T030000.000000Z", PG_APP_USER);

    let mut killed = app
        .backupd()
        .background(&["drill", slow_file.to_str().unwrap()]);
    let loading = poll(Duration::from_millis(100), DRILL_GIVE_UP, || {
        let sleeping = app.cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'appdb\\_drill\\_%' \
             AND query LIKE '%pg_sleep%'",
        );
        (sleeping.trim() != "0").then_some(())
    });
    assert!(loading.is_some(), "the load never began:\n{}", killed.log());
    killed.signal("KILL");
    killed
        .wait_exit(Duration::from_secs(30))
        .expect("backupd dies on SIGKILL");
    let left = app.scratch_databases();
    assert_eq!(
        left.len(),
        1,
        "the killed drill's scratch database: {left:?}"
    );

    let run = app.drill(&[]);
    run.assert_code(0).assert_stderr_mentions(&[
        "dropped a scratch database left by an interrupted drill",
        &left[0],
    ]);
    assert_eq!(app.scratch_databases(), Vec::<String>::new());
    let databases = app.cluster.databases();
    for kept in [
        "appdb",
        "appdb_drill_notes",
        "appdb_restore_20261201T030000.000000Z",
    ] {
        assert!(
            databases.iter().any(|d| d == kept),
            "{kept} was dropped: {databases:?}"
        );
    }
    assert_drill_status(&app.status(), &good, "passed");
}

// ---------------------------------------------------------------- SQLite

/// backupd for `app` with its temporary folder (where the drill's private
/// folder goes) set to `tmp`.
fn sqlite_drill(app: &SqliteApp, tmp: &Path, args: &[&str]) -> RunResult {
    let mut argv = vec!["drill"];
    argv.extend_from_slice(args);
    app.backupd()
        .env("TMPDIR", tmp)
        .run_bounded(&argv, DRILL_GIVE_UP)
}

fn assert_empty(dir: &Path) {
    assert_eq!(
        dir_names(dir),
        Vec::<String>::new(),
        "the drill left files in {}",
        dir.display()
    );
}

#[test]
fn a_sqlite_backup_is_drilled_in_a_private_copy_that_is_removed_afterwards() {
    let app = SqliteApp::fixture(1, true);
    let tmp = temp_dir();
    let backup = app.backupd().once().backup_path();
    ensure_manifest(&backup, "sqlite", || {
        sqlite_row_counts(&rusqlite::Connection::open(&app.db).unwrap())
    });
    let counts = sqlite_row_counts(&rusqlite::Connection::open(&app.db).unwrap());
    let (table, rows) = counts
        .iter()
        .find(|(_, n)| **n > 0)
        .map(|(t, n)| (t.clone(), *n))
        .expect("the fixture has rows");

    let run = sqlite_drill(&app, tmp.path(), &[]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("drill passed")
            && run
                .stdout
                .contains(&format!("checked {} tables against", counts.len())),
        "{run}"
    );
    assert_empty(tmp.path());
    assert_drill_status(&read_status(&app.status_file()), &backup, "passed");

    edit_manifest_count(&backup, &table, rows + 5);
    let run = sqlite_drill(&app, tmp.path(), &[backup.to_str().unwrap()]);
    run.assert_code(1).assert_stderr_mentions(&[&format!(
        "{table}: {rows} rows, the manifest says {}",
        rows + 5
    )]);
    assert_empty(tmp.path());
    assert_drill_status(&read_status(&app.status_file()), &backup, "failed");
}

#[test]
fn without_a_manifest_a_sound_backup_passes_and_says_no_counts_were_compared() {
    let app = SqliteApp::small(40);
    let tmp = temp_dir();
    let backup = app.backupd().once().backup_path();
    let _ = fs::remove_file(backupd::manifest::manifest_path(&backup));

    let run = sqlite_drill(&app, tmp.path(), &[]);
    run.assert_code(0)
        .assert_stderr_mentions(&["row counts not compared", "no manifest"]);
    assert!(run.stdout.contains("row counts not compared"), "{run}");
    let status = read_status(&app.status_file());
    assert_drill_status(&status, &backup, "passed");
    assert!(
        status["last_drill_manifest"]
            .as_str()
            .unwrap_or_default()
            .starts_with("row counts not compared: no manifest"),
        "{status:#}"
    );
    assert_empty(tmp.path());
}

#[test]
fn an_encrypted_backup_is_decrypted_privately_and_drilled() {
    let app = SqliteApp::small(25);
    let tmp = temp_dir();
    let key = Backupd::new()
        .run(&["keygen"])
        .last_line()
        .trim()
        .to_string();
    let backupd = app.backupd().env("BACKUP_ENCRYPTION_KEY", &key);
    let backup = backupd.once().backup_path();
    assert!(file_name(&backup).ends_with(".enc"), "{}", backup.display());
    ensure_manifest(&backup, "sqlite", || {
        sqlite_row_counts(&rusqlite::Connection::open(&app.db).unwrap())
    });

    let run = backupd
        .env("TMPDIR", tmp.path())
        .run_bounded(&["drill"], DRILL_GIVE_UP);
    run.assert_code(0).assert_not_shown(&key);
    assert!(run.stdout.contains("checked 1 table against"), "{run}");
    assert_empty(tmp.path());

    // Without the key there is nothing to load: a failure that says why.
    let run = sqlite_drill(&app, tmp.path(), &[]);
    run.assert_code(1)
        .assert_stderr_mentions(&["no encryption key is configured"]);
    assert_empty(tmp.path());
}

#[test]
fn a_postgres_backup_is_refused_for_a_sqlite_database_and_nothing_is_loaded() {
    let app = SqliteApp::small(5);
    let tmp = temp_dir();
    fs::create_dir_all(&app.dir).unwrap();
    let dump = app.dir.join("pg_dump-20261201T030000Z.sql.gz");
    write_gzip(&dump, b"-- PostgreSQL database dump complete\n");
    let run = sqlite_drill(&app, tmp.path(), &[dump.to_str().unwrap()]);
    run.assert_code(1).assert_stderr_mentions(&[
        "does not pass the restore check",
        "the configured database is SQLite",
    ]);
    assert_empty(tmp.path());
    // `latest` looks only at the configured database's kind.
    let run = sqlite_drill(&app, tmp.path(), &[]);
    run.assert_code(1)
        .assert_stderr_mentions(&["no backup written by backupd for this sqlite database"]);
    assert!(
        read_status(&app.status_file())["last_drill_file"].is_null(),
        "no file was drilled"
    );
}
