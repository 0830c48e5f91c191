//! The byte pipeline of a backup: source bytes → gzip → (Fernet) → file on
//! disk, with a SHA-256 of what lands on disk, under a temporary name until
//! it is complete.
//!
//! A backup appears under its final name only after the data is compressed,
//! fsynced, renamed and the directory entry fsynced; dropping an unfinished
//! [`BackupFile`] removes its partial file.

pub mod pgzip;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::crypto::fernet::{FernetWriter, Key};
use crate::error::{Error, Result};
use pgzip::ParallelGzip;

/// Suffix of the temporary name a backup is written under (`.NAME.partial`).
pub const PARTIAL_SUFFIX: &str = ".partial";

/// A finished, durable backup file.
#[derive(Debug, Clone)]
pub struct Committed {
    pub path: PathBuf,
    /// Size of the compressed file on disk.
    pub size: u64,
    /// Bytes fed into the compressor.
    pub raw_bytes: u64,
    pub sha256: String,
}

/// Counts and hashes everything written to the file below it.
struct HashingFile {
    file: BufWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What the compressor writes to: the file, or a Fernet token in the file.
enum Sink {
    Plain(HashingFile),
    Encrypted(Box<FernetWriter<HashingFile>>),
}

impl Sink {
    /// Ends the token, if any, and hands back the file.
    fn finish(self) -> io::Result<HashingFile> {
        match self {
            Sink::Plain(file) => Ok(file),
            Sink::Encrypted(writer) => writer.finish().map(|(file, _)| file),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(file) => file.write(buf),
            Sink::Encrypted(writer) => writer.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(file) => file.write_all(buf),
            Sink::Encrypted(writer) => writer.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(file) => file.flush(),
            Sink::Encrypted(writer) => writer.flush(),
        }
    }
}

/// A backup being written: compressed (and encrypted) on the fly into
/// `.NAME.partial`.
pub struct BackupFile {
    partial: PathBuf,
    final_path: PathBuf,
    gzip: Option<ParallelGzip<Sink>>,
    raw_bytes: u64,
    /// The last bytes of the uncompressed stream, for trailer checks.
    tail: Tail,
}

impl BackupFile {
    /// Starts `dir/.NAME.partial`, private (see [`crate::files`]). The name
    /// must be free (see `store::local`); a link planted there is refused,
    /// never written through. With `key`, the gzip stream is the plaintext of one Fernet token (the
    /// name should then end in `.enc`).
    pub fn create(dir: &Path, name: &str, level: u32, key: Option<&Key>) -> Result<Self> {
        let final_path = dir.join(name);
        let partial = partial_path(dir, name);
        let file = crate::files::create_new(&partial)
            .map_err(|source| Error::io("create the backup file", &partial, source))?;
        let file = HashingFile {
            file: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        };
        let sink = match key {
            None => Sink::Plain(file),
            Some(key) => Sink::Encrypted(Box::new(
                FernetWriter::new(key, file)
                    .map_err(|source| Error::io("start the encryption of", &partial, source))?,
            )),
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let gzip = ParallelGzip::new(sink, level, threads)
            .map_err(|source| Error::io("start the compressor for", &partial, source))?;
        Ok(Self {
            partial,
            final_path,
            gzip: Some(gzip),
            raw_bytes: 0,
            tail: Tail::default(),
        })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// The last few KiB of the uncompressed data written so far.
    pub fn tail(&self) -> &[u8] {
        self.tail.as_slice()
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let gzip = self.gzip.as_mut().expect("write after commit");
        gzip.write_all(data)
            .map_err(|source| Error::io("write", &self.partial, source))?;
        self.raw_bytes += data.len() as u64;
        self.tail.push(data);
        Ok(())
    }

    /// Finishes the gzip stream, makes it durable and moves it to its final
    /// name, then writes the `NAME.sha256` sidecar the same way.
    pub fn commit(mut self) -> Result<Committed> {
        let gzip = self.gzip.take().expect("commit runs once");
        let partial = self.partial.clone();
        let sink = gzip
            .finish()
            .map_err(|source| Error::io("compress", &partial, source))?
            .finish()
            .map_err(|source| Error::io("encrypt", &partial, source))?;
        let HashingFile {
            file,
            hasher,
            written,
        } = sink;
        let file = file
            .into_inner()
            .map_err(|e| Error::io("write", &partial, e.into_error()))?;
        file.sync_all()
            .map_err(|source| Error::io("fsync", &partial, source))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let name = file_name(&self.final_path);
        // The sidecar goes first: a backup under its final name always has one.
        let sidecar = sidecar_path(&self.final_path);
        write_atomically(&sidecar, format!("{sha256}  {name}\n").as_bytes())?;
        fs::rename(&partial, &self.final_path).map_err(|source| {
            Error::io("rename the finished backup to", &self.final_path, source)
        })?;
        sync_dir(self.final_path.parent().unwrap_or(Path::new(".")))?;
        Ok(Committed {
            path: self.final_path.clone(),
            size: written,
            raw_bytes: self.raw_bytes,
            sha256,
        })
    }
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        if let Some(gzip) = self.gzip.take() {
            drop(gzip);
            if let Err(e) = fs::remove_file(&self.partial)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(file = %self.partial.display(), error = %e, "could not remove an unfinished backup file");
            }
        }
    }
}

/// `dir/.NAME.partial`
pub fn partial_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}{PARTIAL_SUFFIX}"))
}

/// `NAME.sha256` beside the backup.
pub fn sidecar_path(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes `contents` to `path` through a random-named private sibling
/// ([`crate::files::temp_in`]), fsync and rename, so readers see the old
/// file or the new one, never half of one. A link planted at `path` is
/// replaced, never written through.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let result = (|| {
        let mut tmp = crate::files::temp_in(dir)?;
        tmp.write_all(contents)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    result.map_err(|source| Error::io("write", path, source))?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::io("fsync the directory", dir, source))
}

/// Keeps the last `TAIL_LEN` bytes of a stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

const TAIL_LEN: usize = 4096;

impl Tail {
    fn push(&mut self, data: &[u8]) {
        if data.len() >= TAIL_LEN {
            self.bytes.clear();
            self.bytes.extend_from_slice(&data[data.len() - TAIL_LEN..]);
        } else {
            self.bytes.extend_from_slice(data);
            if self.bytes.len() > TAIL_LEN {
                let excess = self.bytes.len() - TAIL_LEN;
                self.bytes.drain(..excess);
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}

/// Something that ends a plain-format dump written by pg_dump. Newer pg_dump
/// versions follow it with `\unrestrict KEY`, so only the tail is searched.
pub const PG_DUMP_TRAILER: &[u8] = b"-- PostgreSQL database dump complete";

pub fn has_pg_dump_trailer(tail: &[u8]) -> bool {
    tail.windows(PG_DUMP_TRAILER.len())
        .any(|w| w == PG_DUMP_TRAILER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_committed_backup_has_its_final_name_and_sidecar_and_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let mut file =
            BackupFile::create(dir.path(), "sqlite-20260101T000000Z.db.gz", 6, None).unwrap();
        file.write_all(b"hello").unwrap();
        assert!(partial_path(dir.path(), "sqlite-20260101T000000Z.db.gz").exists());
        let done = file.commit().unwrap();
        assert!(done.path.exists());
        assert!(!partial_path(dir.path(), "sqlite-20260101T000000Z.db.gz").exists());
        let sidecar = fs::read_to_string(sidecar_path(&done.path)).unwrap();
        assert_eq!(
            sidecar,
            format!("{}  sqlite-20260101T000000Z.db.gz\n", done.sha256)
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&done.path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        assert_eq!(done.size, fs::metadata(&done.path).unwrap().len());
    }

    #[test]
    fn an_encrypted_backup_is_one_token_of_the_gzip_file() {
        use crate::crypto::fernet::{KeyRing, decrypt_file};
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate();
        let name = "pg_dump-20260101T000000Z.sql.gz.enc";
        let mut file = BackupFile::create(dir.path(), name, 6, Some(&key)).unwrap();
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        file.write_all(&data).unwrap();
        let done = file.commit().unwrap();
        assert_eq!(done.size, fs::metadata(&done.path).unwrap().len());
        let mut gzip = Vec::new();
        decrypt_file(&KeyRing::from(key), &done.path, &mut gzip).unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == data);
    }

    #[test]
    fn an_abandoned_backup_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut file =
            BackupFile::create(dir.path(), "pg_dump-20260101T000000Z.sql.gz", 6, None).unwrap();
        file.write_all(&vec![b'x'; 1 << 20]).unwrap();
        drop(file);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_across_writes() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; 5000]);
        tail.push(b"-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n");
        assert_eq!(tail.as_slice().len(), TAIL_LEN);
        assert!(has_pg_dump_trailer(tail.as_slice()));
        assert!(!has_pg_dump_trailer(b"-- PostgreSQL database dump\n"));
    }
}
