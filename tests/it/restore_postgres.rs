//! Restoring a PostgreSQL dump into the live database (library level, real
//! throwaway clusters): a good dump replaces the contents and the old
//! database is kept; any failure leaves the live database exactly as it was.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backupd::Error;
use backupd::db::{Database, PgTarget};
use backupd::restore::input::Input;
use backupd::restore::kind::classify;
use backupd::restore::postgres::{
    Options, Report, Server, Strategy, previous_name, recover, restore, staging_name,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use common::*;

const STAMP1: &str = "20261129T030405Z";
const STAMP2: &str = "20261130T030405Z";

struct Pg {
    cluster: PgCluster,
    target: PgTarget,
    work: TempDir,
}

/// A cluster with the fixtures at scale 1 in the app's database; the app's
/// role gets CREATEDB when `createdb`.
fn start(createdb: bool) -> Option<Pg> {
    let bin = require_postgres()?;
    require_programs(&["psql", "pg_restore"])?;
    let cluster = PgCluster::start_with_app(&bin, Some(1));
    if createdb {
        cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    }
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

/// The bytes of a plain dump psql is fed: its own `\restrict`/`\unrestrict`
/// lines are blanked (their line breaks stay), as backupd runs psql in
/// restricted mode under its own key.
fn fed_len(sql: &str) -> u64 {
    let blanked: usize = sql
        .lines()
        .filter(|l| l.starts_with("\\restrict ") || l.starts_with("\\unrestrict "))
        .map(str::len)
        .sum();
    (sql.len() - blanked) as u64
}

fn options(stamp: &str, strategy: Strategy, keep_previous: usize) -> Options {
    Options {
        strategy,
        keep_previous,
        stamp: stamp.to_string(),
    }
}

impl Pg {
    /// pg_dump of the app's database in `format` (plain or custom).
    fn dump(&self, format: &str) -> Vec<u8> {
        let mut cmd = self
            .cluster
            .client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
        cmd.arg(format!("--format={format}"))
            .args(["--no-owner", "--no-privileges"]);
        let out = cmd.output().expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn plain_dump(&self) -> String {
        String::from_utf8(self.dump("plain")).unwrap()
    }

    /// Writes `data` as `name` in the work folder, gzipped when the name
    /// ends in `.gz`.
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.work.path().join(name);
        if name.ends_with(".gz") {
            write_gzip(&path, data);
        } else {
            std::fs::write(&path, data).unwrap();
        }
        path
    }

    async fn restore(&self, path: &Path, opts: &Options) -> backupd::Result<Report> {
        let kind = classify(&file_name(path)).expect("a backup file name");
        let input = Input::open(path).expect("a readable restore input");
        restore(&self.target, &input, kind, opts, &CancellationToken::new()).await
    }

    /// The non-template databases other than `postgres`, sorted.
    fn databases(&self) -> Vec<String> {
        self.cluster
            .psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE NOT datistemplate \
                 AND datname <> 'postgres' ORDER BY 1",
            )
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn checksums(&self) -> BTreeMap<String, (i64, String)> {
        self.cluster.table_checksums(PG_APP_DB)
    }

    /// Makes the live database differ from any dump taken before.
    fn change_live(&self) {
        self.cluster.psql_app(
            "CREATE TABLE IF NOT EXISTS marker (x int); INSERT INTO marker VALUES (42); \
             DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT 3)",
        );
    }

    /// Every table in public of the app's database belongs to the app's role.
    fn assert_owned_by_app(&self) {
        let foreign = self.cluster.psql(
            PG_APP_DB,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'app'",
        );
        assert_eq!(foreign, "0", "restored tables not owned by the app's role");
        let db_owner = self.cluster.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'",
        );
        assert_eq!(db_owner, "app");
    }
}

fn assert_no_password(text: &str) {
    assert!(
        !text.contains(PG_APP_PASSWORD),
        "the password appears in: {text}"
    );
}

#[tokio::test]
async fn a_good_plain_dump_replaces_the_contents_and_keeps_the_previous_database() {
    let Some(pg) = start(true) else { return };
    let source = pg.checksums();
    let sequences = pg.cluster.sequences(PG_APP_DB);
    let sql = pg.plain_dump();
    let file = pg.file("pg_dump-20261129T030000Z.sql.gz", sql.as_bytes());
    pg.change_live();
    let changed = pg.checksums();
    assert_ne!(changed, source);

    let report = pg
        .restore(&file, &options(STAMP1, Strategy::Staging, 1))
        .await
        .unwrap();
    let previous1 = previous_name(PG_APP_DB, STAMP1);
    assert_eq!(report.database, PG_APP_DB);
    assert_eq!(report.previous.as_deref(), Some(previous1.as_str()));
    assert!(report.dropped.is_empty(), "{report:?}");
    assert_eq!(report.bytes_loaded, fed_len(&sql));
    assert_eq!(pg.checksums(), source, "the live database is not the dump");
    assert_eq!(pg.cluster.sequences(PG_APP_DB), sequences);
    assert_eq!(pg.cluster.table_checksums(&previous1), changed);
    assert_eq!(
        pg.databases(),
        vec![PG_APP_DB.to_string(), previous1.clone()]
    );
    pg.assert_owned_by_app();
    // The app's role works in the new database as before.
    pg.cluster.psql_app("CREATE TABLE after_restore (x int)");

    // A second restore keeps only the newest previous database.
    let report = pg
        .restore(&file, &options(STAMP2, Strategy::Staging, 1))
        .await
        .unwrap();
    let previous2 = previous_name(PG_APP_DB, STAMP2);
    assert_eq!(report.previous.as_deref(), Some(previous2.as_str()));
    assert_eq!(report.dropped, vec![previous1]);
    assert_eq!(pg.databases(), vec![PG_APP_DB.to_string(), previous2]);
    assert_eq!(pg.checksums(), source);
}

#[tokio::test]
async fn an_error_in_the_middle_of_the_dump_leaves_the_live_database_untouched() {
    let Some(pg) = start(true) else { return };
    let (sql, line) = insert_in_middle(&pg.plain_dump(), "SELECT * FROM no_such_table;");
    let file = pg.file("broken.sql.gz", sql.as_bytes());
    pg.change_live();
    let before = pg.checksums();
    let databases = pg.databases();

    let err = pg
        .restore(&file, &options(STAMP1, Strategy::Staging, 1))
        .await
        .unwrap_err()
        .to_string();
    eprintln!("broken dump: {err}");
    assert!(
        err.contains(&format!("psql:<stdin>:{line}: ERROR:"))
            && err.contains("no_such_table")
            && err.contains("does not exist"),
        "the first error line is not in the message: {err}"
    );
    assert!(err.contains("not changed"), "{err}");
    assert_no_password(&err);
    assert_eq!(pg.checksums(), before, "the live database changed");
    assert_eq!(
        pg.databases(),
        databases,
        "a staging database was left behind"
    );

    // A server message that happens to contain the password is masked.
    let echo = pg.file(
        "echo.sql",
        b"CREATE TABLE t (x int);\nSELECT * FROM no_such_secret_table;\n",
    );
    let err = pg
        .restore(&echo, &options(STAMP2, Strategy::Staging, 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_***_table"), "{err}");
    assert_no_password(&err);
    assert_eq!(pg.databases(), databases);
    assert_eq!(pg.checksums(), before);
}

#[tokio::test]
async fn set_transaction_timeout_from_newer_pg_dump_is_left_out() {
    let Some(pg) = start(true) else { return };
    // The server really rejects it (PostgreSQL before 17).
    let mut probe = pg
        .cluster
        .client("psql", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
    probe.args(["-X", "-c", "SET transaction_timeout = 0"]);
    let server_knows_it = probe.output().unwrap().status.success();

    let source = pg.checksums();
    let sql = pg.plain_dump();
    let first_set = sql.find("\nSET ").expect("a SET near the top") + 1;
    let setting = "SET transaction_timeout = 0;\n";
    let sql = format!("{}{setting}{}", &sql[..first_set], &sql[first_set..]);
    let file = pg.file("newer.sql", sql.as_bytes());
    pg.change_live();

    let report = pg
        .restore(&file, &options(STAMP1, Strategy::Staging, 1))
        .await
        .unwrap_or_else(|e| {
            panic!("restore failed (server knows the setting: {server_knows_it}): {e}")
        });
    assert_eq!(
        report.bytes_loaded,
        fed_len(&sql) - setting.len() as u64 + 1,
        "only the statement (not its line break) is left out"
    );
    assert_eq!(pg.checksums(), source);
}

#[tokio::test]
async fn custom_format_dumps_restore_and_keep_zero_drops_every_previous() {
    let Some(pg) = start(true) else { return };
    let source = pg.checksums();
    let sequences = pg.cluster.sequences(PG_APP_DB);
    let custom = pg.dump("custom");
    let gz = pg.file("app.dump.gz", &custom);
    let raw = pg.file("app.dump", &custom);

    pg.change_live();
    let report = pg
        .restore(&gz, &options(STAMP1, Strategy::Staging, 1))
        .await
        .unwrap();
    assert_eq!(report.bytes_loaded, custom.len() as u64);
    assert_eq!(pg.checksums(), source);
    assert_eq!(pg.cluster.sequences(PG_APP_DB), sequences);
    pg.assert_owned_by_app();

    pg.change_live();
    let report = pg
        .restore(&raw, &options(STAMP2, Strategy::Staging, 0))
        .await
        .unwrap();
    assert_eq!(report.previous, None);
    assert_eq!(
        report.dropped,
        vec![
            previous_name(PG_APP_DB, STAMP2),
            previous_name(PG_APP_DB, STAMP1)
        ]
    );
    assert_eq!(pg.databases(), vec![PG_APP_DB.to_string()]);
    assert_eq!(pg.checksums(), source);
}

#[tokio::test]
async fn an_open_session_on_the_live_database_does_not_block_the_swap() {
    let Some(pg) = start(true) else { return };
    let source = pg.checksums();
    let file = pg.file("app.sql.gz", pg.plain_dump().as_bytes());
    pg.change_live();

    let mut session = pg
        .cluster
        .client("psql", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD)
        .args(["-X", "-q", "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a sleeping session");
    let seen = poll(Duration::from_millis(50), Duration::from_secs(10), || {
        (pg.cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'appdb' \
             AND query LIKE 'SELECT pg_sleep(30)%'",
        ) == "1")
            .then_some(())
    });
    assert!(seen.is_some(), "the sleeping session never showed up");

    let started = Instant::now();
    let result = pg
        .restore(&file, &options(STAMP1, Strategy::Staging, 1))
        .await;
    let took = started.elapsed();
    let ended = poll(Duration::from_millis(50), Duration::from_secs(10), || {
        session.try_wait().unwrap()
    });
    if ended.is_none() {
        let _ = session.kill();
        let _ = session.wait();
    }
    result.unwrap();
    assert!(took < Duration::from_secs(20), "the swap waited {took:?}");
    assert!(
        ended.is_some_and(|s| !s.success()),
        "the session on the old database was not terminated: {ended:?}"
    );
    assert_eq!(pg.checksums(), source);
}

#[tokio::test]
async fn inplace_restores_with_and_without_createdb() {
    let Some(pg) = start(false) else { return };
    let source = pg.checksums();
    let sequences = pg.cluster.sequences(PG_APP_DB);
    let plain = pg.file("app.sql.gz", pg.plain_dump().as_bytes());
    let custom = pg.file("app.dump", &pg.dump("custom"));

    // Without CREATEDB: the database stays and is emptied, then loaded.
    pg.change_live();
    let report = pg
        .restore(&plain, &options(STAMP1, Strategy::Inplace, 1))
        .await
        .unwrap();
    assert_eq!(report.previous, None);
    assert!(report.dropped.is_empty());
    assert_eq!(pg.checksums(), source);
    assert_eq!(pg.cluster.sequences(PG_APP_DB), sequences);
    assert_eq!(pg.databases(), vec![PG_APP_DB.to_string()]);
    pg.assert_owned_by_app();

    // With CREATEDB: drop, create, load.
    pg.cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    pg.change_live();
    pg.restore(&custom, &options(STAMP2, Strategy::Inplace, 1))
        .await
        .unwrap();
    assert_eq!(pg.checksums(), source);
    assert_eq!(pg.databases(), vec![PG_APP_DB.to_string()]);
    pg.assert_owned_by_app();
}

#[tokio::test]
async fn a_role_without_createdb_is_told_what_to_do_and_nothing_changes() {
    let Some(pg) = start(false) else { return };
    let file = pg.file("app.sql.gz", pg.plain_dump().as_bytes());
    pg.change_live();
    let before = pg.checksums();
    let databases = pg.databases();

    let err = pg
        .restore(&file, &options(STAMP1, Strategy::Staging, 1))
        .await
        .unwrap_err()
        .to_string();
    eprintln!("no CREATEDB: {err}");
    for needed in [
        "permission denied",
        "CREATEDB",
        "RESTORE_PG_STRATEGY=inplace",
    ] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
    assert!(err.contains("postgresql://app:***@"), "{err}");
    assert_no_password(&err);
    assert_eq!(pg.databases(), databases);
    assert_eq!(pg.checksums(), before);
}

#[tokio::test]
async fn recover_puts_the_previous_database_back_after_a_crash_mid_swap() {
    let Some(pg) = start(true) else { return };
    let before = pg.checksums();
    let staging = staging_name(PG_APP_DB, STAMP1);
    let previous = previous_name(PG_APP_DB, STAMP1);
    // As if killed between the renames: the staging database loaded, the
    // live one already moved aside.
    pg.cluster.createdb(&staging, PG_APP_USER);
    pg.cluster.psql_as(
        &staging,
        PG_APP_USER,
        PG_APP_PASSWORD,
        "CREATE TABLE half (x int)",
    );
    pg.cluster.psql(
        "postgres",
        &format!("ALTER DATABASE {PG_APP_DB} RENAME TO \"{previous}\""),
    );

    let done = recover(&pg.target, STAMP1, None)
        .await
        .unwrap()
        .message()
        .to_string();
    assert!(
        done.contains(&format!("renamed \"{previous}\" back")) && done.contains("dropped"),
        "{done}"
    );
    assert_eq!(pg.databases(), vec![PG_APP_DB.to_string()]);
    assert_eq!(pg.checksums(), before);

    let again = recover(&pg.target, STAMP1, None)
        .await
        .unwrap()
        .message()
        .to_string();
    assert!(again.contains("nothing to recover"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_the_load_and_drops_the_staging_database() {
    let Some(pg) = start(true) else { return };
    let (sql, _) = insert_in_middle(&pg.plain_dump(), "SELECT pg_sleep(20);");
    let file = pg.file("slow.sql.gz", sql.as_bytes());
    pg.change_live();
    let before = pg.checksums();
    let databases = pg.databases();
    let staging = staging_name(PG_APP_DB, STAMP1);

    let cancel = CancellationToken::new();
    let kind = classify("slow.sql.gz").unwrap();
    let opts = options(STAMP1, Strategy::Staging, 1);
    let input = Input::open(&file).unwrap();
    let restoring = restore(&pg.target, &input, kind, &opts, &cancel);
    let watcher = async {
        let give_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < give_up {
            let mut cmd =
                pg.cluster
                    .client("psql", "postgres", PG_SUPERUSER, PG_SUPERUSER_PASSWORD);
            cmd.args(["-X", "-A", "-t", "-c"]).arg(format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{staging}' \
                 AND query LIKE 'SELECT pg_sleep(20)%'"
            ));
            let out = tokio::process::Command::from(cmd).output().await.unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "1" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel.cancel();
        Instant::now()
    };
    let (result, cancelled_at) = tokio::join!(restoring, watcher);
    let stopped_after = cancelled_at.elapsed();
    assert!(
        matches!(result, Err(Error::Cancelled)),
        "expected a cancellation, got {result:?}"
    );
    assert!(
        stopped_after < Duration::from_secs(10),
        "the load went on for {stopped_after:?} after the cancellation"
    );
    assert_eq!(pg.databases(), databases, "the staging database is left");
    assert_eq!(pg.checksums(), before);
}

#[tokio::test]
async fn a_dump_loads_into_a_new_database_beside_the_live_one_and_is_dropped_again() {
    // What a restore drill does: the live database is never touched.
    let Some(pg) = start(true) else { return };
    let source = pg.checksums();
    let path = pg.file("app.sql.gz", pg.plain_dump().as_bytes());
    pg.change_live();
    let before = pg.checksums();
    let kind = classify(&file_name(&path)).expect("a backup file name");
    let input = Input::open(&path).expect("a readable restore input");
    let server = Server::connect(&pg.target).await.unwrap();
    let scratch = "appdb_drill";
    assert!(!server.database_exists(scratch).await.unwrap());

    let cancel = CancellationToken::new();
    let bytes = server
        .load_into_new_database(scratch, &input, kind, &cancel)
        .await
        .unwrap();
    assert!(bytes > 0);
    assert!(server.database_exists(scratch).await.unwrap());
    assert_eq!(pg.cluster.table_checksums(scratch), source);
    assert_eq!(pg.checksums(), before, "the live database changed");
    let err = server
        .load_into_new_database(scratch, &input, kind, &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    let into_live = server
        .load_into_new_database(PG_APP_DB, &input, kind, &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(into_live.contains("live database"), "{into_live}");
    let live = server
        .drop_database(PG_APP_DB)
        .await
        .unwrap_err()
        .to_string();
    assert!(live.contains("live database"), "{live}");
    assert_no_password(&live);

    server.drop_database(scratch).await.unwrap();
    assert!(!server.database_exists(scratch).await.unwrap());
    assert_eq!(pg.databases(), vec![PG_APP_DB.to_string()]);
    assert_eq!(pg.checksums(), before);
}
