//! `backupd verify`: is this file a backup we could restore from? Checked
//! without touching any database: the checksum sidecar, the whole gzip
//! stream, and the content (SQLite `integrity_check`, pg_dump's trailer).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::archive::{self, has_pg_dump_trailer};
use crate::db::sqlite::check_integrity;
use crate::error::{Error, Result};

/// What a sound backup turned out to be.
#[derive(Debug)]
pub struct Report {
    pub kind: &'static str,
    pub compressed_bytes: u64,
    pub raw_bytes: u64,
    pub checksum: ChecksumCheck,
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

pub fn verify(path: &Path) -> Result<Report> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
    if !meta.is_file() {
        return Err(Error::verify(path, "not a regular file"));
    }
    let name = archive::file_name(path);
    if name.ends_with(".enc") {
        return Err(Error::verify(
            path,
            "encrypted backups (.enc) cannot be verified by this version of backupd",
        ));
    }
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
            "unrecognised file name: expected .sql.gz, .db.gz, .sql or .db",
        ));
    };

    let checksum = check_sidecar(path)?;
    let raw_bytes = match content {
        Content::PlainSql => {
            let mut tail = TailSink::default();
            let n = decompress_into(path, gzipped, &mut tail)?;
            if !has_pg_dump_trailer(&tail.bytes) {
                return Err(Error::verify(
                    path,
                    "the SQL dump does not end with pg_dump's trailer '-- PostgreSQL database dump complete' (incomplete dump)",
                ));
            }
            n
        }
        Content::Sqlite => {
            let (db, _guard, n) = if gzipped {
                let scratch = Scratch::beside(path)?;
                let mut out = io::BufWriter::new(
                    File::create(&scratch.0).map_err(|e| Error::io("create", &scratch.0, e))?,
                );
                let n = decompress_into(path, true, &mut out)?;
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
    io::copy(&mut reader, out).map_err(|e| {
        let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
            "the gzip stream ends early (truncated file)".to_string()
        } else {
            format!("the gzip stream is damaged: {e}")
        };
        Error::verify(path, reason)
    })
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
