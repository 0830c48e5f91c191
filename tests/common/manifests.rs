//! Manifests in tests: read the one backupd wrote beside a backup, or
//! write one that claims other row counts for a file (its SHA-256 still the
//! file's), as an operator's edited or forged manifest would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backupd::manifest::{DatabaseInfo, Digest, FORMAT_VERSION, Manifest, manifest_path};

use super::files::sha256_file;

/// The manifest beside `backup` (`NAME.manifest.json`), which must exist.
pub fn read_manifest(backup: &Path) -> Manifest {
    let path = manifest_path(backup);
    Manifest::read(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .unwrap_or_else(|| panic!("no manifest beside {}", backup.display()))
}

/// Writes `NAME.manifest.json` beside `backup`, describing that very file
/// (size and SHA-256) and claiming `tables`; returns its path.
pub fn write_manifest_claiming(backup: &Path, kind: &str, tables: &[(&str, u64)]) -> PathBuf {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup: backup.file_name().unwrap().to_string_lossy().into_owned(),
        database: DatabaseInfo {
            kind: kind.to_string(),
            name: "app".to_string(),
        },
        server_version: None,
        pg_dump_version: None,
        started_at: "2026-12-01T03:00:00Z".into(),
        finished_at: "2026-12-01T03:00:05Z".into(),
        file: Digest {
            size: std::fs::metadata(backup).unwrap().len(),
            sha256: sha256_file(backup),
        },
        gzip: None,
        uncompressed_bytes: 0,
        tables: tables
            .iter()
            .map(|(name, rows)| (name.to_string(), *rows))
            .collect::<BTreeMap<_, _>>(),
    };
    let path = manifest_path(backup);
    std::fs::write(&path, manifest.to_json()).unwrap();
    path
}

/// Rewrites the manifest beside `backup` with `table`'s count changed to
/// `rows` (added when absent), everything else as backupd wrote it.
pub fn edit_manifest_count(backup: &Path, table: &str, rows: u64) -> PathBuf {
    let mut manifest = read_manifest(backup);
    manifest.tables.insert(table.to_string(), rows);
    let path = manifest_path(backup);
    std::fs::write(&path, manifest.to_json()).unwrap();
    path
}
