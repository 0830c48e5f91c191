//! `backupd verify FILE`.

use std::path::Path;

use crate::cli::{DirArgs, EncryptionArgs};
use crate::config::{Paths, load_keys};
use crate::crypto::keys::KEY_FILE_NAME;
use crate::error::Result;
use crate::verify::{self, ChecksumCheck, ManifestCheck};

pub async fn run(file: &Path, dir: &DirArgs, encryption: &EncryptionArgs) -> Result<()> {
    // The file's own folder may hold its key, as BACKUP_DIR does.
    let own_folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let paths = Paths::from_args(dir)?;
    let keys =
        load_keys(encryption, &paths)?.with_decrypt_only_file(own_folder.join(KEY_FILE_NAME))?;
    let ring = keys.for_decryption();
    let report = verify::verify(
        file,
        ring.as_ref().map(Option::as_ref).map_err(Clone::clone),
        Some(&paths.backup_dir),
    )
    .await?;
    let checksum = match report.checksum {
        ChecksumCheck::Matched => "checksum matches its .sha256",
        ChecksumCheck::NoSidecar => "no .sha256 sidecar to compare",
    };
    let encrypted = if report.encrypted {
        ", Fernet token authenticated"
    } else {
        ""
    };
    let manifest = match &report.manifest {
        ManifestCheck::Matched { path, tables } => format!(
            "row counts of {tables} table{} match {}",
            if *tables == 1 { "" } else { "s" },
            path.display()
        ),
        ManifestCheck::NotCounted { path } => format!(
            "size matches {} (rows not counted in this format)",
            path.display()
        ),
        ManifestCheck::Missing { note } => note.clone(),
    };
    println!(
        "{}: OK ({}{encrypted}, {} bytes on disk, {} bytes of data, {checksum}, {manifest})",
        file.display(),
        report.kind,
        report.compressed_bytes,
        report.raw_bytes
    );
    Ok(())
}
