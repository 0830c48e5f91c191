//! A file under inspection is opened exactly once. Whoever can write the
//! folder it lies in may swap the path or rewrite the file at any moment, so
//! nothing after the open goes through the path again: the descriptor is
//! checked (a regular, non-empty file), every pass reads it with positional
//! reads, and every pass hashes what it read.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Why a file was not opened for inspection. The wording is what the
/// failed folder and `backupd verify` show.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("refused: it is a symlink (backupd never follows links in a restore input)")]
    Symlink,
    #[error("cannot open the file: {0}")]
    Open(#[source] io::Error),
    #[error("cannot read the file's metadata: {0}")]
    Metadata(#[source] io::Error),
    /// Holds what it is instead: `directory`, `fifo`, `socket`, …
    #[error("refused: not a regular file (it is a {0})")]
    NotRegular(&'static str),
    #[error("the file is empty (0 bytes)")]
    Empty,
}

/// Opens `path` for reading without following a symlink and without
/// blocking on a FIFO, then checks on the descriptor that it is a regular,
/// non-empty file.
pub fn open(path: &Path) -> Result<File, OpenError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => OpenError::Symlink,
            _ => OpenError::Open(e),
        })?;
    let meta = file.metadata().map_err(OpenError::Metadata)?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular(describe(&meta)));
    }
    if meta.len() == 0 {
        return Err(OpenError::Empty);
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

    /// The length and hex SHA-256 of what was read so far.
    pub fn finish(self) -> (u64, String) {
        (self.pos, hex::encode(self.hasher.finalize()))
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_at(self.file, buf, self.pos)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
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
        let n = read_at(self.file, buf, self.pos)?;
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

fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn bad_seek() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_empty_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sql");
        fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link.sql");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let refused = open(&link).unwrap_err();
        assert!(matches!(refused, OpenError::Symlink), "{refused:?}");
        assert!(refused.to_string().contains("symlink"));
        let fifo = dir.path().join("pipe.sql");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let refused = open(&fifo).unwrap_err();
        assert!(
            matches!(refused, OpenError::NotRegular("fifo")),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("fifo"));
        let empty = dir.path().join("empty.sql");
        fs::write(&empty, b"").unwrap();
        let refused = open(&empty).unwrap_err();
        assert!(matches!(refused, OpenError::Empty), "{refused:?}");
        assert!(refused.to_string().contains("empty"));
    }
}
