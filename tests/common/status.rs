//! The status file (`backup-status.json`): reading it, checking it after a
//! success, and writing one as backupd would.

use std::fs;
use std::path::{Path, PathBuf};

use super::backups::{Kind, parse_backup_name};
use super::files::sha256_file;

/// The default status file in the backup folder `dir`.
pub fn status_path(dir: &Path) -> PathBuf {
    dir.join("backup-status.json")
}

/// Reads and parses the status JSON.
pub fn read_status(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the status file {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status file {} is not JSON ({e}):\n{text}", path.display()))
}

/// Every key the status file must have.
pub const STATUS_KEYS: &[&str] = &[
    "last_backup",
    "last_file",
    "backups",
    "last_attempt",
    "last_error",
    "last_duration_seconds",
    "last_size_bytes",
    "last_sha256",
    "database",
    "version",
];

/// True when `s` is a UTC `YYYY-MM-DDTHH:MM:SSZ` timestamp.
pub fn is_utc_second_timestamp(s: &str) -> bool {
    s.len() == 20 && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").is_ok()
}

/// The status after a successful backup of `file`: every key, the right types.
pub fn assert_success_status(status: &serde_json::Value, file: &Path, database: &str) {
    for key in STATUS_KEYS {
        assert!(
            status.get(key).is_some(),
            "status file lacks key `{key}`: {status:#}"
        );
    }
    let last_backup = status["last_backup"].as_str().unwrap_or_default();
    assert!(
        is_utc_second_timestamp(last_backup),
        "last_backup `{last_backup}` is not YYYY-MM-DDTHH:MM:SSZ: {status:#}"
    );
    assert_eq!(
        status["last_file"].as_str(),
        Some(file.to_str().unwrap()),
        "last_file: {status:#}"
    );
    assert!(
        status["last_error"].is_null(),
        "last_error after success: {status:#}"
    );
    assert_eq!(
        status["database"].as_str(),
        Some(database),
        "database: {status:#}"
    );
    let name = file.file_name().unwrap().to_str().unwrap();
    let backups: Vec<&str> = status["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("backups is not an array: {status:#}"))
        .iter()
        .map(|v| v.as_str().expect("backups holds strings"))
        .collect();
    assert_eq!(
        backups.first(),
        Some(&name),
        "backups must list the new backup first: {status:#}"
    );
    for b in &backups {
        assert!(
            parse_backup_name(b).is_some(),
            "backups lists `{b}`, not a backup name: {status:#}"
        );
    }
    assert_eq!(
        status["last_size_bytes"].as_u64(),
        Some(fs::metadata(file).unwrap().len()),
        "last_size_bytes: {status:#}"
    );
    assert_eq!(
        status["last_sha256"].as_str(),
        Some(sha256_file(file).as_str()),
        "last_sha256: {status:#}"
    );
    assert!(
        status["last_duration_seconds"].is_number(),
        "last_duration_seconds: {status:#}"
    );
    assert!(
        status["last_attempt"].is_string(),
        "last_attempt: {status:#}"
    );
    assert!(status["version"].is_string(), "version: {status:#}");
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a UTC time (the status file's format).
pub fn status_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes a status file as backupd would: every key of [`STATUS_KEYS`],
/// `last_backup` at `last_backup` (null when `None`), `last_error` as given.
/// Returns the JSON written.
pub fn write_status_file(
    path: &Path,
    last_backup: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<&str>,
) -> serde_json::Value {
    let file = last_backup.map(|t| Kind::Sqlite.name_at(t));
    let status = serde_json::json!({
        "last_backup": last_backup.map(status_timestamp),
        "last_file": file.as_ref().map(|f| path.with_file_name(f).display().to_string()),
        "backups": file.iter().collect::<Vec<_>>(),
        "last_attempt": status_timestamp(last_backup.unwrap_or_else(chrono::Utc::now)),
        "last_error": last_error,
        "last_duration_seconds": last_backup.map(|_| 0.5),
        "last_size_bytes": last_backup.map(|_| 1234),
        "last_sha256": last_backup.map(|_| "0".repeat(64)),
        "database": "sqlite",
        "version": "0.1.0",
    });
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, serde_json::to_string_pretty(&status).unwrap()).unwrap();
    status
}
