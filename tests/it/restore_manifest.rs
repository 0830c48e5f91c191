//! The operator drops a backup with its manifest: the restore counts the
//! rows of what it loaded (PostgreSQL: the staging database, while the app
//! runs; SQLite: the prepared copy, at the check) and refuses to swap when a
//! table's count differs from the manifest's — the table and both counts in
//! the reason, the live database and the app's container untouched, the file
//! and its manifest kept in the failed folder. A matching manifest passes and
//! the history names it; a file without one restores, and the history says
//! there was none.
//!
//! The manifests here are written by the test (`write_manifest_claiming`),
//! their SHA-256 the dropped file's, claiming the counts the kit read from
//! the source database (or, to be refused, another count for one table).

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backupd::manifest::manifest_path;
use common::docker::{TestContainer, require_test_image};
use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// How long to wait for the service to act on a file (a guard against
/// hanging, not a timed assertion).
const GIVE_UP: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_millis(100);

/// A restore service in a temporary folder: `restore/{incoming,failed,
/// state}`, `backups/` (BACKUP_DIR: safety backups), `made/` (where the
/// backups to drop are taken, away from BACKUP_DIR so that no manifest is
/// found there by accident), `staging/` (files prepared before the drop).
struct Stack {
    work: TempDir,
    url: String,
    pg_bin: Option<PathBuf>,
    /// SQLite: the live database file.
    sqlite_db: Option<PathBuf>,
    backups: PathBuf,
    incoming: PathBuf,
    failed: PathBuf,
    state: PathBuf,
}

impl Stack {
    fn new(
        url: String,
        pg_bin: Option<PathBuf>,
        sqlite_db: Option<PathBuf>,
        work: TempDir,
    ) -> Stack {
        let root = work.path().to_path_buf();
        let incoming = root.join("restore/incoming");
        fs::create_dir_all(&incoming).unwrap();
        fs::create_dir_all(root.join("staging")).unwrap();
        Stack {
            url,
            pg_bin,
            sqlite_db,
            backups: root.join("backups"),
            failed: root.join("restore/failed"),
            state: root.join("restore/state/restore-state.json"),
            incoming,
            work,
        }
    }

    /// A PostgreSQL app on a cluster of its own (whose app role may create
    /// the staging database); `None` when PostgreSQL is missing (a loud
    /// skip, a failure under CI).
    fn postgres() -> Option<(PgCluster, Stack)> {
        let bin = require_postgres()?;
        let cluster = PgCluster::start_with_app(&bin, Some(1));
        cluster.psql("postgres", "ALTER ROLE app CREATEDB");
        let stack = Stack::new(
            cluster.app_url(),
            Some(cluster.bin.clone()),
            None,
            temp_dir(),
        );
        Some((cluster, stack))
    }

    /// A SQLite app whose live database `app/app.db` holds `rows` notes.
    fn sqlite(rows: u32) -> Stack {
        let work = temp_dir();
        let db = work.path().join("app/app.db");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        sqlite_small(&db, rows);
        Stack::new(sqlite_url(&db), None, Some(db), work)
    }

    /// `backupd once` of the database at `url` into `made/`; returns the
    /// backup, with no manifest beside it (whatever `once` writes).
    fn backup_of(&self, url: &str) -> PathBuf {
        let dir = self.work.path().join("made");
        let mut b = Backupd::for_database(url, &dir);
        if let Some(bin) = &self.pg_bin {
            b = b.path_prepend(bin);
        }
        let made = b.once().backup_path();
        let _ = fs::remove_file(manifest_path(&made));
        made
    }

    /// A backup of a fresh SQLite database of `rows` notes.
    fn sqlite_backup(&self, rows: u32) -> PathBuf {
        let source = self.work.path().join(format!("sources/notes-{rows}.db"));
        fs::create_dir_all(source.parent().unwrap()).unwrap();
        sqlite_small(&source, rows);
        self.backup_of(&sqlite_url(&source))
    }

    /// backupd's restore service for this stack; stops `stop` (container
    /// names) around the swap, with no waits after stopping or starting.
    fn service(&self, stop: Option<&str>) -> Daemon {
        let mut b = Backupd::for_database(&self.url, &self.backups)
            .env("RESTORE_WATCH_DIR", &self.incoming)
            .env("RESTORE_STATE_FILE", &self.state)
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1")
            .env("RESTORE_STOP_WAIT_SECONDS", "0")
            .env("RESTORE_START_WAIT_SECONDS", "0");
        if let Some(bin) = &self.pg_bin {
            b = b.path_prepend(bin);
        }
        if let Some(db) = &self.sqlite_db {
            b = b.env("RESTORE_SQLITE_PATH", db);
        }
        if let Some(stop) = stop {
            b = b
                .env("RESTORE_STOP_CONTAINERS", stop)
                .env("RESTORE_STOP_TIMEOUT", "5");
        }
        let service = b.background(&["restore"]);
        assert!(
            service.wait_for_log(Duration::from_secs(20), |log| log.contains("watching")),
            "`backupd restore` never logged that it watches the folder:\n{}",
            service.log()
        );
        service
    }

    /// Drops `backup` into the watch folder as `name`; with `tables`, a
    /// manifest of that very file claiming them goes in first, beside it,
    /// edited afterwards to claim `edit`'s count for one table when given
    /// (as an operator with an editor would). Returns the dropped path.
    fn drop_backup(
        &self,
        backup: &Path,
        name: &str,
        kind: &str,
        tables: Option<&Counts>,
        edit: Option<(&str, u64)>,
    ) -> PathBuf {
        let staged = self.work.path().join("staging").join(name);
        fs::copy(backup, &staged).unwrap();
        let dropped = self.incoming.join(name);
        if let Some(tables) = tables {
            let claims: Vec<(&str, u64)> = tables.iter().map(|(t, n)| (t.as_str(), *n)).collect();
            let mut manifest = write_manifest_claiming(&staged, kind, &claims);
            if let Some((table, rows)) = edit {
                manifest = edit_manifest_count(&staged, table, rows);
            }
            fs::rename(&manifest, manifest_path(&dropped)).unwrap();
        }
        fs::rename(&staged, &dropped).unwrap();
        dropped
    }

    fn state_json(&self) -> Option<Value> {
        serde_json::from_str(&fs::read_to_string(&self.state).ok()?).ok()
    }

    /// The newest history entry for the file `name`.
    fn entry(&self, name: &str) -> Option<Value> {
        self.state_json()?["history"]
            .as_array()?
            .iter()
            .find(|e| e["file"].as_str() == Some(name))
            .cloned()
    }

    fn context(&self, service: &Daemon) -> String {
        format!(
            "state file:\n{}\nwatch folder: {:?}\nfailed folder: {:?}\nbackups: {:?}\nservice log:\n{}",
            fs::read_to_string(&self.state).unwrap_or_else(|e| format!("<{e}>")),
            dir_names(&self.incoming),
            dir_names(&self.failed),
            dir_names(&self.backups),
            service.log()
        )
    }

    /// Waits until `name` is recorded and has left the watch folder (and,
    /// when it failed, its reason is written); returns its history entry.
    fn wait_done(&self, service: &mut Daemon, name: &str) -> Value {
        let reason = self.failed.join(format!("{name}.reason.json"));
        let found = poll(STEP, GIVE_UP, || {
            let entry = self.entry(name)?;
            let gone = fs::symlink_metadata(self.incoming.join(name)).is_err();
            let failed = entry["result"].as_str() != Some("restored");
            (gone && (!failed || reason.is_file())).then_some(entry)
        });
        found.unwrap_or_else(|| {
            panic!(
                "`{name}` was not handled (service running: {}):\n{}",
                service.is_running(),
                self.context(service)
            )
        })
    }

    /// Waits until `name` is restored; returns its history entry and the
    /// context.
    fn wait_restored(&self, service: &mut Daemon, name: &str) -> (Value, String) {
        let entry = self.wait_done(service, name);
        let ctx = self.context(service);
        assert_eq!(entry["result"], "restored", "{entry:#}\n{ctx}");
        (entry, ctx)
    }

    /// Waits until `name` is refused; asserts that the reason written beside
    /// it names `difference` and that its history entry is a refusal in
    /// `phase` ([`assert_refused_entry`]). Returns the reason, the entry and
    /// the context for the test's own assertions.
    fn wait_refused(
        &self,
        service: &mut Daemon,
        name: &str,
        phase: &str,
        difference: &str,
    ) -> (String, Value, String) {
        let entry = self.wait_done(service, name);
        let ctx = self.context(service);
        let reason = self.failed_reason(name);
        eprintln!("{name} refused: {reason}");
        assert!(reason.contains(difference), "{reason}\n{ctx}");
        assert_refused_entry(&entry, phase, difference);
        (reason, entry, ctx)
    }

    /// The reason backupd wrote beside `name` in the failed folder.
    fn failed_reason(&self, name: &str) -> String {
        let text = fs::read_to_string(self.failed.join(format!("{name}.reason.json"))).unwrap();
        let reason: Value = serde_json::from_str(&text).unwrap();
        reason["reason"].as_str().unwrap_or_default().to_string()
    }
}

type Counts = BTreeMap<String, u64>;

/// The source's counts with `table`'s changed by `by` rows.
fn claiming_other(counts: &Counts, table: &str, by: i64) -> (Counts, u64, u64) {
    let actual = *counts
        .get(table)
        .unwrap_or_else(|| panic!("no table {table} in {counts:?}"));
    let claimed = actual.checked_add_signed(by).unwrap();
    let mut claims = counts.clone();
    claims.insert(table.to_string(), claimed);
    (claims, actual, claimed)
}

/// An app container when Docker can be used (a loud skip otherwise, a
/// failure under CI), with what shows that it was never stopped: it runs,
/// and its State's StartedAt and FinishedAt stay what they were. It stops
/// at once on `docker stop`, so a stop would show in its State.
struct App {
    web: Option<TestContainer>,
    before: Option<(bool, String, String)>,
}

impl App {
    fn start() -> App {
        let web = require_test_image().map(|image| TestContainer::run_fast_stop(image, &[]));
        let before = web.as_ref().map(container_state);
        App { web, before }
    }

    /// The container's name, for RESTORE_STOP_CONTAINERS.
    fn name(&self) -> Option<&str> {
        self.web.as_ref().map(|w| w.name.as_str())
    }

    fn assert_untouched(&self, ctx: &str) {
        if let (Some(web), Some(before)) = (&self.web, &self.before) {
            assert_eq!(
                &container_state(web),
                before,
                "the app container was stopped or restarted:\n{ctx}"
            );
        }
    }
}

fn container_state(web: &TestContainer) -> (bool, String, String) {
    (
        web.cli_running(),
        web.cli_inspect("{{.State.StartedAt}}"),
        web.cli_inspect("{{.State.FinishedAt}}"),
    )
}

/// The non-template databases of the cluster, sorted.
fn databases(cluster: &PgCluster) -> Vec<String> {
    cluster
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that the history entry's manifest note says `tables` were
/// checked against the manifest of the `dropped` file.
fn assert_checked_against(entry: &Value, tables: &str, dropped: &Path) {
    let expected = format!(
        "checked {tables} against {}",
        manifest_path(dropped).display()
    );
    assert_eq!(
        entry["manifest"].as_str(),
        Some(expected.as_str()),
        "{entry:#}"
    );
}

/// Asserts the history entry of a refused restore: failed in `phase`, the
/// error naming the table and both counts, the manifest note saying the
/// counts differ, nothing stopped and no downtime.
fn assert_refused_entry(entry: &Value, phase: &str, difference: &str) {
    assert_eq!(entry["result"], "failed", "{entry:#}");
    assert_eq!(entry["phase"], phase, "{entry:#}");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains(difference), "{entry:#}");
    let note = entry["manifest"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("the row counts differ from ") && note.ends_with(".manifest.json"),
        "{entry:#}"
    );
    assert_eq!(
        entry["containers_stopped"],
        serde_json::json!([]),
        "{entry:#}"
    );
    assert!(entry["downtime_seconds"].is_null(), "{entry:#}");
    assert!(entry["previous_database"].is_null(), "{entry:#}");
}

#[test]
fn postgres_counts_differing_from_the_manifest_refuse_the_swap_and_leave_the_live_database_and_the_app_alone()
 {
    let Some((cluster, stack)) = Stack::postgres() else {
        return;
    };
    let backup = stack.backup_of(&stack.url);
    let source = cluster.row_counts(PG_APP_DB);
    let (claims, actual, claimed) = claiming_other(&source, "public.users", 1);

    // The live database moves on after the backup: a restore would undo that.
    cluster.psql_app("CREATE TABLE marker (x int); INSERT INTO marker VALUES (1)");
    let live_rows = cluster.table_checksums(PG_APP_DB);
    let live_oid = cluster.database_oid(PG_APP_DB);
    let all_databases = databases(&cluster);
    let app = App::start();

    let mut service = stack.service(app.name());
    let name = "pg_dump-20261201T030000Z.sql.gz";
    let dropped = stack.drop_backup(
        &backup,
        name,
        "postgres",
        Some(&source),
        Some(("public.users", claimed)),
    );
    let difference = format!("public.users: {actual} rows, the manifest says {claimed}");
    let (reason, entry, ctx) = stack.wait_refused(&mut service, name, "comparing", &difference);
    assert!(
        reason.contains("the row counts differ from the manifest in 1 of"),
        "only the one table differs: {reason}"
    );
    assert!(reason.contains("nothing was stopped"), "{reason}");
    assert_eq!(entry["error"].as_str(), Some(reason.as_str()), "{entry:#}");

    assert_eq!(
        cluster.table_checksums(PG_APP_DB),
        live_rows,
        "the live rows changed:\n{ctx}"
    );
    assert_eq!(
        cluster.database_oid(PG_APP_DB),
        live_oid,
        "the live database was swapped:\n{ctx}"
    );
    assert_eq!(
        databases(&cluster),
        all_databases,
        "a staging or previous database is left:\n{ctx}"
    );
    assert!(
        safety_backups(&stack.backups).is_empty(),
        "no safety backup is taken of a database that stays:\n{ctx}"
    );
    assert!(
        !dropped.exists() && !manifest_path(&dropped).exists(),
        "{ctx}"
    );
    let kept = stack.failed.join(name);
    assert_eq!(sha256_file(&kept), sha256_file(&backup), "{ctx}");
    let manifest = read_manifest(&kept);
    assert_eq!(
        manifest.tables, claims,
        "the manifest is kept beside its file"
    );
    app.assert_untouched(&ctx);
    assert!(
        stack.state_json().unwrap()["in_progress"].is_null(),
        "{ctx}"
    );
    service.stop_cleanly();
}

#[test]
fn sqlite_counts_differing_from_the_manifest_refuse_the_restore_at_the_check() {
    let stack = Stack::sqlite(5);
    let live = stack.sqlite_db.clone().unwrap();
    let backup = stack.sqlite_backup(9);
    let source = BTreeMap::from([("notes".to_string(), 9)]);
    let (claims, actual, claimed) = claiming_other(&source, "notes", -2);
    let live_sha = sha256_file(&live);
    let app = App::start();

    let mut service = stack.service(app.name());
    let name = "sqlite-20261201T030000Z.db.gz";
    stack.drop_backup(&backup, name, "sqlite", Some(&claims), None);

    let difference = format!("notes: {actual} rows, the manifest says {claimed}");
    let (reason, _, ctx) = stack.wait_refused(&mut service, name, "checking", &difference);
    assert!(
        reason.contains("nothing was stopped and the live database was not changed"),
        "{reason}"
    );
    assert_eq!(
        sha256_file(&live),
        live_sha,
        "the live database changed:\n{ctx}"
    );
    assert_eq!(notes(&live), 5);
    assert!(
        safety_backups(&stack.backups).is_empty(),
        "a refused check takes no safety backup:\n{ctx}"
    );
    assert_eq!(
        read_manifest(&stack.failed.join(name)).tables,
        claims,
        "{ctx}"
    );
    app.assert_untouched(&ctx);
    service.stop_cleanly();
}

#[test]
fn a_sqlite_file_without_a_manifest_restores_saying_so_and_one_with_a_matching_manifest_names_it() {
    let stack = Stack::sqlite(5);
    let live = stack.sqlite_db.clone().unwrap();
    let mut service = stack.service(None);

    // From elsewhere: no manifest beside it nor in BACKUP_DIR.
    let plain = stack.sqlite_backup(7);
    let name = "sqlite-20261201T030000Z.db.gz";
    stack.drop_backup(&plain, name, "sqlite", None, None);
    let (entry, _) = stack.wait_restored(&mut service, name);
    let note = entry["manifest"].as_str().unwrap_or_default();
    assert!(note.starts_with("no manifest"), "{entry:#}");
    assert!(note.contains(&format!("{name}.manifest.json")), "{note}");
    assert_eq!(notes(&live), 7);

    let checked = stack.sqlite_backup(11);
    let name = "sqlite-20261202T030000Z.db.gz";
    let counts = BTreeMap::from([("notes".to_string(), 11)]);
    let dropped = stack.drop_backup(&checked, name, "sqlite", Some(&counts), None);
    let (entry, ctx) = stack.wait_restored(&mut service, name);
    assert_checked_against(&entry, "1 table", &dropped);
    assert_eq!(notes(&live), 11);
    assert!(
        !manifest_path(&dropped).exists(),
        "the manifest goes with its restored file:\n{ctx}"
    );
    service.stop_cleanly();
}

#[test]
fn a_postgres_dump_whose_manifest_matches_is_swapped_in_and_the_history_names_the_manifest() {
    let Some((cluster, stack)) = Stack::postgres() else {
        return;
    };
    let backup = stack.backup_of(&stack.url);
    let source_rows = cluster.table_checksums(PG_APP_DB);
    let counts = cluster.row_counts(PG_APP_DB);
    assert!(
        counts.len() > 10 && counts.values().any(|&n| n > 0),
        "{counts:?}"
    );
    cluster.psql_app("DELETE FROM audit_log");
    let live_oid = cluster.database_oid(PG_APP_DB);

    let mut service = stack.service(None);
    let name = "pg_dump-20261201T030000Z.sql.gz";
    let dropped = stack.drop_backup(&backup, name, "postgres", Some(&counts), None);
    let (entry, ctx) = stack.wait_restored(&mut service, name);
    assert_checked_against(&entry, &format!("{} tables", counts.len()), &dropped);
    assert_eq!(cluster.table_checksums(PG_APP_DB), source_rows, "{ctx}");
    assert_ne!(
        cluster.database_oid(PG_APP_DB),
        live_oid,
        "not swapped:\n{ctx}"
    );
    assert!(entry["previous_database"].is_string(), "{entry:#}");
    assert!(!manifest_path(&dropped).exists(), "{ctx}");
    service.stop_cleanly();
}

/// The safety backups (`pre-restore-…`) in `dir`.
fn safety_backups(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("pre-restore-"))
        .collect()
}

fn notes(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap()
}
