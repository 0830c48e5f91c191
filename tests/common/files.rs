//! Paths, temporary folders and file contents (listing, hashing, gzip).
//! Self-contained: `examples/s3_test_server.rs` includes it by path.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures_dir() -> PathBuf {
    manifest_dir().join("migrations-fixtures")
}

/// A fresh temporary directory (removed on drop).
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("backupd-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A fresh temporary directory and its (not yet created) `backups/` folder.
pub fn temp_backup_dir() -> (TempDir, PathBuf) {
    let work = temp_dir();
    let dir = work.path().join("backups");
    (work, dir)
}

/// The final component of `path` as a `String`.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Names of the entries of `dir` (not recursive), sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    names.sort();
    names
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// gzip-compresses `data` into `path` (flate2, one ordinary gzip member).
pub fn write_gzip(path: &Path, data: &[u8]) {
    let file = fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap().sync_all().unwrap();
}

/// `gunzip -c FILE > OUT` with the real gzip tool.
pub fn gunzip_to(path: &Path, out: &Path) {
    let target = fs::File::create(out).unwrap();
    let status = Command::new("gunzip")
        .arg("-c")
        .arg(path)
        .stdout(target)
        .status()
        .expect("run gunzip");
    assert!(status.success(), "gunzip -c {} failed", path.display());
}

/// The decompressed bytes of a gzip file.
pub fn gunzip_bytes(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}
