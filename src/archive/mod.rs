//! The byte pipeline of a backup: source bytes → gzip → (Fernet) → file on
//! disk, with a SHA-256 of what lands on disk, under a temporary name until
//! it is complete.
//!
//! A backup appears under its final name only after the data is compressed,
//! fsynced, renamed and the directory entry fsynced; dropping an unfinished
//! [`BackupFile`] removes its partial file.

pub mod pgzip;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::crypto::fernet::{FernetWriter, Key};
use crate::error::{Error, Result};
use crate::manifest::{DatabaseInfo, Digest as ManifestDigest, Manifest, manifest_path};
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
    /// `NAME.manifest.json`, when the source could describe the data.
    pub manifest: Option<PathBuf>,
}

/// Counts and hashes everything written through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The writer below, and the size and SHA-256 of what went through.
    fn into_parts(self) -> (W, u64, String) {
        (
            self.inner,
            self.written,
            hex::encode(self.hasher.finalize()),
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The file on disk, hashed as it is written.
type HashingFile = Hashing<BufWriter<File>>;

/// What the compressor writes to: the file, or a Fernet token in the file
/// (with the gzip stream hashed on its way in, for the manifest).
enum Sink {
    Plain(HashingFile),
    Encrypted(Box<Hashing<FernetWriter<HashingFile>>>),
}

impl Sink {
    /// Ends the token, if any, and hands back the file and, for an
    /// encrypted backup, the size and SHA-256 of the gzip stream inside.
    fn finish(self) -> io::Result<(HashingFile, Option<(u64, String)>)> {
        match self {
            Sink::Plain(file) => Ok((file, None)),
            Sink::Encrypted(writer) => {
                let (writer, size, sha256) = writer.into_parts();
                let (file, _) = writer.finish()?;
                Ok((file, Some((size, sha256))))
            }
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
        let file = Hashing::new(BufWriter::with_capacity(1 << 20, file));
        let sink = match key {
            None => Sink::Plain(file),
            Some(key) => Sink::Encrypted(Box::new(Hashing::new(
                FernetWriter::new(key, file)
                    .map_err(|source| Error::io("start the encryption of", &partial, source))?,
            ))),
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
    /// name, after writing the `NAME.sha256` sidecar and, given what the
    /// source knows of the data, the `NAME.manifest.json` the same way:
    /// a backup under its final name always has both.
    pub fn commit(mut self, contents: Option<Contents>) -> Result<Committed> {
        let gzip = self.gzip.take().expect("commit runs once");
        let partial = self.partial.clone();
        let (file, inner_gzip) = gzip
            .finish()
            .map_err(|source| Error::io("compress", &partial, source))?
            .finish()
            .map_err(|source| Error::io("encrypt", &partial, source))?;
        let (file, written, sha256) = file.into_parts();
        let file = file
            .into_inner()
            .map_err(|e| Error::io("write", &partial, e.into_error()))?;
        file.sync_all()
            .map_err(|source| Error::io("fsync", &partial, source))?;
        drop(file);
        let name = file_name(&self.final_path);
        let sidecar = sidecar_path(&self.final_path);
        write_atomically(&sidecar, format!("{sha256}  {name}\n").as_bytes())?;
        let manifest = match contents {
            Some(contents) => {
                let manifest = Manifest {
                    format_version: crate::manifest::FORMAT_VERSION,
                    backup: name.clone(),
                    database: contents.database,
                    server_version: contents.server_version,
                    pg_dump_version: contents.pg_dump_version,
                    started_at: rfc3339(contents.started_at),
                    finished_at: rfc3339(contents.finished_at),
                    file: ManifestDigest {
                        size: written,
                        sha256: sha256.clone(),
                    },
                    gzip: inner_gzip.map(|(size, sha256)| ManifestDigest { size, sha256 }),
                    uncompressed_bytes: self.raw_bytes,
                    tables: contents.tables,
                };
                let path = manifest_path(&self.final_path);
                write_atomically(&path, &manifest.to_json())?;
                Some(path)
            }
            None => None,
        };
        fs::rename(&partial, &self.final_path).map_err(|source| {
            Error::io("rename the finished backup to", &self.final_path, source)
        })?;
        sync_dir(self.final_path.parent().unwrap_or(Path::new(".")))?;
        Ok(Committed {
            path: self.final_path.clone(),
            size: written,
            raw_bytes: self.raw_bytes,
            sha256,
            manifest,
        })
    }
}

/// What the source knows of the data it streamed into a [`BackupFile`],
/// for its manifest (the file's own digests are added at the commit).
#[derive(Debug, Clone)]
pub struct Contents {
    pub database: DatabaseInfo,
    pub server_version: Option<String>,
    pub pg_dump_version: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tables: BTreeMap<String, u64>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
        let done = file.commit(None).unwrap();
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
        let done = file.commit(None).unwrap();
        assert_eq!(done.size, fs::metadata(&done.path).unwrap().len());
        let mut gzip = Vec::new();
        decrypt_file(&KeyRing::from(key), &done.path, &mut gzip).unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == data);
    }

    fn contents(tables: &[(&str, u64)]) -> Contents {
        use chrono::TimeZone;
        Contents {
            database: DatabaseInfo {
                kind: "postgresql".into(),
                name: "app".into(),
            },
            server_version: Some("18.1".into()),
            pg_dump_version: Some("18.1".into()),
            started_at: Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 5).unwrap(),
            tables: tables.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn a_committed_backup_has_a_manifest_describing_the_file_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let name = "pg_dump-20261201T030000Z.sql.gz";
        let mut file = BackupFile::create(dir.path(), name, 6, None).unwrap();
        file.write_all(b"COPY public.t (id) FROM stdin;\n1\n\\.\n")
            .unwrap();
        let done = file.commit(Some(contents(&[("public.t", 1)]))).unwrap();
        let at = done.manifest.clone().unwrap();
        assert_eq!(at, manifest_path(&done.path));
        let manifest = Manifest::read(&at).unwrap().unwrap();
        assert_eq!(manifest.backup, name);
        assert_eq!(manifest.file.sha256, done.sha256);
        assert_eq!(manifest.file.size, done.size);
        assert_eq!(manifest.gzip, None, "the file is the gzip stream");
        assert_eq!(manifest.uncompressed_bytes, done.raw_bytes);
        assert_eq!(manifest.started_at, "2026-12-01T03:00:00Z");
        assert_eq!(manifest.tables.get("public.t"), Some(&1));
        assert!(manifest.describes(&done.sha256));
    }

    #[test]
    fn an_encrypted_backups_manifest_also_describes_the_gzip_inside() {
        use crate::crypto::fernet::{KeyRing, decrypt_file};
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate();
        let name = "pg_dump-20261201T030000Z.sql.gz.enc";
        let mut file = BackupFile::create(dir.path(), name, 6, Some(&key)).unwrap();
        file.write_all(&vec![b'x'; 200_000]).unwrap();
        let done = file.commit(Some(contents(&[]))).unwrap();
        let manifest = Manifest::read(&done.manifest.unwrap()).unwrap().unwrap();
        let mut gzip = Vec::new();
        decrypt_file(&KeyRing::from(key), &done.path, &mut gzip).unwrap();
        let inner = manifest.gzip.clone().expect("the gzip inside is described");
        assert_eq!(inner.size, gzip.len() as u64);
        assert_eq!(inner.sha256, hex::encode(Sha256::digest(&gzip)));
        assert_eq!(manifest.file.sha256, done.sha256);
        assert!(
            manifest.describes(&inner.sha256),
            "the app's decrypted copy finds it"
        );
    }

    #[test]
    fn without_contents_there_is_no_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut file =
            BackupFile::create(dir.path(), "sqlite-20261201T030000Z.db.gz", 6, None).unwrap();
        file.write_all(b"x").unwrap();
        let done = file.commit(None).unwrap();
        assert_eq!(done.manifest, None);
        assert!(!manifest_path(&done.path).exists());
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
