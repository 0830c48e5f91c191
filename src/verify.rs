//! `backupd verify`: is this file a backup we could restore from? Checked
//! without touching any database: the checksum sidecar, the Fernet token of
//! an `.enc` file, the whole gzip stream, and the content (SQLite
//! `integrity_check`, pg_dump's trailer).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::archive::{self, has_pg_dump_trailer};
use crate::crypto::fernet::{DecryptError, KeyRing, decrypt_from};
use crate::db::sqlite::check_integrity;
use crate::error::{Error, Result};
use crate::restore::input::{self, FirstPassHash, HashingReader};

/// What a sound backup turned out to be.
#[derive(Debug)]
pub struct Report {
    pub kind: &'static str,
    pub compressed_bytes: u64,
    pub raw_bytes: u64,
    pub checksum: ChecksumCheck,
    /// A Fernet token whose tag verified.
    pub encrypted: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ChecksumCheck {
    Matched,
    NoSidecar,
}

enum Content {
    PlainSql,
    Sqlite,
}

/// Verifies `path`; `keys` decrypt an `.enc` file (`Err` holds why there
/// are none, for the message). The file is opened once (no symlink, no
/// FIFO) and every pass reads that descriptor, as a restore does.
pub fn verify(path: &Path, keys: std::result::Result<Option<&KeyRing>, String>) -> Result<Report> {
    let file = input::open(path).map_err(|reason| Error::verify(path, reason))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("inspect", path, e))?
        .len();
    let full_name = archive::file_name(path);
    let (name, encrypted) = match full_name.strip_suffix(".enc") {
        Some(rest) => (rest.to_string(), true),
        None => (full_name.clone(), false),
    };
    let ring = match (encrypted, keys) {
        (false, _) => None,
        (true, Ok(Some(ring))) => Some(ring),
        (true, Ok(None)) => {
            return Err(Error::verify(
                path,
                "it is encrypted (.enc) but no encryption key is configured (BACKUP_ENCRYPTION_KEY or .encryption_key)",
            ));
        }
        (true, Err(reason)) => return Err(Error::verify(path, reason)),
    };
    let (content, gzipped) = if name.ends_with(".sql.gz") {
        (Content::PlainSql, true)
    } else if name.ends_with(".db.gz") {
        (Content::Sqlite, true)
    } else if name.ends_with(".sql") {
        (Content::PlainSql, false)
    } else if name.ends_with(".db") {
        (Content::Sqlite, false)
    } else {
        return Err(Error::verify(
            path,
            "unrecognised file name: expected .sql.gz, .db.gz, .sql or .db (each optionally .enc)",
        ));
    };
    let source = Source {
        path,
        file: &file,
        gzipped,
        ring,
    };
    let expected = read_sidecar(path)?;

    // A checksum mismatch explains a damaged stream better than the stream
    // does, so it is reported first.
    let decoded = match content {
        Content::PlainSql => {
            let mut tail = TailSink::default();
            source.decode_into(&mut tail).map(|(n, sha)| {
                let complete = has_pg_dump_trailer(&tail.bytes);
                (n, sha, complete, None)
            })
        }
        Content::Sqlite => {
            // Always a private copy: SQLite opens files by path, and the
            // temporary folder (sticky, our file 0600 with a random name) is
            // one nobody else can swap a file in.
            let scratch = tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("create a scratch copy in", &std::env::temp_dir(), e))?;
            let mut out = io::BufWriter::new(scratch.as_file());
            let decoded = source.decode_into(&mut out);
            out.flush()
                .map_err(|e| Error::io("write", scratch.path(), e))?;
            drop(out);
            decoded.map(|(n, sha)| (n, sha, true, Some(scratch)))
        }
    };
    let checksum = match (&expected, &decoded) {
        (None, _) => ChecksumCheck::NoSidecar,
        (Some(_), Err(_)) => ChecksumCheck::NoSidecar,
        (Some(expected), Ok((_, actual, _, _))) if actual == expected => ChecksumCheck::Matched,
        (Some(_), Ok(_)) => {
            return Err(Error::verify(
                path,
                format!(
                    "the SHA-256 checksum does not match {} (the file was altered or damaged)",
                    archive::sidecar_path(path).display()
                ),
            ));
        }
    };
    if let (Some(expected), Err(_)) = (&expected, &decoded) {
        // Hash the whole file to tell damage the sidecar knows about.
        let (_, actual) = HashingReader::new(&file)
            .finish_to_end()
            .map_err(|e| Error::io("read", path, e))?;
        if actual != *expected {
            return Err(Error::verify(
                path,
                format!(
                    "the SHA-256 checksum does not match {} (the file was altered or damaged)",
                    archive::sidecar_path(path).display()
                ),
            ));
        }
    }
    let (raw_bytes, _, complete, scratch) = decoded?;
    if !complete {
        return Err(Error::verify(
            path,
            "the SQL dump does not end with pg_dump's trailer '-- PostgreSQL database dump complete' (incomplete dump)",
        ));
    }
    if let Some(scratch) = &scratch {
        check_integrity(scratch.path(), "integrity_check").map_err(|reason| {
            Error::verify(path, format!("SQLite integrity_check failed: {reason}"))
        })?;
    }
    Ok(Report {
        kind: match content {
            Content::PlainSql => "PostgreSQL plain SQL dump",
            Content::Sqlite => "SQLite database",
        },
        compressed_bytes: size,
        raw_bytes,
        checksum,
        encrypted,
    })
}

/// The hex digest in `FILE.sha256` (sha256sum format), `None` without one.
fn read_sidecar(path: &Path) -> Result<Option<String>> {
    let sidecar = archive::sidecar_path(path);
    let text = match read_small_regular(&sidecar) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &sidecar, e)),
    };
    let expected = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::verify(
            path,
            format!("{} does not hold a SHA-256 checksum", sidecar.display()),
        ));
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
    let Some(expected) = read_sidecar(path).or_else(|e| match e {
        Error::Verify { .. } => Ok(None),
        other => Err(other),
    })?
    else {
        return Ok(false);
    };
    let file = match input::open(path) {
        Ok(file) => file,
        Err(_) => return Ok(false),
    };
    let (_, actual) = HashingReader::new(&file)
        .finish_to_end()
        .map_err(|e| Error::io("read", path, e))?;
    Ok(actual == expected)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Streams the (optionally gzipped) file into `out`; returns the raw length.
pub fn decompress_into(path: &Path, gzipped: bool, out: &mut impl Write) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    decompress_from(file, gzipped, out, path)
}

/// Streams `reader` (gunzipped when `gzipped`) into `out`; returns the raw
/// length. Errors name `path`.
pub fn decompress_from(
    reader: impl Read,
    gzipped: bool,
    out: &mut impl Write,
    path: &Path,
) -> Result<u64> {
    let reader = BufReader::with_capacity(1 << 16, reader);
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    io::copy(&mut reader, out).map_err(|e| Error::verify(path, gzip_reason(&e)))
}

/// A backup file and the layers around its content.
struct Source<'a> {
    path: &'a Path,
    file: &'a File,
    gzipped: bool,
    /// Set when the file is a Fernet token.
    ring: Option<&'a KeyRing>,
}

impl Source<'_> {
    /// Streams the content into `out`; returns its length and the SHA-256
    /// of the file's bytes that were read. An encrypted file is
    /// authenticated completely before a byte is decrypted; the decryption
    /// then runs on its own thread, feeding the decompressor through a
    /// pipe, so both stay streaming.
    fn decode_into(&self, out: &mut impl Write) -> Result<(u64, String)> {
        let Some(ring) = self.ring else {
            let mut reader = HashingReader::new(self.file);
            let n = decompress_from(&mut reader, self.gzipped, out, self.path)?;
            let (_, sha) = reader
                .finish_to_end()
                .map_err(|e| Error::io("read", self.path, e))?;
            return Ok((n, sha));
        };
        let (reader, writer) =
            io::pipe().map_err(|e| Error::io("create a pipe to decrypt", self.path, e))?;
        let name = self.path.display().to_string();
        let file = self.file;
        std::thread::scope(|scope| {
            let decrypting = scope.spawn(move || {
                let mut token = FirstPassHash::new(file);
                let decrypted = decrypt_from(
                    ring,
                    &mut token,
                    &name,
                    io::BufWriter::with_capacity(1 << 16, writer),
                );
                decrypted.map(|_| token.first_pass())
            });
            let reader = BufReader::with_capacity(1 << 16, reader);
            let mut content: Box<dyn Read> = if self.gzipped {
                Box::new(MultiGzDecoder::new(reader))
            } else {
                Box::new(reader)
            };
            let copied = io::copy(&mut content, out);
            // A decompressor that stops early closes the pipe: the decryption
            // then fails with a broken pipe, which only the decompressor explains.
            drop(content);
            let decrypted = decrypting
                .join()
                .map_err(|_| Error::Other("the decryption thread panicked".into()))?;
            match (decrypted, copied) {
                (Err(e @ (DecryptError::Rejected { .. } | DecryptError::Read { .. })), _) => {
                    Err(Error::verify(self.path, e.to_string()))
                }
                (_, Err(e)) => Err(Error::verify(self.path, gzip_reason(&e))),
                (Err(e), Ok(_)) => Err(Error::verify(self.path, e.to_string())),
                (Ok(Err(e)), Ok(_)) => Err(Error::io("read", self.path, e)),
                (Ok(Ok((_, sha))), Ok(n)) => Ok((n, sha)),
            }
        })
    }
}

fn gzip_reason(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "the gzip stream ends early (truncated file)".to_string()
    } else {
        format!("the gzip stream is damaged: {e}")
    }
}

#[derive(Default)]
pub struct TailSink {
    pub bytes: Vec<u8>,
}

impl Write for TailSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        const KEEP: usize = 4096;
        self.bytes
            .extend_from_slice(&buf[buf.len().saturating_sub(KEEP)..]);
        if self.bytes.len() > KEEP {
            let excess = self.bytes.len() - KEEP;
            self.bytes.drain(..excess);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
