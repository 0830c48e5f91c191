//! `backup-status.json`: the old helper's keys (`last_backup`, `last_file`,
//! `backups`) exactly as before, plus what an operator needs to see why the
//! last run failed. Written atomically; never holds credentials.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::write_atomically;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// UTC `YYYY-MM-DDTHH:MM:SSZ` of the last successful backup.
    pub last_backup: Option<String>,
    /// Full path of the last successful backup.
    pub last_file: Option<String>,
    /// Backup file names in the directory, newest first.
    #[serde(default)]
    pub backups: Vec<String>,
    pub last_attempt: Option<String>,
    /// `null` after a success; what went wrong otherwise (passwords masked).
    pub last_error: Option<String>,
    pub last_duration_seconds: Option<f64>,
    pub last_size_bytes: Option<u64>,
    pub last_sha256: Option<String>,
    /// `postgresql` or `sqlite`.
    pub database: Option<String>,
    /// UTC time of the last offsite pass that uploaded a backup.
    #[serde(default)]
    pub last_upload: Option<String>,
    /// Name of the newest backup that pass uploaded.
    #[serde(default)]
    pub last_upload_file: Option<String>,
    /// Why the last offsite pass did not finish; `null` when the bucket is
    /// up to date (and while no bucket is configured).
    #[serde(default)]
    pub last_upload_error: Option<String>,
    #[serde(default)]
    pub version: String,
    /// Keys written by other versions survive a rewrite.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The timestamp format of the status file, as the old helper wrote it.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Status {
    /// Reads the status file; a missing file is `None`.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Other(format!(
                    "cannot parse the status file {}: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read the status file", path, e)),
        }
    }

    /// Reads the previous status to update; a damaged file is replaced, not fatal.
    pub fn read_or_default(path: &Path) -> Self {
        match Self::read(path) {
            Ok(status) => status.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "starting a fresh status file");
                Status::default()
            }
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        json.push(b'\n');
        write_atomically(path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_old_keys_are_kept_and_unknown_keys_survive() {
        let old = r#"{"last_backup": "2026-01-01T00:00:00Z", "last_file": "/backups/x", "backups": ["x"], "future": 1}"#;
        let status: Status = serde_json::from_str(old).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        for key in [
            "last_backup",
            "last_file",
            "backups",
            "last_attempt",
            "last_error",
            "database",
            "version",
            "future",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn timestamps_use_the_old_format() {
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 2, 3, 4).unwrap();
        assert_eq!(timestamp(t), "2026-11-29T02:03:04Z");
    }
}
