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
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Why a load stopped: the bytes it read are not the bytes that were checked.
pub const CHANGED_AFTER_CHECK: &str = "the file changed after it was checked";

/// Opens `path` for reading without following a symlink and without
/// blocking on a FIFO, then checks on the descriptor that it is a regular,
/// non-empty file. `Err` is the one-line reason.
pub fn open(path: &Path) -> Result<File, String> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => {
                "refused: it is a symlink (backupd never follows links in a restore input)"
                    .to_string()
            }
            _ => format!("cannot open the file: {e}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the file's metadata: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "refused: not a regular file (it is a {})",
            describe(&meta)
        ));
    }
    if meta.len() == 0 {
        return Err("the file is empty (0 bytes)".into());
    }
    Ok(file)
}

fn describe(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
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
    pub fn open(path: &Path) -> Result<Input, String> {
        let file = Arc::new(open(path)?);
        HashingReader::new(&file)
            .into_input(file.clone(), path.display().to_string())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// A reader from the start of the descriptor that hashes what it reads.
    pub fn reader(&self) -> HashingReader<'_> {
        HashingReader::new(&self.file)
    }

    /// Reads the rest of `reader` and compares everything it read with what
    /// was checked. `Err` carries [`CHANGED_AFTER_CHECK`].
    pub fn confirm(&self, mut reader: HashingReader<'_>) -> io::Result<()> {
        io::copy(&mut reader, &mut io::sink())?;
        let (len, sha256) = reader.finish();
        if len != self.len || sha256 != self.sha256 {
            return Err(io::Error::other(format!(
                "{CHANGED_AFTER_CHECK} ({} bytes with SHA-256 {sha256} now, {} bytes with SHA-256 {} when checked); nothing of it was committed",
                len, self.len, self.sha256
            )));
        }
        Ok(())
    }
}

/// Reads a file from offset 0 with positional reads (so no other reader of
/// the descriptor moves it), hashing and counting every byte.
pub struct HashingReader<'a> {
    file: &'a File,
    pos: u64,
    hasher: Sha256,
}

impl<'a> HashingReader<'a> {
    pub fn new(file: &'a File) -> Self {
        HashingReader {
            file,
            pos: 0,
            hasher: Sha256::new(),
        }
    }

    /// Reads to the end of the file, then returns the length and hex SHA-256
    /// of everything read.
    pub fn finish_to_end(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.finish())
    }

    fn finish(self) -> (u64, String) {
        (self.pos, hex::encode(self.hasher.finalize()))
    }

    /// The checked input of everything this reader read (call after
    /// [`HashingReader::finish_to_end`]'s equivalent: the reader must be at
    /// the end).
    pub fn into_input(self, file: Arc<File>, name: String) -> io::Result<Input> {
        let (len, sha256) = self.finish_to_end()?;
        Ok(Input {
            file,
            name,
            len,
            sha256,
        })
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.file.read_at(buf, self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
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
    pub fn new(source: &'a File, copy_into: Option<&PrivateDir>) -> Result<Self, String> {
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
        let (len, sha256) = reader.finish_to_end()?;
        let file = match copy {
            Some(copy) => Arc::new(copy.into_inner().map_err(|e| e.into_error())?),
            None => source,
        };
        Ok(Input {
            file,
            name,
            len,
            sha256,
        })
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

/// A positional reader for two-pass readers (Fernet authenticates, seeks
/// back and decrypts): the first pass is hashed to the end of the file, so
/// the digest names exactly the bytes that were authenticated.
pub struct FirstPassHash<'a> {
    file: &'a File,
    pos: u64,
    hasher: Option<Sha256>,
    first: Option<(u64, String)>,
}

impl<'a> FirstPassHash<'a> {
    pub fn new(file: &'a File) -> Self {
        FirstPassHash {
            file,
            pos: 0,
            hasher: Some(Sha256::new()),
            first: None,
        }
    }

    fn end_first_pass(&mut self) -> io::Result<()> {
        if self.hasher.is_some() {
            io::copy(self, &mut io::sink())?;
            let hasher = self.hasher.take().expect("checked above");
            self.first = Some((self.pos, hex::encode(hasher.finalize())));
        }
        Ok(())
    }

    /// Length and hex SHA-256 of the whole first pass.
    pub fn first_pass(mut self) -> io::Result<(u64, String)> {
        self.end_first_pass()?;
        Ok(self.first.take().expect("the first pass has ended"))
    }
}

impl Read for FirstPassHash<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.file.read_at(buf, self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FirstPassHash<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.end_first_pass()?;
        let len = self.first.as_ref().map_or(0, |(len, _)| *len);
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(bad_seek)?,
            SeekFrom::End(d) => len.checked_add_signed(d).ok_or_else(bad_seek)?,
        };
        Ok(self.pos)
    }
}

fn bad_seek() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")
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
    pub fn beside_state_file(state_file: &Path) -> Result<PrivateDir, String> {
        let parent = state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::at(parent.join("private"))
    }

    pub fn at(path: PathBuf) -> Result<PrivateDir, String> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create the folder {}: {e}", parent.display()))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create the private folder {shown}: {e}")),
        }
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| format!("cannot inspect the private folder {shown}: {e}"))?;
        if !meta.file_type().is_dir() {
            return Err(format!(
                "the private folder {shown} is not a directory (a symlink?); remove it"
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if meta.uid() != uid {
            return Err(format!(
                "the private folder {shown} belongs to uid {}, not to backupd (uid {uid}); remove it",
                meta.uid()
            ));
        }
        if meta.mode() & 0o777 != 0o700 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make {shown} private (0700): {e}"))?;
        }
        let dir = PrivateDir { path };
        dir.remove_leftovers();
        Ok(dir)
    }

    /// A new temporary file in the folder, readable only by us and already
    /// unlinked (O_TMPFILE, or a random O_EXCL name removed at once).
    pub fn temp_file(&self) -> Result<File, String> {
        tempfile::tempfile_in(&self.path).map_err(|e| {
            format!(
                "cannot create a temporary file in {}: {e}",
                self.path.display()
            )
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
        let input = HashingReader::new(&file)
            .into_input(file.clone(), "x.sql".into())
            .unwrap();
        assert!(input.confirm(input.reader()).is_ok());
        fs::write(&path, b"changed content\n").unwrap();
        let err = input.confirm(input.reader()).unwrap_err().to_string();
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
    fn links_fifos_and_empty_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sql");
        fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link.sql");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(open(&link).unwrap_err().contains("symlink"));
        let fifo = dir.path().join("pipe.sql");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open(&fifo).unwrap_err().contains("fifo"));
        let empty = dir.path().join("empty.sql");
        fs::write(&empty, b"").unwrap();
        assert!(open(&empty).unwrap_err().contains("empty"));
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
