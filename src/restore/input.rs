//! A restore input is opened exactly once. Whoever can write the watch
//! folder (or BACKUP_DIR, or the downloads folder) may swap the path or
//! rewrite the file at any moment, so nothing after the open goes through
//! the path again: the descriptor is checked (a regular, non-empty file),
//! every pass reads it with positional reads, and every pass hashes what it
//! read.
//!
//! A dropper that kept the file open can still rewrite the same inode, and
//! a loader may commit before it reaches the end of its input (pg_restore
//! at the end of the archive, psql at a `COMMIT;` in the stream), so a hash
//! compared at the end of the load cannot stop everything. The check
//! therefore copies every byte it reads into an unlinked file in
//! [`PrivateDir`] ([`CheckReader`]), and the load reads that copy: what is
//! loaded is, byte for byte, what was checked. The load still compares its
//! hash with the check's, as a second line.
//!
//! Plaintext that backupd makes itself (a decrypted `.enc`) lives in
//! [`PrivateDir`], a 0700 folder beside the restore state file, as an
//! unlinked temporary file: nobody else can name it, let alone change it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::inspect::read::{FirstPassHash, HashingReader, OpenError, open};

/// Why a load stopped: the bytes it read are not the bytes that were checked.
pub const CHANGED_AFTER_CHECK: &str = "the file changed after it was checked";

/// What went wrong with a restore input or the private folder. The wording
/// is the one-line reason recorded beside the file in the failed folder.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the folder {}: {source}", path.display())]
    CreateParent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the private folder {}: {source}", path.display())]
    CreatePrivate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect the private folder {}: {source}", path.display())]
    InspectPrivate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the private folder {} is not a directory (a symlink?); remove it", path.display())]
    PrivateNotADirectory { path: PathBuf },
    #[error("the private folder {} belongs to uid {owner}, not to backupd (uid {uid}); remove it", path.display())]
    PrivateOwnedByOther { path: PathBuf, owner: u32, uid: u32 },
    #[error("cannot make {} private (0700): {source}", path.display())]
    MakePrivate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a temporary file in {}: {source}", path.display())]
    TempFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The load read other bytes than the check did: carried inside the load's
/// `io::Error`, so a caller can tell it by type.
#[derive(Debug, thiserror::Error)]
#[error(
    "{CHANGED_AFTER_CHECK} ({len} bytes with SHA-256 {sha256} now, {checked_len} bytes with SHA-256 {checked_sha256} when checked); nothing of it was committed"
)]
pub struct ChangedAfterCheck {
    pub len: u64,
    pub sha256: String,
    pub checked_len: u64,
    pub checked_sha256: String,
}

/// The checked bytes a restore loads: an open descriptor and the SHA-256 and
/// length of exactly what the check read from it.
#[derive(Debug, Clone)]
pub struct Input {
    file: Arc<File>,
    /// For messages: where the bytes came from.
    pub name: String,
    pub len: u64,
    pub sha256: String,
}

impl Input {
    /// Opens `path` as a restore input ([`open`]) and hashes it: for
    /// callers that check the content themselves (and for tests).
    pub fn open(path: &Path) -> Result<Input, InputError> {
        let file = Arc::new(open(path)?);
        let name = path.display().to_string();
        Input::read_to_end(HashingReader::new(&file), file.clone(), name.clone())
            .map_err(|source| InputError::Read { name, source })
    }

    /// The checked input of everything `reader` read from `file`, once it
    /// has read the rest.
    pub fn read_to_end(
        reader: HashingReader<'_>,
        file: Arc<File>,
        name: String,
    ) -> io::Result<Input> {
        let (len, sha256) = reader.finish_to_end()?;
        Ok(Input {
            file,
            name,
            len,
            sha256,
        })
    }

    /// A reader from the start of the descriptor that hashes what it reads.
    pub fn reader(&self) -> HashingReader<'_> {
        HashingReader::new(&self.file)
    }

    /// Reads the rest of `reader` and compares everything it read with what
    /// was checked. `Err` carries [`ChangedAfterCheck`].
    pub fn confirm(&self, mut reader: HashingReader<'_>) -> io::Result<()> {
        io::copy(&mut reader, &mut io::sink())?;
        let (len, sha256) = reader.finish();
        if len != self.len || sha256 != self.sha256 {
            return Err(io::Error::other(ChangedAfterCheck {
                len,
                sha256,
                checked_len: self.len,
                checked_sha256: self.sha256.clone(),
            }));
        }
        Ok(())
    }
}

/// The reader of a check pass: hashes what it reads from the dropped file
/// (a [`HashingReader`]) and, when given a private folder, copies every byte
/// into an unlinked file there, which becomes the [`Input`] the load reads.
/// Without a folder (the source is already private, e.g. decrypted
/// plaintext) the input is the source itself.
pub struct CheckReader<'a> {
    reader: HashingReader<'a>,
    copy: Option<io::BufWriter<File>>,
}

impl<'a> CheckReader<'a> {
    pub fn new(source: &'a File, copy_into: Option<&PrivateDir>) -> Result<Self, InputError> {
        let copy = match copy_into {
            Some(private) => Some(io::BufWriter::with_capacity(1 << 20, private.temp_file()?)),
            None => None,
        };
        Ok(CheckReader {
            reader: HashingReader::new(source),
            copy,
        })
    }

    /// Reads the rest of the source (copying it too), then returns the
    /// checked input: the private copy when there is one, else `source`.
    /// Bytes the source gained after this pass read them are not in the
    /// copy, but are in the hash: the load then refuses the mismatch.
    pub fn into_input(mut self, source: Arc<File>, name: String) -> io::Result<Input> {
        io::copy(&mut self, &mut io::sink())?;
        let CheckReader { reader, copy } = self;
        let file = match copy {
            Some(copy) => Arc::new(copy.into_inner().map_err(|e| e.into_error())?),
            None => source,
        };
        Input::read_to_end(reader, file, name)
    }
}

impl Read for CheckReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        if let Some(copy) = self.copy.as_mut() {
            use std::io::Write;
            copy.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// A folder only backupd's user can enter (0700), for plaintext backupd
/// makes from a restore input. Files in it are unlinked temporary files.
#[derive(Debug, Clone)]
pub struct PrivateDir {
    pub path: PathBuf,
}

impl PrivateDir {
    /// `<folder of the state file>/private`, created 0700 if missing. An
    /// existing one must be a real directory owned by us; its mode is set
    /// to 0700. Leftovers of an interrupted restore are removed.
    pub fn beside_state_file(state_file: &Path) -> Result<PrivateDir, InputError> {
        let parent = state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::at(parent.join("private"))
    }

    pub fn at(path: PathBuf) -> Result<PrivateDir, InputError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| InputError::CreateParent {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(InputError::CreatePrivate { path, source }),
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(source) => return Err(InputError::InspectPrivate { path, source }),
        };
        if !meta.file_type().is_dir() {
            return Err(InputError::PrivateNotADirectory { path });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if meta.uid() != uid {
            return Err(InputError::PrivateOwnedByOther {
                path,
                owner: meta.uid(),
                uid,
            });
        }
        if meta.mode() & 0o777 != 0o700
            && let Err(source) = fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
        {
            return Err(InputError::MakePrivate { path, source });
        }
        let dir = PrivateDir { path };
        dir.remove_leftovers();
        Ok(dir)
    }

    /// A new temporary file in the folder, readable only by us and already
    /// unlinked (O_TMPFILE, or a random O_EXCL name removed at once).
    pub fn temp_file(&self) -> Result<File, InputError> {
        tempfile::tempfile_in(&self.path).map_err(|source| InputError::TempFile {
            path: self.path.clone(),
            source,
        })
    }

    /// Whatever an interrupted process left (named fall-back temporaries).
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let result = match entry.file_type() {
                Ok(ft) if ft.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            match result {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed a private temporary left by an interrupted restore")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a private temporary")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_in_the_same_inode_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sql");
        fs::write(&path, b"checked content\n").unwrap();
        let file = Arc::new(open(&path).unwrap());
        let input =
            Input::read_to_end(HashingReader::new(&file), file.clone(), "x.sql".into()).unwrap();
        assert!(input.confirm(input.reader()).is_ok());
        fs::write(&path, b"changed content\n").unwrap();
        let err = input.confirm(input.reader()).unwrap_err();
        let changed = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<ChangedAfterCheck>());
        assert!(changed.is_some(), "{err}");
        let err = err.to_string();
        assert!(err.contains(CHANGED_AFTER_CHECK), "{err}");
    }

    #[test]
    fn the_check_copy_is_what_loads_whatever_happens_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let private = PrivateDir::at(dir.path().join("private")).unwrap();
        let path = dir.path().join("x.sql");
        fs::write(&path, b"checked content\n").unwrap();
        let file = Arc::new(open(&path).unwrap());
        let mut reader = CheckReader::new(&file, Some(&private)).unwrap();
        let mut first = [0u8; 7];
        reader.read_exact(&mut first).unwrap();
        let input = reader.into_input(file.clone(), "x.sql".into()).unwrap();
        assert_eq!(input.len, 16);
        // The dropper rewrites the same inode after the check.
        fs::write(&path, b"evil!! content\n").unwrap();
        let mut loaded = Vec::new();
        input.reader().read_to_end(&mut loaded).unwrap();
        assert_eq!(loaded, b"checked content\n");
        assert!(input.confirm(input.reader()).is_ok());
        assert_eq!(fs::read_dir(&private.path).unwrap().count(), 0, "unlinked");
    }

    #[test]
    fn the_private_folder_is_0700_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(private.join("left-over"), b"plaintext").unwrap();
        let dir = PrivateDir::at(private.clone()).unwrap();
        let mode = fs::metadata(&private).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(fs::read_dir(&private).unwrap().count(), 0);
        let _file = dir.temp_file().unwrap();
        assert_eq!(fs::read_dir(&private).unwrap().count(), 0, "unlinked");
    }
}
