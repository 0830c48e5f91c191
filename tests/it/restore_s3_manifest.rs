//! A restore from the bucket checks what the backup's manifest in the
//! bucket claims: `backupd restore --from-s3 NAME` (and `--file
//! s3://BUCKET/KEY`) downloads `NAME.manifest.json` beside the backup, and
//! a staging database whose row counts differ is never swapped in — the
//! reason names the table, the live database keeps its rows. A manifest that
//! matches lets the restore through; a bucket without one restores as
//! before, and the history says "no manifest".

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::s3::S3Server;
use common::*;

/// The app's PostgreSQL database, the bucket, and the restore's folders.
struct Stack {
    cluster: PgCluster,
    server: S3Server,
    work: tempfile::TempDir,
}

impl Stack {
    fn start() -> Option<Stack> {
        let bin = require_postgres()?;
        let server = S3Server::start()?;
        let cluster = PgCluster::start_with_app(&bin, Some(1));
        cluster.psql("postgres", "ALTER ROLE app CREATEDB");
        Some(Stack {
            cluster,
            server,
            work: temp_dir(),
        })
    }

    /// `backupd once` into a folder of its own (not the restore's
    /// BACKUP_DIR, where the lookup would find a manifest by name too).
    fn backup(&self) -> PathBuf {
        let made = self.cluster.backupd(&self.work.path().join("made")).once();
        made.assert_code(0);
        made.backup_path()
    }

    /// Puts `file` into the bucket under its own name, as the offsite pass
    /// would: the data, and (`sidecar`) its `.sha256`.
    fn put(&self, file: &Path, sidecar: bool) -> String {
        let name = file_name(file);
        let object = self.server.object_path(&name);
        fs::create_dir_all(object.parent().unwrap()).unwrap();
        fs::copy(file, &object).unwrap();
        if sidecar {
            fs::write(
                self.server.object_path(&format!("{name}.sha256")),
                format!("{}  {name}\n", sha256_file(file)),
            )
            .unwrap();
        }
        name
    }

    fn restore(&self, args: &[&str]) -> RunResult {
        let mut b = self
            .cluster
            .backupd(&self.work.path().join("backups"))
            .env(
                "RESTORE_WATCH_DIR",
                self.work.path().join("restore/incoming"),
            )
            .env("RESTORE_STATE_FILE", self.state_file())
            .env("RESTORE_SAFETY_BACKUP", "false");
        for (k, v) in self.server.env() {
            b = b.env(&k, v);
        }
        let mut argv = vec!["restore"];
        argv.extend_from_slice(args);
        b.run(&argv)
    }

    fn state_file(&self) -> PathBuf {
        self.work.path().join("restore/state/restore-state.json")
    }

    fn newest_entry(&self) -> serde_json::Value {
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(self.state_file()).unwrap()).unwrap();
        state["history"][0].clone()
    }

    /// What is left in the downloads folder (nothing, after a restore).
    fn downloads(&self) -> Vec<String> {
        fs::read_dir(self.work.path().join("restore/downloads"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn counts(&self) -> Vec<(String, u64)> {
        self.cluster
            .table_checksums(PG_APP_DB)
            .into_iter()
            .map(|(table, (rows, _))| (format!("public.{table}"), rows as u64))
            .collect()
    }
}

#[test]
fn a_manifest_in_the_bucket_that_claims_other_counts_stops_the_restore_before_the_swap() {
    let Some(stack) = Stack::start() else {
        return;
    };
    let at_backup = stack.cluster.table_checksums(PG_APP_DB);
    let counts = stack.counts();
    let backup = stack.backup();
    let name = stack.put(&backup, true);
    // A table nothing references, so the app can empty it.
    let table = "public.audit_log";
    let rows = counts
        .iter()
        .find(|(t, _)| t == table)
        .map(|(_, rows)| *rows)
        .filter(|rows| *rows > 0)
        .expect("the fixture fills audit_log");
    // The live database moves on after the backup: a restore shows.
    stack.cluster.psql_app("DELETE FROM public.audit_log");
    let live = stack.cluster.table_checksums(PG_APP_DB);
    assert_ne!(live, at_backup);

    // The bucket's manifest (its sha256 the backup's) claims one more row.
    let truth: Vec<(&str, u64)> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    write_manifest_claiming(&backup, "postgres", &truth);
    stack.put(&edit_manifest_count(&backup, table, rows + 1), false);
    let refused = stack.restore(&["--from-s3", &name]);
    refused.assert_code(1);
    refused.assert_stderr_mentions(&[&format!(
        "{table}: {rows} rows, the manifest says {}",
        rows + 1
    )]);
    assert_eq!(
        stack.cluster.table_checksums(PG_APP_DB),
        live,
        "the live database changed"
    );
    let entry = stack.newest_entry();
    assert_eq!(entry["result"], "failed", "{entry:#}");
    assert_eq!(entry["phase"], "comparing", "{entry:#}");
    assert!(stack.downloads().is_empty(), "{:?}", stack.downloads());

    // The same refusal through the object's URL.
    let url = format!("s3://{}/{name}", stack.server.bucket());
    stack
        .restore(&["--file", &url])
        .assert_code(1)
        .assert_stderr_mentions(&[table]);
    assert_eq!(stack.cluster.table_checksums(PG_APP_DB), live);

    // A manifest that tells the truth lets the restore through.
    stack.put(&write_manifest_claiming(&backup, "postgres", &truth), false);
    stack.restore(&["--from-s3", &name]).assert_code(0);
    assert_eq!(stack.cluster.table_checksums(PG_APP_DB), at_backup);
    let entry = stack.newest_entry();
    assert_eq!(entry["result"], "restored", "{entry:#}");
    let note = entry["manifest"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!("checked {} tables against", counts.len()))
            && note.contains("downloads"),
        "{entry:#}"
    );
    assert!(stack.downloads().is_empty(), "{:?}", stack.downloads());

    // No manifest in the bucket (a backup from before manifests): restored,
    // and the history says so.
    fs::remove_file(stack.server.object_path(&format!("{name}.manifest.json"))).unwrap();
    stack.cluster.psql_app("DELETE FROM public.audit_log");
    stack.restore(&["--from-s3", &name]).assert_code(0);
    assert_eq!(stack.cluster.table_checksums(PG_APP_DB), at_backup);
    let entry = stack.newest_entry();
    let note = entry["manifest"].as_str().unwrap_or_default();
    assert!(note.starts_with("no manifest"), "{entry:#}");
}
