//! The `FILE.sha256` sidecar (sha256sum format) backupd writes beside each
//! backup from the bytes it wrote.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::archive::sidecar_path;
use crate::error::{Error, Result};
use crate::inspect::read::{self, HashingReader};

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} does not hold a SHA-256 checksum", path.display())]
    Malformed { path: PathBuf },
}

/// The hex digest in `FILE.sha256`, `None` without one.
pub fn expected_sha256(file: &Path) -> std::result::Result<Option<String>, SidecarError> {
    let path = sidecar_path(file);
    let text = match read_small_regular(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SidecarError::Unreadable { path, source }),
    };
    let expected = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SidecarError::Malformed { path });
    }
    Ok(Some(expected))
}

/// A sidecar is read without following links and only when it is a small
/// regular file.
pub fn read_small_regular(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a small regular file",
        ));
    }
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text)?;
    Ok(text)
}

/// Whether `FILE.sha256` exists and matches the file (opened once, without
/// following links). `Ok(false)` for no sidecar or a mismatch.
pub fn sidecar_matches(path: &Path) -> Result<bool> {
    let expected = match expected_sha256(path) {
        Ok(Some(expected)) => expected,
        Ok(None) | Err(SidecarError::Malformed { .. }) => return Ok(false),
        Err(SidecarError::Unreadable { path, source }) => {
            return Err(Error::io("read", &path, source));
        }
    };
    let file = match read::open(path) {
        Ok(file) => file,
        Err(_) => return Ok(false),
    };
    let (_, actual) = HashingReader::new(&file)
        .finish_to_end()
        .map_err(|e| Error::io("read", path, e))?;
    Ok(actual == expected)
}
