//! The failed folder: a file that cannot be restored is moved there with
//! `NAME.reason.json` beside it, kept for inspection and never tried again.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::archive::{file_name, write_atomically};
use crate::clock::Clock;
use crate::error::{Error, Result};

/// Moves `file` into `failed_dir` (a free name if taken) with its reason.
/// A symlink is moved as the link itself; its target is never touched.
pub fn move_to_failed(
    file: &Path,
    failed_dir: &Path,
    reason: &str,
    clock: &dyn Clock,
) -> Result<PathBuf> {
    crate::files::create_dir_all(failed_dir)
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
        copy_privately(file, &destination)
            .map_err(|e| Error::io("copy to the failed folder", file, e))?;
        fs::remove_file(file).map_err(|e| Error::io("remove", file, e))?;
    }
    let body = json!({
        "file": name,
        "original_path": file.display().to_string(),
        "reason": reason,
        "failed_at": crate::state::timestamp(clock.now()),
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

/// Copies the regular file `from` (never through a link) into a new private
/// file `to`.
fn copy_privately(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(from)?;
    let mut copy = crate::files::create_new(to)?;
    let result = std::io::copy(&mut source, &mut copy).and_then(|_| copy.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(to);
    }
    result
}
