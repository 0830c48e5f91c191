//! The failed folder: a file that cannot be restored is moved there with
//! `NAME.reason.json` beside it, kept for inspection and never tried again.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::json;

use crate::archive::{file_name, write_atomically};
use crate::error::{Error, Result};

/// Moves `file` into `failed_dir` (a free name if taken) with its reason.
/// A symlink is moved as the link itself; its target is never touched.
pub fn move_to_failed(file: &Path, failed_dir: &Path, reason: &str) -> Result<PathBuf> {
    fs::create_dir_all(failed_dir)
        .map_err(|e| Error::io("create the failed folder", failed_dir, e))?;
    let name = file_name(file);
    let destination = (0..)
        .map(|n| match n {
            0 => failed_dir.join(&name),
            n => failed_dir.join(format!("{name}.{n}")),
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .expect("an unbounded range has a free name");
    if let Err(e) = fs::rename(file, &destination) {
        // Another filesystem: copy regular files, then remove the original.
        if !fs::symlink_metadata(file)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            return Err(Error::io("move to the failed folder", file, e));
        }
        fs::copy(file, &destination)
            .map_err(|e| Error::io("copy to the failed folder", file, e))?;
        fs::remove_file(file).map_err(|e| Error::io("remove", file, e))?;
    }
    let body = json!({
        "file": name,
        "original_path": file.display().to_string(),
        "reason": reason,
        "failed_at": crate::state::timestamp(Utc::now()),
    });
    let mut text = serde_json::to_vec_pretty(&body).map_err(|e| Error::Other(e.to_string()))?;
    text.push(b'\n');
    write_atomically(
        &PathBuf::from(format!("{}.reason.json", destination.display())),
        &text,
    )?;
    tracing::warn!(file = %name, failed = %destination.display(), reason, "file moved to the failed folder");
    Ok(destination)
}
