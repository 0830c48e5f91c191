//! How backupd creates files and folders: never world-readable, never
//! through a planted link.
//!
//! Every file is created `O_CREAT|O_EXCL|O_NOFOLLOW` with the private mode
//! (`BACKUP_FILE_MODE`, 0640 by default) and then `fchmod`ed to exactly that
//! mode, so neither a wide umask nor a narrow one changes what the operator
//! asked for. Temporary files get random names (`.backupd-tmp-XXXXXX…`) in
//! the folder of their final name and are renamed into place; the prefix
//! lets the start-up clean-up recognise them as ours. Folders backupd
//! creates are 0750. The process umask is 0o027 as a backstop for files
//! created by code that is not ours (SQLite's, the children's).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::NamedTempFile;

use crate::values::DEFAULT_FILE_MODE;

/// Mode of the folders backupd creates.
pub const DIR_MODE: u32 = 0o750;

/// The process umask: nothing that escapes the explicit modes is ever
/// readable by other users.
pub const UMASK: u32 = 0o027;

/// Name prefix of every random-named temporary file backupd writes.
pub const TEMP_PREFIX: &str = ".backupd-tmp-";

static FILE_MODE: AtomicU32 = AtomicU32::new(DEFAULT_FILE_MODE);

/// Sets the mode of new files and the process umask; called once at start-up.
pub fn init(file_mode: u32) {
    FILE_MODE.store(file_mode, Ordering::Relaxed);
    // SAFETY: umask only swaps the process's file creation mask.
    unsafe {
        libc::umask(UMASK as libc::mode_t);
    }
}

/// The mode new files get.
pub fn file_mode() -> u32 {
    FILE_MODE.load(Ordering::Relaxed)
}

/// `owner UID:GID, mode 0NNN` of `path`, for messages about access.
pub fn owner_and_mode(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => format!(
            "owner {}:{}, mode {:04o}",
            m.uid(),
            m.gid(),
            m.mode() & 0o7777
        ),
        Err(_) => "owner and mode unknown".to_string(),
    }
}

/// The effective uid and gid backupd runs as (`/proc/self` belongs to
/// them), as text; `?` where unknown.
pub fn running_as() -> (String, String) {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| (m.uid().to_string(), m.gid().to_string()))
        .unwrap_or_else(|_| ("?".into(), "?".into()))
}

/// Creates `path`, which must not exist (not even as a dangling link), with
/// the private mode.
pub fn create_new(path: &Path) -> io::Result<File> {
    create_new_with_mode(path, file_mode())
}

/// [`create_new`] with an explicit mode (the private folders' 0600 files).
pub fn create_new_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have taken bits away that the operator asked for.
    file.set_permissions(Permissions::from_mode(mode))?;
    Ok(file)
}

/// A new file with a random name in `dir`, opened like [`create_new`];
/// removed when dropped unless persisted.
pub fn temp_in(dir: &Path) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .make_in(dir, create_new)
}

/// Is `name` one of [`temp_in`]'s files?
pub fn is_our_temp(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|rest| !rest.is_empty())
}

/// Creates `dir` and its missing parents with mode 0750 (exactly, whatever
/// the umask). Existing folders are left as they are.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        // Someone else created it meanwhile: theirs, left alone.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // fchmod on the folder itself, never through a link put in its place.
    let created = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    created.set_permissions(Permissions::from_mode(DIR_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_new_file_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("planted");
        symlink(&victim, &link).unwrap();
        assert!(create_new(&link).is_err());
        symlink(dir.path().join("missing"), dir.path().join("dangling")).unwrap();
        assert!(create_new(&dir.path().join("dangling")).is_err());
        assert!(!dir.path().join("missing").exists());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn temporary_files_are_private_and_recognisable() {
        let dir = tempfile::tempdir().unwrap();
        let temp = temp_in(dir.path()).unwrap();
        let name = temp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(is_our_temp(&name), "{name}");
        let mode = temp.as_file().metadata().unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, file_mode());
        assert!(!is_our_temp(TEMP_PREFIX));
        assert!(!is_our_temp(".backup-status.json.tmp"));
    }

    #[test]
    fn created_folders_are_0750() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).unwrap();
        for d in [dir.path().join("a"), nested] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, DIR_MODE, "{}", d.display());
        }
    }
}
