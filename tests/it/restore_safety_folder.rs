//! Where the restore service puts its safety backups. The app's own compose
//! file gives db-restore only `/restore` (no `/backups` volume and no
//! BACKUP_DIR), so without BACKUP_DIR the safety copy goes to
//! `<parent of RESTORE_WATCH_DIR>/safety`, i.e. `./restore/safety` on the
//! host; an explicit BACKUP_DIR (as docker/compose.backup.yml sets) keeps
//! it beside the scheduled backups. An empty BACKUP_DIR counts as unset, as
//! every empty variable does.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

const GIVE_UP: Duration = Duration::from_secs(30);

/// A SQLite app in `<tmp>/app/app.db` and the folders of its db-restore
/// service, `<tmp>/restore/{incoming,state}`.
struct RestoreFolders {
    work: TempDir,
    db: PathBuf,
    restore: PathBuf,
}

impl RestoreFolders {
    fn new() -> Self {
        let work = temp_dir();
        let db = work.path().join("app/app.db");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        sqlite_small(&db, 5);
        let restore = work.path().join("restore");
        fs::create_dir_all(restore.join("incoming")).unwrap();
        RestoreFolders { work, db, restore }
    }

    /// The service as the app's compose file configures it: database URL,
    /// watch folder and state file, and no BACKUP_DIR.
    fn service(&self) -> Backupd {
        Backupd::new()
            .env("DATABASE_URL", sqlite_url(&self.db))
            .env("RESTORE_SQLITE_PATH", &self.db)
            .env("RESTORE_WATCH_DIR", self.restore.join("incoming"))
            .env(
                "RESTORE_STATE_FILE",
                self.restore.join("state/restore-state.json"),
            )
            .env("RESTORE_SETTLE_SECONDS", "1")
            .env("RESTORE_POLL_INTERVAL", "1")
    }

    /// Drops a backup of another small database into the watch folder,
    /// runs `service` until it is restored, and returns the history entry.
    fn restore_one(&self, service: Backupd) -> Value {
        let source = self.work.path().join("other.db");
        sqlite_small(&source, 9);
        let backup = Backupd::for_database(sqlite_url(&source), &self.work.path().join("made"))
            .once()
            .backup_path();
        let name = file_name(&backup);
        let mut daemon = service.background(&["restore"]);
        assert!(
            daemon.wait_for_log(GIVE_UP, |log| log.contains("watching")),
            "`backupd restore` never watched the folder:\n{}",
            daemon.log()
        );
        let staged = self.work.path().join(&name);
        fs::copy(&backup, &staged).unwrap();
        fs::rename(&staged, self.restore.join("incoming").join(&name)).unwrap();
        let state_file = self.restore.join("state/restore-state.json");
        let entry = poll(Duration::from_millis(100), GIVE_UP, || {
            let state: Value = serde_json::from_str(&fs::read_to_string(&state_file).ok()?).ok()?;
            let entry = state["history"]
                .as_array()?
                .iter()
                .find(|e| e["file"].as_str() == Some(name.as_str()))?
                .clone();
            state["in_progress"].is_null().then_some(entry)
        })
        .unwrap_or_else(|| panic!("`{name}` was never restored:\n{}", daemon.log()));
        assert_eq!(
            entry["result"].as_str(),
            Some("restored"),
            "{entry:#}\n{}",
            daemon.log()
        );
        daemon.terminate(GIVE_UP);
        entry
    }
}

/// The safety backups (no sidecars) in `dir`; none when it does not exist.
fn safety_copies(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    dir_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("pre-restore-sqlite-") && !is_companion(n))
        .collect()
}

fn assert_one_safety_copy_in(dir: &Path, entry: &Value) {
    let copies = safety_copies(dir);
    assert_eq!(
        copies.len(),
        1,
        "one safety backup expected in {dir:?}: {copies:?}"
    );
    let copy = dir.join(&copies[0]);
    assert_eq!(
        entry["safety_backup"].as_str(),
        Some(copy.to_str().unwrap()),
        "{entry:#}"
    );
    assert_verifies(&copy);
}

fn assert_verifies(backup: &Path) {
    Backupd::new()
        .env("BACKUP_DIR", backup.parent().unwrap())
        .run(&["verify", backup.to_str().unwrap()])
        .assert_code(0);
}

#[test]
fn without_backup_dir_the_safety_copy_goes_to_the_restore_folders_safety() {
    let folders = RestoreFolders::new();
    let entry = folders.restore_one(folders.service());
    assert_one_safety_copy_in(&folders.restore.join("safety"), &entry);
    // Nothing went to the image's default /backups (not a volume there).
    assert!(
        !folders.work.path().join("backups").exists(),
        "{:?}",
        dir_names(folders.work.path())
    );
}

#[test]
fn an_empty_backup_dir_counts_as_unset() {
    let folders = RestoreFolders::new();
    let entry = folders.restore_one(folders.service().env("BACKUP_DIR", ""));
    assert_one_safety_copy_in(&folders.restore.join("safety"), &entry);
}

#[test]
fn an_explicit_backup_dir_keeps_the_safety_copy_beside_the_backups() {
    let folders = RestoreFolders::new();
    let backups = folders.work.path().join("backups");
    let entry = folders.restore_one(folders.service().env("BACKUP_DIR", &backups));
    assert_one_safety_copy_in(&backups, &entry);
    assert!(
        safety_copies(&folders.restore.join("safety")).is_empty(),
        "a safety copy in restore/safety although BACKUP_DIR was set"
    );
}
