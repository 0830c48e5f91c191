//! `backupd verify`: is this file a backup we could restore from? Checked
//! without touching any database: the checksum sidecar, the Fernet token of
//! an `.enc` file, the whole gzip stream, and the content (SQLite
//! `integrity_check`, pg_dump's trailer).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::archive::{self, has_pg_dump_trailer};
use crate::crypto::fernet::{DecryptError, KeyRing, decrypt_file};
use crate::db::sqlite::check_integrity;
use crate::error::{Error, Result};

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
/// are none, for the message).
pub fn verify(path: &Path, keys: std::result::Result<Option<&KeyRing>, String>) -> Result<Report> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
    if !meta.is_file() {
        return Err(Error::verify(path, "not a regular file"));
    }
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
    let source = Source {
        path,
        gzipped: false,
        ring,
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
    let source = Source { gzipped, ..source };

    let checksum = check_sidecar(path)?;
    let raw_bytes = match content {
        Content::PlainSql => {
            let mut tail = TailSink::default();
            let n = source.decode_into(&mut tail)?;
            if !has_pg_dump_trailer(&tail.bytes) {
                return Err(Error::verify(
                    path,
                    "the SQL dump does not end with pg_dump's trailer '-- PostgreSQL database dump complete' (incomplete dump)",
                ));
            }
            n
        }
        Content::Sqlite => {
            let (db, _guard, n) = if gzipped || encrypted {
                let scratch = Scratch::beside(path)?;
                let mut out = io::BufWriter::new(
                    File::create(&scratch.0).map_err(|e| Error::io("create", &scratch.0, e))?,
                );
                let n = source.decode_into(&mut out)?;
                out.flush().map_err(|e| Error::io("write", &scratch.0, e))?;
                (scratch.0.clone(), Some(scratch), n)
            } else {
                (path.to_path_buf(), None, meta.len())
            };
            check_integrity(&db, "integrity_check").map_err(|reason| {
                Error::verify(path, format!("SQLite integrity_check failed: {reason}"))
            })?;
            n
        }
    };
    Ok(Report {
        kind: match content {
            Content::PlainSql => "PostgreSQL plain SQL dump",
            Content::Sqlite => "SQLite database",
        },
        compressed_bytes: meta.len(),
        raw_bytes,
        checksum,
        encrypted,
    })
}

/// Compares the file with `FILE.sha256` (sha256sum format) when there is one.
pub fn check_sidecar(path: &Path) -> Result<ChecksumCheck> {
    let sidecar = archive::sidecar_path(path);
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ChecksumCheck::NoSidecar),
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
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(Error::verify(
            path,
            format!(
                "the SHA-256 checksum does not match {} (the file was altered or damaged)",
                sidecar.display()
            ),
        ));
    }
    Ok(ChecksumCheck::Matched)
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
    let file = BufReader::new(File::open(path).map_err(|e| Error::io("open", path, e))?);
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    io::copy(&mut reader, out).map_err(|e| Error::verify(path, gzip_reason(&e)))
}

/// A backup file and the layers around its content.
struct Source<'a> {
    path: &'a Path,
    gzipped: bool,
    /// Set when the file is a Fernet token.
    ring: Option<&'a KeyRing>,
}

impl Source<'_> {
    /// Streams the content into `out`; returns its length. An encrypted
    /// file is authenticated completely before a byte is decrypted; the
    /// decryption then runs on its own thread, feeding the decompressor
    /// through a pipe, so both stay streaming.
    fn decode_into(&self, out: &mut impl Write) -> Result<u64> {
        let Some(ring) = self.ring else {
            return decompress_into(self.path, self.gzipped, out);
        };
        let (reader, writer) =
            io::pipe().map_err(|e| Error::io("create a pipe to decrypt", self.path, e))?;
        let (ring, path) = (ring.clone(), self.path.to_path_buf());
        let decrypting = std::thread::spawn(move || {
            decrypt_file(&ring, &path, io::BufWriter::with_capacity(1 << 16, writer))
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
            (Ok(_), Ok(n)) => Ok(n),
        }
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

/// A decompressed copy for `integrity_check`, removed when dropped. It goes
/// beside the backup (same filesystem, usually roomy) or, if that folder is
/// read-only, into the temporary directory.
struct Scratch(PathBuf);

impl Scratch {
    fn beside(path: &Path) -> Result<Self> {
        let name = format!(
            ".{}.verify-{}",
            archive::file_name(path),
            std::process::id()
        );
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let candidate = dir.join(&name);
        if File::create(&candidate).is_ok() {
            return Ok(Scratch(candidate));
        }
        Ok(Scratch(std::env::temp_dir().join(name)))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
